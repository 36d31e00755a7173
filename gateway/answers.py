"""Writing answers onto predictions, and telling the client about them.

Reviewers, rules and models all answer through `prediction_answer`, so the status rules
and the webhook live in one place."""
from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from .messaging import task_send_on_commit
from .models import AnswerSource, Prediction, PredictionStatus, WebhookDelivery


class AnswerConflict(Exception):
    """The prediction can no longer take this answer."""


def prediction_answer(
    *,
    prediction: Prediction,
    output,
    source: str,
    confidence: float | None = None,
    scores: dict | None = None,
    model_version: int | None = None,
    provisional: bool = False,
) -> Prediction:
    """Record an answer. Atomic; the caller should hold the prediction row lock
    (select_for_update) when it may race with another answer.

    pending -> answered. A human answer on an already answered prediction makes it
    `revised` (the earlier answer stays in history); the client gets `prediction.answered`
    or `prediction.revised` by webhook when it gave a callback_url."""
    was_pending = prediction.status in (PredictionStatus.PENDING, PredictionStatus.EXPIRED)
    if not was_pending and source != AnswerSource.HUMAN:
        raise AnswerConflict("only a human may revise an answered prediction")
    # Inside a caller's transaction (a reviewer's decision) no savepoint of its own: any
    # error here fails that transaction as a whole, which is what the caller wants.
    with transaction.atomic(savepoint=False):
        prediction.output = output
        prediction.source = source
        prediction.confidence = confidence
        prediction.scores = scores
        prediction.model_version = model_version
        prediction.provisional = provisional
        prediction.sla_due_at = None
        prediction.answered_at = timezone.now()
        prediction.status = PredictionStatus.ANSWERED if was_pending else PredictionStatus.REVISED
        prediction.save(
            update_fields=[
                "output", "source", "confidence", "scores", "model_version", "provisional",
                "answered_at", "status", "sla_due_at",
            ]
        )
        webhook_enqueue(
            prediction=prediction,
            event="prediction.answered" if was_pending else "prediction.revised",
        )
    return prediction


def webhook_enqueue(*, prediction: Prediction, event: str) -> WebhookDelivery | None:
    """Store the event for delivery (same transaction as the change) and nudge a worker."""
    if not prediction.callback_url:
        return None
    from .presenters import prediction_as_dict
    from .tasks import webhook_deliver

    delivery = WebhookDelivery.objects.create(
        prediction=prediction,
        event=event,
        url=prediction.callback_url,
        payload={"type": event, "created_at": timezone.now().isoformat(), "data": prediction_as_dict(prediction)},
        next_attempt_at=timezone.now(),
    )
    task_send_on_commit(webhook_deliver, delivery.pk)
    return delivery
