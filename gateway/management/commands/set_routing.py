import argparse

from django.core.management.base import BaseCommand, CommandError

from gateway.models import Predictor, RoutingFallback, RoutingMode
from gateway.services import RoutingInvalid, routing_update


def _number_or_none(text: str):
    """A number, or none/null/off for "not set"."""
    if text.strip().lower() in ("none", "null", "off", ""):
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


def _on_off(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("on", "true", "yes", "1"):
        return True
    if lowered in ("off", "false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError("use on or off")


class Command(BaseCommand):
    help = "Change a predictor's routing flag (audited; the same checks as the API and the admin)."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--mode", choices=RoutingMode.values)
        parser.add_argument("--fallback", choices=RoutingFallback.values)
        parser.add_argument("--sla", type=int, dest="human_sla_seconds", help="human SLA in seconds (0: none)")
        parser.add_argument("--confidence-threshold", type=_number_or_none, default=argparse.SUPPRESS,
                            help="0..1, label outputs only; 'none' to clear")
        parser.add_argument("--canary", type=_number_or_none, dest="canary_percent", default=argparse.SUPPRESS,
                            help="percent of traffic the champion answers in human or rule mode (0-100)")
        parser.add_argument("--shadow", type=_on_off, default=argparse.SUPPRESS, help="on or off")
        parser.add_argument("--qa-sample", type=_number_or_none, dest="qa_sample_percent", default=argparse.SUPPRESS,
                            help="percent of rule and model answers also sent to review (0-100)")
        parser.add_argument("--max-queue-depth", type=_number_or_none, default=argparse.SUPPRESS,
                            help="open human tasks before human traffic overflows to the fallback; 'none' to clear")
        parser.add_argument("--reason", default="set with manage.py set_routing")

    def handle(self, *args, slug, mode, fallback, human_sla_seconds, reason, **options):
        predictor = Predictor.objects.filter(slug=slug).first()
        if predictor is None:
            raise CommandError(f"no predictor named {slug!r}")
        changes = {k: v for k, v in {"mode": mode, "fallback": fallback}.items() if v is not None}
        if human_sla_seconds is not None:
            changes["human_sla_seconds"] = human_sla_seconds or None
        for name in ("confidence_threshold", "canary_percent", "shadow", "qa_sample_percent", "max_queue_depth"):
            if name in options:
                changes[name] = options[name]
        if not changes:
            raise CommandError(
                "nothing to change: give --mode, --fallback, --sla, --confidence-threshold, --canary, --shadow, "
                "--qa-sample or --max-queue-depth"
            )
        try:
            policy = routing_update(predictor=predictor, changes=changes, reason=reason)
        except RoutingInvalid as exc:
            raise CommandError("; ".join(f"{e.field}: {e.message}" for e in exc.errors)) from None
        sla = f"{policy.human_sla_seconds}s" if policy.human_sla_seconds else "none"
        self.stdout.write(
            f"{slug}: mode={policy.mode} fallback={policy.fallback} sla={sla} "
            f"confidence_threshold={policy.confidence_threshold} canary={policy.canary_percent:g}% "
            f"shadow={'on' if policy.shadow else 'off'} qa_sample={policy.qa_sample_percent:g}% "
            f"max_queue_depth={policy.max_queue_depth} (policy v{policy.version})"
        )
