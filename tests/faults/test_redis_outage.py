"""Redis stopped while clients post human-routed predictions, and reviewers answer them.

Redis is the cache (the API throttles count there) and the Celery broker. While it is down,
every request is still accepted (the throttles fail open), each prediction is written with
its review task, and each reviewer decision writes its webhook delivery; the messages that
could not be published wait as rows. Redis comes back empty (no persistence), and the
outbox sweeper (beat, gateway.tasks.outbox_sweep) re-sends them: every webhook arrives."""
from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from gateway.models import Prediction, WebhookDelivery
from gateway.services import routing_update
from review.models import ReviewTask
from tests import factories

from .harness import report, service_ctl, wait_until

PREDICTIONS = 40
DECISIONS = 8


def test_redis_outage_loses_no_prediction_and_the_sweeper_delivers_what_waited(stack, receiver):
    loan = factories.loan_predictor()
    routing_update(predictor=loan, changes={"mode": "human"})
    client, key = factories.api_client_with_key(name="faults-redis", webhook_hosts=["127.0.0.1/32"])
    receiver.secret = client.webhook_secret
    _, reviewer_token = factories.reviewer_with_token()
    bearer, reviewer = f"Bearer {key}", f"Token {reviewer_token}"

    def predict(_=None):
        body = {"input": factories.loan_input(), "callback_url": receiver.url}
        return stack.call("POST", "/predict/loan-approval", body, auth=bearer, headers={"Idempotency-Key": uuid.uuid4().hex})

    warm = predict()
    assert warm.status == 202, (warm.status, warm.body[:300])

    stop_seconds = service_ctl("redis", "stop")
    outage = time.monotonic()
    try:
        ready = stack.call("GET", "/readyz")
        with ThreadPoolExecutor(max_workers=4) as pool:
            replies = list(pool.map(predict, range(PREDICTIONS)))
        # Reviewers keep working: each decision answers a prediction and writes its webhook.
        decided = []
        decision_replies = []
        for i in range(DECISIONS):
            task = stack.call("POST", "/review/claim", auth=reviewer)
            decision_replies.append(task)
            if task.status != 200:
                continue
            task = task.json()
            answer = stack.call("POST", f"/review/tasks/{task['id']}/decision",
                                {"output": "approve" if i % 2 else "refer"}, auth=reviewer)
            decision_replies.append(answer)
            if answer.status in (200, 201):
                decided.append(task["prediction"]["id"] if isinstance(task["prediction"], dict) else task["prediction"])
        waiting = WebhookDelivery.objects.filter(prediction_id__in=decided, status="pending", attempts=0).count()
    finally:
        start_seconds = service_ctl("redis", "start")
        outage = time.monotonic() - outage

    accepted = [r.json()["id"] for r in replies if r.status == 202]
    errors = [r for r in replies + decision_replies if r.status not in (200, 201, 202)]
    stored = set(map(str, Prediction.objects.filter(pk__in=accepted).values_list("pk", flat=True)))
    with_task = set(map(str, ReviewTask.objects.filter(prediction_id__in=accepted).values_list("prediction_id", flat=True)))
    lost_predictions = len(set(accepted) - (stored & with_task))

    # Back up (and empty): the sweeper re-sends, a worker delivers.
    deliveries = {str(d.pk): d for d in WebhookDelivery.objects.filter(prediction_id__in=decided)}

    def all_delivered():
        counts = receiver.counts()
        return all(counts.get(pk) for pk in deliveries) and not WebhookDelivery.objects.filter(
            pk__in=deliveries, status="pending").exists()

    back = time.monotonic()
    try:
        wait_until(all_delivered, "the sweeper to deliver the waiting webhooks", timeout=40)
    except AssertionError:
        pass  # reported below
    recovery = time.monotonic() - back
    counts = receiver.counts()
    delivered = sum(1 for pk in deliveries if counts.get(pk))
    statuses = dict(WebhookDelivery.objects.filter(pk__in=deliveries).values_list("pk", "status"))
    row = report(
        "redis stopped during human-routed /predict traffic and reviewer decisions",
        sent=PREDICTIONS + len(decision_replies),
        errors=len(errors),
        lost=lost_predictions + (len(deliveries) - delivered),
        predictions_sent=PREDICTIONS, predictions_accepted_202=len(accepted), predictions_lost=lost_predictions,
        decisions=len(decided), webhooks_waiting_while_down=waiting, webhooks_delivered_after=delivered,
        webhook_duplicates=sum(max(counts.get(pk, 0) - 1, 0) for pk in deliveries),
        webhooks_delivered_within_seconds=round(recovery, 1), readyz_while_down=ready.status,
        redis_stop_seconds=round(stop_seconds, 2), redis_start_seconds=round(start_seconds, 2),
        outage_seconds=round(outage, 1),
        predict_seconds_max=round(max(r.seconds for r in replies), 2),
        review_seconds_max=round(max(r.seconds for r in decision_replies), 2),
        error_samples=[(r.status, r.body[:200].decode(errors="replace"), r.error) for r in errors[:3]],
    )
    assert not errors, (row, stack.logs())
    assert len(accepted) == PREDICTIONS and lost_predictions == 0, row
    assert ready.status == 503 and ready.json()["checks"]["redis"].startswith("error"), ready.body
    assert len(decided) == DECISIONS and waiting == DECISIONS, row  # nothing could be sent while Redis was down
    assert delivered == len(deliveries) == DECISIONS, (row, statuses, stack.logs())
    assert set(statuses.values()) == {"delivered"}, statuses
    assert receiver.all_signed()
