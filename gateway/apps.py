from django.apps import AppConfig


class GatewayConfig(AppConfig):
    name = "gateway"
    verbose_name = "Gateway"

    def ready(self):
        from django.db.models.signals import post_migrate

        from . import roles, schema_extensions  # noqa: F401 - registers OpenAPI auth schemes

        post_migrate.connect(roles.roles_sync_on_migrate, sender=self)
