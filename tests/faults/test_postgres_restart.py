"""PostgreSQL stopped for a few seconds (a restart, a failover) under load.

While it is down every request gets a clean answer: 503 with Retry-After and a problem+json
body on the API, a short HTML page in the admin; never a 500, a stack trace or a dropped
connection. Clients that retry with the same Idempotency-Key get their prediction once the
database is back; the web processes reconnect by themselves (persistent connections,
CONN_MAX_AGE, without a check before each request: a connection that failed is closed at the
end of its request), and so does the Celery worker (which checks its connection before each
task: CONN_HEALTH_CHECKS), whose webhooks all arrive (the outbox sweeper re-sends what failed
meanwhile)."""
from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client

from gateway.models import Prediction, WebhookDelivery
from gateway.services import routing_update
from tests import factories

from .harness import Reply, report, service_ctl, wait_until

DOWN_SECONDS = 3
CLIENTS = 3


def _verdict(kind: str, reply: Reply) -> str:
    """"ok", "unavailable" (a well-formed 503) or "bad"."""
    if reply.status is not None and 200 <= reply.status < 300:
        return "ok"
    if reply.status != 503 or not reply.headers.get("retry-after", "").isdigit():
        return "bad"
    text = reply.body.decode(errors="replace")
    if "Traceback" in text or 'File "' in text:
        return "bad"
    if kind == "admin":
        return "unavailable" if reply.content_type.startswith("text/html") else "bad"
    if reply.content_type != "application/problem+json":
        return "bad"
    body = json.loads(text)
    return "unavailable" if body.get("status") == 503 and body.get("title") and body.get("type") else "bad"


def test_postgres_stopped_under_load_answers_503_and_recovers_by_itself(stack, receiver):
    loan = factories.loan_predictor()
    routing_update(predictor=loan, changes={"mode": "rule"})
    client, key = factories.api_client_with_key(name="faults-pg", webhook_hosts=["127.0.0.1/32"])
    receiver.secret = client.webhook_secret
    staff = get_user_model().objects.create_superuser("faults-admin", "admin@example.invalid", "pw-faults-123")
    browser = Client()
    browser.force_login(staff)
    session = browser.cookies[settings.SESSION_COOKIE_NAME].value
    bearer = f"Bearer {key}"

    results: list[tuple[float, str, str, Reply]] = []  # (time, kind, verdict, reply)
    accepted: list[str] = []
    logical = Counter()  # predictions asked for / accepted
    lock = threading.Lock()
    stop = threading.Event()

    def record(kind: str, reply: Reply) -> str:
        verdict = _verdict(kind, reply)
        with lock:
            results.append((time.monotonic(), kind, verdict, reply))
        return verdict

    def predicting():
        while not stop.is_set():
            idempotency_key = uuid.uuid4().hex
            body = {"input": factories.loan_input(amount=1000 + len(accepted)), "callback_url": receiver.url}
            with lock:
                logical["asked"] += 1
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline:  # a client retrying with the same key, as Retry-After says
                reply = stack.call("POST", "/predict/loan-approval", body, auth=bearer,
                                   headers={"Idempotency-Key": idempotency_key}, timeout=15)
                if record("predict", reply) == "ok":
                    with lock:
                        accepted.append(reply.json()["id"])
                    break
                time.sleep(0.3)  # not the full Retry-After: the test has a budget
            time.sleep(0.1)

    def reading():
        while not stop.is_set():
            record("api_get", stack.call("GET", "/predictors/loan-approval", auth=bearer, timeout=15))
            time.sleep(0.1)

    def browsing():
        while not stop.is_set():
            record("admin", stack.call("GET", "/admin/", headers={"Cookie": f"{settings.SESSION_COOKIE_NAME}={session}"},
                                       timeout=15))
            time.sleep(0.15)

    threads = [threading.Thread(target=predicting) for _ in range(CLIENTS)]
    threads += [threading.Thread(target=reading), threading.Thread(target=browsing)]
    for thread in threads:
        thread.start()
    started_at = time.monotonic()
    try:
        # Load first (and every web worker warm), then the fault.
        wait_until(lambda: len(accepted) >= 12, "predictions to flow before the fault", timeout=30)
        stopped_at = time.monotonic()
        service_ctl("postgres", "stop")
        time.sleep(DOWN_SECONDS)
        service_ctl("postgres", "start")
        back_at = time.monotonic()

        def settled():  # every kind answered OK for the last three seconds
            if time.monotonic() - back_at < 3:
                return False
            with lock:
                recent = [(kind, verdict) for at, kind, verdict, _ in results if at > time.monotonic() - 3]
            kinds = {kind for kind, _ in recent}
            return kinds == {"predict", "api_get", "admin"} and all(v == "ok" for _, v in recent)

        try:
            wait_until(settled, "every kind of request to succeed again", timeout=25)
        except AssertionError:
            pass  # reported below
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    connection.close()  # this process's connection died with the server

    first_ok_after = {}
    for at, kind, verdict, _ in results:
        if at > back_at and verdict == "ok" and kind not in first_ok_after:
            first_ok_after[kind] = round(at - back_at, 2)
    last_failure = max((at for at, _, verdict, _ in results if verdict != "ok"), default=stopped_at)
    verdicts = Counter(verdict for _, _, verdict, _ in results)
    by_kind = Counter(f"{kind}:{verdict}" for _, kind, verdict, _ in results)
    bad = [reply for _, _, verdict, reply in results if verdict == "bad"]
    stored = set(map(str, Prediction.objects.filter(pk__in=accepted).values_list("pk", flat=True)))
    lost_predictions = len(set(accepted) - stored) + (logical["asked"] - len(accepted))

    settled_at = time.monotonic()
    deliveries = set(map(str, WebhookDelivery.objects.filter(prediction_id__in=accepted).values_list("pk", flat=True)))
    try:
        wait_until(lambda: deliveries <= set(receiver.counts()) and not WebhookDelivery.objects.filter(
            pk__in=deliveries).exclude(status="delivered").exists(), "every webhook to be delivered", timeout=40)
    except AssertionError:
        pass  # reported below
    undelivered = len(deliveries - set(receiver.counts()))
    seconds = {"load_before_fault": round(stopped_at - started_at, 1), "until_settled": round(settled_at - back_at, 1),
               "webhooks_after_settled": round(time.monotonic() - settled_at, 1)}
    row = report(
        "postgresql stopped for a few seconds under load (API, admin, webhooks)",
        sent=len(results), errors=verdicts["unavailable"] + verdicts["bad"], lost=lost_predictions + undelivered,
        responses=dict(by_kind), unavailable_503=verdicts["unavailable"], bad_responses=verdicts["bad"],
        predictions_asked=logical["asked"], predictions_accepted=len(accepted), predictions_lost=lost_predictions,
        webhooks=len(deliveries), webhooks_undelivered=undelivered,
        down_seconds=round(back_at - stopped_at, 1), first_ok_after_restart_seconds=first_ok_after,
        last_failure_after_restart_seconds=round(max(last_failure - back_at, 0), 2),
        seconds=seconds, slowest_response_seconds=round(max(r.seconds for _, _, _, r in results), 2),
        bad_samples=[(r.status, r.content_type, r.body[:300].decode(errors="replace"), r.error) for r in bad[:3]],
    )
    assert verdicts["bad"] == 0, (row, stack.logs())
    assert verdicts["unavailable"] > 0, row  # the outage was felt
    assert {"predict", "api_get", "admin"} <= {kind for kind in first_ok_after}, row
    assert last_failure - back_at < 10, row  # recovered by itself, quickly
    assert lost_predictions == 0 and stored == set(accepted), row
    assert undelivered == 0, (row, stack.logs())
    assert stack.call("GET", "/readyz").status == 200
