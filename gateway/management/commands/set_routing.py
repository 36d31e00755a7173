from django.core.management.base import BaseCommand, CommandError

from gateway.models import Predictor, RoutingFallback, RoutingMode
from gateway.services import RoutingInvalid, routing_update


class Command(BaseCommand):
    help = "Change a predictor's routing flag (audited)."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--mode", choices=RoutingMode.values)
        parser.add_argument("--fallback", choices=RoutingFallback.values)
        parser.add_argument("--sla", type=int, dest="human_sla_seconds", help="human SLA in seconds (0: none)")
        parser.add_argument("--reason", default="set with manage.py set_routing")

    def handle(self, *args, slug, mode, fallback, human_sla_seconds, reason, **options):
        predictor = Predictor.objects.filter(slug=slug).first()
        if predictor is None:
            raise CommandError(f"no predictor named {slug!r}")
        try:
            changes = {"mode": mode, "fallback": fallback}
            changes = {k: v for k, v in changes.items() if v is not None}
            if human_sla_seconds is not None:
                changes["human_sla_seconds"] = human_sla_seconds or None
            if not changes:
                raise CommandError("nothing to change: give --mode, --fallback or --sla")
            policy = routing_update(predictor=predictor, changes=changes, reason=reason)
        except RoutingInvalid as exc:
            raise CommandError(f"{exc.field}: {exc.message}") from None
        sla = f"{policy.human_sla_seconds}s" if policy.human_sla_seconds else "none"
        self.stdout.write(f"{slug}: mode={policy.mode} fallback={policy.fallback} sla={sla} (policy v{policy.version})")
