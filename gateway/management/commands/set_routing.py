from django.core.management.base import BaseCommand, CommandError

from gateway.models import Predictor, RoutingMode
from gateway.services import RoutingInvalid, routing_update


class Command(BaseCommand):
    help = "Change a predictor's routing flag (audited)."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--mode", choices=RoutingMode.values, required=True)
        parser.add_argument("--reason", default="set with manage.py set_routing")

    def handle(self, *args, slug, mode, reason, **options):
        predictor = Predictor.objects.filter(slug=slug).first()
        if predictor is None:
            raise CommandError(f"no predictor named {slug!r}")
        try:
            policy = routing_update(predictor=predictor, changes={"mode": mode}, reason=reason)
        except RoutingInvalid as exc:
            raise CommandError(f"{exc.field}: {exc.message}") from None
        self.stdout.write(f"{slug}: mode={policy.mode} (policy v{policy.version})")
