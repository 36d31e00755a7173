"""Re-sending work whose Celery message may have been lost (broker down at commit time).

Each kind of deferred work is a database row with a state; this finds rows that should have
been picked up by now and publishes their message again. Tasks are idempotent, so a
duplicate message costs nothing."""
from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from .messaging import task_send
from .models import WebhookDelivery

# Leave freshly written rows to their own on_commit message (settings.OZ_OUTBOX_GRACE_SECONDS).
GRACE = timedelta(seconds=30)


def _grace() -> timedelta:
    seconds = getattr(settings, "OZ_OUTBOX_GRACE_SECONDS", None)
    return GRACE if seconds is None else timedelta(seconds=seconds)


def outbox_resend(*, now=None) -> dict:
    """Publish again the webhook deliveries that are due (for longer than the grace) and the
    training runs still queued after it. Run by beat every OZ_SWEEP_SECONDS
    (gateway.tasks.outbox_sweep). A delivery whose attempt was cut short (its worker killed)
    is due again once its claim (the webhook timeout plus 30 s) has passed."""
    from models_registry.models import TrainingRun
    from models_registry.tasks import training_run_execute_task

    from .tasks import webhook_deliver

    now = now or timezone.now()
    grace = _grace()
    sent = {"webhooks": 0, "training_runs": 0}
    due = WebhookDelivery.objects.filter(
        status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=now - grace
    ).values_list("pk", flat=True)[:500]
    for pk in due:
        sent["webhooks"] += task_send(webhook_deliver, pk)
    stale_runs = TrainingRun.objects.filter(
        status=TrainingRun.Status.QUEUED, created_at__lte=now - grace
    ).values_list("pk", flat=True)
    for pk in stale_runs:
        sent["training_runs"] += task_send(training_run_execute_task, pk)
    return sent
