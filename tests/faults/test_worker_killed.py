"""Celery processes killed with SIGKILL (the out-of-memory killer, a container or node
going away), in the middle of a webhook POST and of a training run. Celery runs with
acks_late and reject_on_worker_lost, and the tasks are idempotent:

- webhook: the whole worker (main process and pool) is killed while the receiver holds the
  POST, and a new worker is started. The message stays unacknowledged in Redis (it would come
  back after the broker's visibility timeout, an hour by default); the outbox sweeper re-sends
  the delivery once the dead attempt's claim (the webhook timeout + OZ_WEBHOOK_CLAIM_MARGIN_SECONDS) has expired.
  Delivery is at least once: the receiver may see the event twice, under the same
  `Oz-Delivery` id (its idempotency key); the cut attempt is logged as interrupted. Never lost.
- training: the pool process running the run is killed; its worker hands the message back to
  the broker at once (reject_on_worker_lost) and runs it again, which does nothing (only a
  `queued` run starts). The reaper fails the run when its heartbeat stops; the next run
  trains once and registers exactly one version. Never two versions from one request."""
from __future__ import annotations

import os
import re
import signal
import time
from collections import Counter
from pathlib import Path

from gateway.models import Predictor, WebhookAttempt, WebhookDelivery
from gateway.services import routing_update
from gateway.webhooks import INTERRUPTED
from models_registry.models import ModelVersion, TrainingRun
from tests import factories

from .harness import (
    OUTBOX_GRACE_SECONDS,
    SWEEP_SECONDS,
    WEBHOOK_CLAIM_MARGIN_SECONDS,
    WEBHOOK_TIMEOUT_SECONDS,
    alive,
    report,
    wait_until,
)

SLOW_GRID = {"C": [round(0.01 * 1.6**i, 6) for i in range(24)]}  # 24 x 3 folds on thousands of labels
LABELS = 4000


def _files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def _received(log: str, task: str) -> Counter:
    """How many times the worker received each message (by task id) of `task`."""
    return Counter(re.findall(rf"Task {re.escape(task)}\[([0-9a-f-]+)\] received", log))


def _kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not alive(pid), f"process {pid} to die", timeout=10, interval=0.05)


def test_a_worker_killed_mid_webhook_and_mid_training_duplicates_and_loses_nothing(stack, receiver):
    loan = factories.loan_predictor()
    routing_update(predictor=loan, changes={"mode": "rule"})
    client, key = factories.api_client_with_key(name="faults-worker", webhook_hosts=["127.0.0.1/32"])
    receiver.secret = client.webhook_secret
    _, operator_token = factories.operator_with_token()
    operator = f"Token {operator_token}"
    mark = stack.worker.log_mark()

    # 1. A webhook POST in flight: the receiver holds the request, the worker waits on it.
    receiver.hold_next()
    answered = stack.call("POST", "/predict/loan-approval", {"input": factories.loan_input(), "callback_url": receiver.url},
                          auth=f"Bearer {key}")
    assert answered.status == 200, answered.body[:300]
    wait_until(receiver.held.is_set, "the webhook POST to reach the receiver", timeout=30, interval=0.05)
    delivery = WebhookDelivery.objects.get(prediction_id=answered.json()["id"])
    webhook_victims = stack.kill_worker()
    webhook_killed_at = time.monotonic()
    receiver.release()
    stack.start_worker()
    stack.wait_worker()

    # 2. A training run in flight (a slow grid search), killed once it is under way.
    factories.synthetic_labels(loan, LABELS, seed=7)
    Predictor.objects.filter(pk=loan.pk).update(training={"grid": SLOW_GRID})
    requested = stack.call("POST", "/predictors/loan-approval/train", auth=operator)
    assert requested.status == 202, requested.body[:300]
    killed_run = TrainingRun.objects.get(pk=requested.json()["id"])
    wait_until(lambda: "grid {'C'" in TrainingRun.objects.get(pk=killed_run.pk).logs, "the grid search to be under way",
               timeout=90)
    killed_run.refresh_from_db()
    training_victim = int(killed_run.worker.rsplit(":", 1)[1])
    assert training_victim == stack.worker_child() and training_victim not in webhook_victims
    _kill(training_victim)
    training_killed_at = time.monotonic()

    # The reaper (beat) fails it once its heartbeat has stopped for the timeout.
    wait_until(lambda: TrainingRun.objects.filter(pk=killed_run.pk, status="failed").exists(),
               "the reaper to fail the killed run", timeout=30)
    reaped_after = time.monotonic() - training_killed_at
    killed_run.refresh_from_db()
    assert "stopped responding" in killed_run.error, killed_run.error
    assert not ModelVersion.objects.exists()
    media = Path(stack.media)
    assert _files_under(media / "models" / loan.slug / f"run-{killed_run.pk}") == []

    # The next run trains once, and registers exactly one version.
    Predictor.objects.filter(pk=loan.pk).update(training={})
    again = stack.call("POST", "/predictors/loan-approval/train", auth=operator)
    assert again.status == 202, again.body[:300]
    retried = wait_until(
        lambda: TrainingRun.objects.filter(pk=again.json()["id"], status__in=["succeeded", "failed"]).first(),
        "the next run to finish", timeout=90,
    )

    # 3. The webhook: the sweeper re-sends it after the dead attempt's claim expired.
    claim = WEBHOOK_TIMEOUT_SECONDS + WEBHOOK_CLAIM_MARGIN_SECONDS + OUTBOX_GRACE_SECONDS + SWEEP_SECONDS
    try:
        wait_until(lambda: WebhookDelivery.objects.filter(pk=delivery.pk, status="delivered").exists(),
                   "the interrupted webhook to be delivered", timeout=claim + 25 - (time.monotonic() - webhook_killed_at))
    except AssertionError:
        pass  # reported below
    webhook_recovered_after = time.monotonic() - webhook_killed_at
    delivery.refresh_from_db()
    attempts = list(WebhookAttempt.objects.filter(delivery=delivery).order_by("number").values_list("status_code", "error"))
    received = receiver.counts().get(str(delivery.pk), 0)
    webhook_messages = _received(stack.worker.log_text(mark), "gateway.tasks.webhook_deliver")
    webhook_row = report(
        "celery worker (main and pool processes) SIGKILLed during a webhook POST; a new worker started",
        sent=1, errors=sum(1 for _, error in attempts if error == INTERRUPTED),
        lost=0 if delivery.status == "delivered" else 1,
        delivery_status=delivery.status, attempts=len(attempts), received_by_endpoint=received,
        duplicates_same_delivery_id=max(received - 1, 0), delivered_after_kill_seconds=round(webhook_recovered_after, 1),
        webhook_messages_received=sum(webhook_messages.values()),
        same_message_redelivered=sum(n - 1 for n in webhook_messages.values()),
        recovered_by="outbox sweeper (the unacked message would return only after the visibility timeout)",
        semantics="at least once; a repeat carries the same Oz-Delivery id",
    )

    versions = list(ModelVersion.objects.values_list("version", "run_id"))
    runs = dict(TrainingRun.objects.values_list("pk", "status"))
    log = stack.worker.log_text(mark)
    training_messages = _received(log, "models_registry.tasks.training_run_execute")
    training_row = report(
        "celery pool process SIGKILLed during a training run",
        sent=2, errors=sum(1 for status in runs.values() if status == "failed"),
        lost=sum(1 for status in runs.values() if status in ("queued", "running")),
        killed_run_status=runs[killed_run.pk], killed_run_reaped_after_seconds=round(reaped_after, 1),
        next_run_status=retried.status, model_versions=len(versions), duplicate_versions=max(len(versions) - 1, 0),
        training_messages_received=sum(training_messages.values()),
        same_message_redelivered=sum(n - 1 for n in training_messages.values()),
        worker_lost_errors_logged=log.count("Task handler raised error: WorkerLostError"),
    )

    assert delivery.status == "delivered", (webhook_row, attempts, stack.logs())
    assert attempts[0] == (None, INTERRUPTED) and attempts[-1][0] == 204, attempts
    assert received >= 2 and receiver.all_signed(), webhook_row  # the cut POST arrived, then the re-sent one
    assert retried.status == "succeeded", retried.error
    assert versions == [(1, retried.pk)], training_row
    assert runs == {killed_run.pk: "failed", retried.pk: "succeeded"}, runs
    # acks_late + reject_on_worker_lost: the killed run's message came back, and did nothing.
    assert training_row["same_message_redelivered"] >= 1, training_row
