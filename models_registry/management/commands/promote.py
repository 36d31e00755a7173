from django.core.management.base import BaseCommand, CommandError

from models_registry.models import ModelVersion
from models_registry.services import PromotionRefused, model_version_promote


class Command(BaseCommand):
    help = "Make a model version the champion of its predictor."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("version", type=int)
        parser.add_argument("--reason", default="promoted with manage.py promote")

    def handle(self, *args, slug, version, reason, **options):
        target = ModelVersion.objects.filter(predictor__slug=slug, version=version).first()
        if target is None:
            raise CommandError(f"{slug} has no model version {version}")
        try:
            target = model_version_promote(version=target, reason=reason)
        except PromotionRefused as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"{slug} v{target.version} is now the champion")
