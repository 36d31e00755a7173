from celery import shared_task

from . import webhooks


@shared_task(name="gateway.tasks.webhook_deliver", ignore_result=True)
def webhook_deliver(delivery_id: int) -> None:
    delivery = webhooks.webhook_attempt(delivery_id=delivery_id)
    if delivery is not None and delivery.status == delivery.Status.PENDING:
        # Not delivered yet: try again when the backoff is over.
        webhook_deliver.apply_async(args=(delivery_id,), countdown=webhooks.backoff_seconds(delivery.attempts))


@shared_task(name="gateway.tasks.outbox_sweep", ignore_result=True)
def outbox_sweep() -> dict:
    """Re-send the messages a broker outage may have lost (beat runs this every minute)."""
    from .outbox import outbox_resend

    return outbox_resend()


@shared_task(name="gateway.tasks.sla_sweep", ignore_result=True)
def sla_sweep() -> dict:
    """Provisional answers or expiry for human predictions past their SLA (beat)."""
    from .sla import sla_enforce

    return sla_enforce()


@shared_task(name="gateway.tasks.shadow_predict", ignore_result=True)
def shadow_predict(prediction_id: str, version_ids: list[int]) -> int:
    """Run the given model versions on a prediction's input in shadow (stored, never
    returned). Sent on commit by prediction_create; idempotent, so a repeat stores nothing new."""
    from models_registry.shadow import shadow_run

    return shadow_run(prediction_id=prediction_id, version_ids=version_ids)


@shared_task(name="gateway.tasks.explanation_sample", ignore_result=True)
def explanation_sample(prediction_id: str, version_id: int) -> bool:
    """Explain a sampled model answer and keep it as an ExplanationSample (off the request
    path; sent on commit by prediction_create for OZ_EXPLAIN_SAMPLE_PERCENT of model answers)."""
    from models_registry.explain import explanation_sample_record

    return explanation_sample_record(prediction_id=prediction_id, version_id=version_id) is not None


@shared_task(name="gateway.tasks.suggestion_explain", ignore_result=True)
def suggestion_explain(task_id: int, version_id: int) -> bool:
    """Add the explanation of the model's suggestion to a low-confidence review task (sent
    on commit by prediction_create, so the 202 never waits for it)."""
    from models_registry.explain import suggestion_explanation_add

    return suggestion_explanation_add(task_id=task_id, version_id=version_id) is not None
