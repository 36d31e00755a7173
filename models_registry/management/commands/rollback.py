from django.core.management.base import BaseCommand, CommandError

from gateway.models import Predictor
from models_registry.management.acting import acting_person
from models_registry.services import RollbackRefused, model_version_rollback


class Command(BaseCommand):
    help = (
        "Make the previous champion of a predictor current again; the rolled-back champion is rejected, "
        "so running it again goes further back."
    )

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--user", help="the operator's username, recorded in the history as who did it")
        parser.add_argument("--reason", default="", help="why; kept in the versions' history")

    def handle(self, *args, slug, user, reason, **options):
        person = acting_person(user)
        predictor = Predictor.objects.filter(slug=slug).first()
        if predictor is None:
            raise CommandError(f"no predictor named {slug!r}")
        try:
            restored = model_version_rollback(
                predictor=predictor, user=person, reason=reason.strip() or "rolled back with manage.py rollback"
            )
        except RollbackRefused as exc:
            raise CommandError(f"nothing to roll back for {slug}: {exc}") from None
        self.stdout.write(f"{slug} v{restored.version} is the champion again")
