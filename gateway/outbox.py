"""Re-sending work whose Celery message may have been lost (broker down at commit time).

Each kind of deferred work is a database row with a state; this finds rows that should have
been picked up by now and publishes their message again. Tasks are idempotent, so a
duplicate message costs nothing."""
from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from .messaging import task_send
from .models import WebhookDelivery

# Leave freshly written rows to their own on_commit message.
GRACE = timedelta(seconds=30)


def outbox_resend(*, now=None) -> dict:
    from models_registry.models import TrainingRun
    from models_registry.tasks import training_run_execute_task

    from .tasks import webhook_deliver

    now = now or timezone.now()
    sent = {"webhooks": 0, "training_runs": 0}
    due = WebhookDelivery.objects.filter(
        status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=now - GRACE
    ).values_list("pk", flat=True)[:500]
    for pk in due:
        sent["webhooks"] += task_send(webhook_deliver, pk)
    stale_runs = TrainingRun.objects.filter(
        status=TrainingRun.Status.QUEUED, created_at__lte=now - GRACE
    ).values_list("pk", flat=True)
    for pk in stale_runs:
        sent["training_runs"] += task_send(training_run_execute_task, pk)
    return sent
