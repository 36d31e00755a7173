from django.core.management.base import BaseCommand, CommandError

from models_registry.management.acting import acting_person
from models_registry.models import ModelVersion
from models_registry.services import PromotionRefused, model_version_promote


class Command(BaseCommand):
    help = (
        "Make a model version the champion of its predictor. Refused while a gate has failed or is "
        "pending, unless --force with a written --reason (kept in the history)."
    )

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("version", type=int)
        parser.add_argument("--user", help="the operator's username, recorded in the history as who did it")
        parser.add_argument("--reason", default="", help="why; kept in the version's history (required with --force)")
        parser.add_argument("--force", action="store_true", help="promote past failed or pending gates")

    def handle(self, *args, slug, user, version, reason, force, **options):
        person = acting_person(user)
        target = ModelVersion.objects.filter(predictor__slug=slug, version=version).first()
        if target is None:
            raise CommandError(f"{slug} has no model version {version}")
        reason = reason.strip()
        if force and not reason:
            raise CommandError("--force needs a written --reason")
        for gate in target.gates or []:
            state = {True: "passed", False: "FAILED", None: "pending"}[gate.get("passed")]
            note = " (informational)" if gate.get("informational") else ""
            self.stdout.write(f"  gate {gate.get('gate')}: {state}{note} {gate.get('detail', '')}".rstrip())
        try:
            target = model_version_promote(
                version=target, user=person, reason=reason or "promoted with manage.py promote", force=force
            )
        except PromotionRefused as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"{slug} v{target.version} is now the champion")
