"""GET /metrics: protected, counts predictions exactly across two gunicorn worker
processes (prometheus_client multiprocess mode), and reads database state (queue depth,
agreement, drift, training runs, webhooks, SLA misses, appeals) at scrape time."""
from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from gateway.models import Prediction, WebhookAttempt, WebhookDelivery
from gateway.observability import prediction_observe
from gateway.services import routing_update
from gateway.webhooks import INTERRUPTED
from models_registry.models import DriftReport, ModelVersion, ShadowPrediction, TrainingRun
from review.models import Appeal, Label, TaskKind
from review.services import review_task_claim_next, review_task_create, review_task_decide
from tests import factories
from tests.servers import PRODUCTION_CONFIG, ROOT, Server, database_url

TOKEN = "metrics-token-for-tests"


def _samples(text: str) -> list[tuple[str, dict, float]]:
    return [(s.name, s.labels, s.value) for family in text_string_to_metric_families(text) for s in family.samples]


def value(text: str, name: str, **labels) -> float | None:
    """The sum of the samples called `name` whose labels include `labels` (None: none)."""
    found = [v for n, sample_labels, v in _samples(text) if n == name and labels.items() <= sample_labels.items()]
    return sum(found) if found else None


@pytest.fixture
def fresh_metrics(settings):
    settings.OZ_METRICS_TOKEN = TOKEN
    settings.OZ_METRICS_CACHE_SECONDS = 0


def scrape(api) -> str:
    response = api.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    return response.content.decode()


def _predict(api, **body):
    return api.post("/predict/loan-approval", {"input": factories.loan_input(), **body}, format="json")


# --- who may read ---------------------------------------------------------------------------

@pytest.mark.django_db
def test_metrics_are_not_public(settings, anon_api, client, operator, client_api):
    settings.OZ_METRICS_TOKEN = TOKEN
    refused = anon_api.get("/metrics")
    assert refused.status_code == 401
    assert refused["Content-Type"] == "application/problem+json"
    assert refused["WWW-Authenticate"].startswith("Bearer")
    assert anon_api.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    # An API client's key is not the metrics token.
    assert client_api.get("/metrics").status_code == 401
    assert anon_api.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200
    # Staff signed in to the admin may look.
    client.force_login(operator[0])
    assert client.get("/metrics").status_code == 200


@pytest.mark.django_db
def test_without_a_token_setting_only_staff_may_read(settings, anon_api, client, django_user_model):
    settings.OZ_METRICS_TOKEN = ""
    assert anon_api.get("/metrics").status_code == 401
    assert anon_api.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 401
    assert anon_api.get("/metrics", HTTP_AUTHORIZATION="Bearer anything").status_code == 401
    someone = django_user_model.objects.create_user("someone", password="pw-some-123")
    client.force_login(someone)
    assert client.get("/metrics").status_code == 403
    someone.is_staff = True
    someone.save()
    assert client.get("/metrics").status_code == 200


# --- counted in the process ------------------------------------------------------------------

def _sample(name, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.django_db
def test_a_prediction_is_one_count_and_one_latency_observation(client_api, loan, fresh_metrics, anon_api):
    routing_update(predictor=loan, changes={"mode": "rule"})
    labels = {"predictor": "loan-approval", "mode": "rule", "reason": "mode", "source": "rule", "status": "answered"}
    before = _sample("oz_predictions_total", **labels)
    latency_before = _sample("oz_predict_latency_seconds_count", predictor="loan-approval", source="rule")
    assert _predict(client_api).status_code == 200
    response = client_api.post("/predict/loan-approval", {"input": factories.loan_input()}, format="json",
                               HTTP_IDEMPOTENCY_KEY="once")
    assert response.status_code == 200
    replay = client_api.post("/predict/loan-approval", {"input": factories.loan_input()}, format="json",
                             HTTP_IDEMPOTENCY_KEY="once")
    assert replay["Idempotent-Replayed"] == "true"  # the same prediction: not counted again
    assert _sample("oz_predictions_total", **labels) == before + 2
    assert _sample("oz_predict_latency_seconds_count", predictor="loan-approval", source="rule") == latency_before + 2
    text = scrape(anon_api)
    assert value(text, "oz_predictions_total", **labels) == before + 2
    # django-prometheus's request metrics are there too.
    assert value(text, "django_http_requests_total_by_view_transport_method_total", view="predict") >= 3


@pytest.mark.django_db
def test_counting_a_prediction_asks_the_database_nothing(client_api, loan, client_key, django_assert_num_queries):
    body = _predict(client_api).json()
    prediction = Prediction.objects.select_related("predictor").get(pk=body["id"])
    with django_assert_num_queries(0):
        prediction_observe(prediction=prediction, predictor=prediction.predictor, client=client_key[0], seconds=0.01)


@pytest.mark.django_db
def test_time_to_human_decision(client_api, reviewer_api, loan, django_capture_on_commit_callbacks):
    labels = {"predictor": "loan-approval", "kind": "routed"}
    before = _sample("oz_human_decision_seconds_count", **labels)
    assert _predict(client_api).status_code == 202
    task = reviewer_api.post("/review/claim").json()
    with django_capture_on_commit_callbacks(execute=True):
        decided = reviewer_api.post(f"/review/tasks/{task['id']}/decision", {"output": "approve"}, format="json")
    assert decided.status_code in (200, 201), decided.content
    assert _sample("oz_human_decision_seconds_count", **labels) == before + 1
    assert _sample("oz_human_decision_seconds_bucket", le="+Inf", **labels) == before + 1


# --- read from the database -------------------------------------------------------------------

@pytest.mark.django_db
def test_queue_depth_by_kind_and_status(client_api, loan, reviewer, fresh_metrics, anon_api):
    for _ in range(3):
        assert _predict(client_api).status_code == 202
    routing_update(predictor=loan, changes={"mode": "rule", "qa_sample_percent": 100})
    assert _predict(client_api).status_code == 200  # answered by the rules, and a QA sample queued
    claimed = review_task_claim_next(reviewer=reviewer[0])  # the QA sample is last in line: a routed one
    assert claimed.kind == TaskKind.ROUTED

    text = scrape(anon_api)
    depth = "oz_review_queue_depth"
    assert value(text, depth, predictor="loan-approval", kind="routed", status="open") == 2
    assert value(text, depth, predictor="loan-approval", kind="routed", status="claimed") == 1
    assert value(text, depth, predictor="loan-approval", kind="qa_sample", status="open") == 1
    # Every kind has a series, zeros included.
    assert value(text, depth, predictor="loan-approval", kind="appeal", status="open") == 0
    assert value(text, depth, predictor="loan-approval") == 4


@pytest.mark.django_db
def test_training_runs_webhooks_sla_misses_appeals_and_drift(client_api, loan, fresh_metrics, anon_api):
    routing_update(predictor=loan, changes={"mode": "rule"})
    predictions = [Prediction.objects.get(pk=_predict(client_api).json()["id"]) for _ in range(4)]

    TrainingRun.objects.create(predictor=loan, status="succeeded", trigger="manual")
    TrainingRun.objects.create(predictor=loan, status="succeeded", trigger="manual")
    TrainingRun.objects.create(predictor=loan, status="failed", trigger="label_threshold")
    TrainingRun.objects.create(predictor=loan, status="running", trigger="schedule")

    now = timezone.now()
    for status in ("delivered", "delivered", "failed", "pending"):
        delivery = WebhookDelivery.objects.create(
            prediction=predictions[0], event="prediction.answered", url="https://client.example/hook", payload={},
            status=status, next_attempt_at=now,
        )
        WebhookAttempt.objects.create(delivery=delivery, number=1, started_at=now, duration_ms=5,
                                      status_code={"delivered": 200, "failed": 500}.get(status),
                                      error="" if status == "delivered" else ("HTTP 500" if status == "failed" else INTERRUPTED))
    WebhookDelivery.objects.create(prediction=predictions[0], event="prediction.revised", url="https://client.example/hook",
                                   payload={}, status="failed", next_attempt_at=now)

    Prediction.objects.filter(pk__in=[p.pk for p in predictions[:2]]).update(route={"mode": "human", "reason": "sla_expired"})

    Appeal.objects.create(prediction=predictions[1], reason="no", original_source="rule", status="overturned")
    Appeal.objects.create(prediction=predictions[2], reason="no", original_source="rule", status="upheld")
    Appeal.objects.create(prediction=predictions[3], reason="no", original_source="rule", status="open")

    DriftReport.objects.create(predictor=loan, window_start=now - timedelta(days=1), window_end=now, alert=True)

    text = scrape(anon_api)
    runs = "oz_training_runs_total"
    assert value(text, runs, predictor="loan-approval", trigger="manual", status="succeeded") == 2
    assert value(text, runs, predictor="loan-approval", trigger="label_threshold", status="failed") == 1
    assert value(text, runs, status="running") is None  # not finished: a gauge, below
    assert value(text, "oz_training_runs_active", predictor="loan-approval", status="running") == 1

    assert value(text, "oz_webhook_deliveries_total", event="prediction.answered", status="delivered") == 2
    assert value(text, "oz_webhook_deliveries_total", event="prediction.answered", status="failed") == 1
    assert value(text, "oz_webhook_deliveries_total", event="prediction.revised", status="failed") == 1
    assert value(text, "oz_webhook_deliveries_pending", event="prediction.answered") == 1
    assert value(text, "oz_webhook_attempts_total", event="prediction.answered", result="success") == 2
    assert value(text, "oz_webhook_attempts_total", event="prediction.answered", result="failure") == 1
    assert value(text, "oz_webhook_attempts_total", event="prediction.answered", result="interrupted") == 1

    assert value(text, "oz_sla_misses_total", predictor="loan-approval") == 2

    assert value(text, "oz_appeals_total", predictor="loan-approval", source="rule") == 3
    assert value(text, "oz_appeals_decided_total", predictor="loan-approval", source="rule", outcome="overturned") == 1
    assert value(text, "oz_appeals_decided_total", predictor="loan-approval", source="rule", outcome="upheld") == 1

    assert value(text, "oz_drift_alert", predictor="loan-approval") == 1
    # The latest report decides.
    DriftReport.objects.create(predictor=loan, window_start=now, window_end=now + timedelta(hours=1), alert=False)
    assert value(scrape(anon_api), "oz_drift_alert", predictor="loan-approval") == 0
    assert value(text, "oz_metrics_database_up") == 1


@pytest.mark.django_db
def test_database_metrics_are_cached_for_a_few_seconds(settings, client_api, loan, anon_api):
    settings.OZ_METRICS_TOKEN = TOKEN
    settings.OZ_METRICS_CACHE_SECONDS = 30
    first = scrape(anon_api)
    assert value(first, "oz_review_queue_depth", kind="routed", status="open") == 0
    assert _predict(client_api).status_code == 202
    assert value(scrape(anon_api), "oz_review_queue_depth", kind="routed", status="open") == 0  # cached
    from django.core.cache import cache

    cache.clear()
    assert value(scrape(anon_api), "oz_review_queue_depth", kind="routed", status="open") == 1


def _model_answered(loan, output, version: int) -> Prediction:
    data = factories.loan_input() if loan.slug == "loan-approval" else {"area": 1}
    return Prediction.objects.create(
        predictor=loan, schema_version=1, input=data, route={"mode": "model", "reason": "mode"},
        status="answered", output=output, source="model", model_version=version, answered_at=timezone.now(),
    )


@pytest.mark.django_db
def test_model_human_agreement_from_qa_samples_and_shadows(loan, reviewer, fresh_metrics, anon_api):
    # QA: v3 answered approve twice; the reviewer agrees once and corrects once.
    for human in ("approve", "refer"):
        prediction = _model_answered(loan, "approve", 3)
        review_task_create(prediction=prediction, kind=TaskKind.QA_SAMPLE, reason="quality sample")
        task = review_task_claim_next(reviewer=reviewer[0])
        review_task_decide(task_id=task.pk, reviewer=reviewer[0], output=human)
    assert Prediction.objects.filter(status="revised").count() == 1  # the correction revised it

    # Shadow: the champion v1 said approve on three requests the humans decided approve, approve, refer.
    run = TrainingRun.objects.create(predictor=loan, status="succeeded")
    champion = ModelVersion.objects.create(predictor=loan, version=1, run=run, stage="champion", schema_version=1,
                                           artifact="models/none.skops", artifact_sha256="0" * 64)
    for human in ("approve", "approve", "refer"):
        prediction = Prediction.objects.create(predictor=loan, schema_version=1, input=factories.loan_input(),
                                               route={"mode": "human", "reason": "mode", "shadow": True})
        ShadowPrediction.objects.create(prediction=prediction, model_version=champion, output="approve")
        Label.objects.create(predictor=loan, prediction=prediction, schema_version=1, input=prediction.input,
                             target=human, source="review")

    text = scrape(anon_api)
    ratio, pairs = "oz_model_human_agreement_ratio", "oz_model_human_agreement_compared"
    assert value(text, ratio, predictor="loan-approval", model_version="3", evidence="qa") == 0.5
    assert value(text, pairs, predictor="loan-approval", model_version="3", evidence="qa") == 2
    assert value(text, ratio, predictor="loan-approval", model_version="1", evidence="shadow") == pytest.approx(2 / 3)
    assert value(text, pairs, predictor="loan-approval", model_version="1", evidence="shadow") == 3


@pytest.mark.django_db
def test_qa_agreement_on_numbers_uses_the_shadow_gates_tolerance(reviewer, fresh_metrics, anon_api, tmp_path):
    import yaml

    from gateway.definitions import predictors_load
    from gateway.models import Predictor

    path = tmp_path / "price.yaml"
    path.write_text(yaml.safe_dump({
        "slug": "price", "input": {"area": {"type": "number"}}, "output": {"type": "number"},
        "routing": {"mode": "model"}, "gates": {"min_shadow_agreement": {"rate": 0.8, "min_requests": 10, "tolerance": 1}},
    }))
    predictors_load(path)
    price = Predictor.objects.get(slug="price")
    # v2 answered 100 three times; the reviewer says 100.5 and 101 (within 1: agreed) and 110.
    for human in (100.5, 101, 110):
        prediction = _model_answered(price, 100, 2)
        review_task_create(prediction=prediction, kind=TaskKind.QA_SAMPLE, reason="quality sample")
        task = review_task_claim_next(reviewer=reviewer[0])
        review_task_decide(task_id=task.pk, reviewer=reviewer[0], output=human)
    text = scrape(anon_api)
    assert value(text, "oz_model_human_agreement_ratio", predictor="price", model_version="2", evidence="qa") == (
        pytest.approx(2 / 3))


# --- two gunicorn worker processes ------------------------------------------------------------

def _per_process_predictions(metrics_dir: Path) -> dict[int, float]:
    """oz_predictions_total as each worker process wrote it (its own counter file)."""
    counts = {}
    for path in metrics_dir.glob("counter_*.db"):
        pid = int(path.stem.split("_")[-1])
        with tempfile.TemporaryDirectory() as one:
            shutil.copy(path, one)
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=one)
            counts[pid] = sum(s.value for f in registry.collect() for s in f.samples if s.name == "oz_predictions_total")
    return counts


@pytest.fixture
def gunicorn_two_workers(transactional_db, tmp_path, settings):
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": database_url(),
        "DATABASE_CONN_MAX_AGE": "0",
        "OZ_MEDIA_ROOT": settings.MEDIA_ROOT,
        "OZ_THROTTLE_CLIENT": "1000000/min",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "PYTHONPATH": str(ROOT),
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "OZ_METRICS_TOKEN": TOKEN,
        "OZ_METRICS_CACHE_SECONDS": "0",
        "WEB_CONCURRENCY": "2",
        "GUNICORN_THREADS": "4",
    }
    server = Server("metrics", env, tmp_path, args=[*PRODUCTION_CONFIG, "--workers", "2", "--keep-alive", "0"])
    try:
        server.wait_ready()
        yield server, metrics_dir, server.process
    finally:
        server.stop()


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(sys.platform == "win32", reason="gunicorn is POSIX only")
def test_two_worker_processes_count_every_prediction_exactly_once(gunicorn_two_workers):
    import json

    server, metrics_dir, _ = gunicorn_two_workers
    loan = factories.loan_predictor()
    routing_update(predictor=loan, changes={"mode": "rule"})
    _, key = factories.api_client_with_key()
    body = json.dumps({"input": factories.loan_input()}).encode()

    def predict(_):
        return server.fetch("POST", "/predict/loan-approval", body, auth=f"Bearer {key}")[0]

    # Concurrent requests on fresh connections, until both workers have served some.
    sent = 0
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(10):
            statuses = list(pool.map(predict, range(24)))
            assert statuses == [200] * 24
            sent += 24
            served = {pid: n for pid, n in _per_process_predictions(metrics_dir).items() if n}
            if len(served) >= 2:
                break
    assert len(served) >= 2, f"one worker served everything: {served}"
    assert sum(served.values()) == sent

    status, _ = server.fetch("GET", "/metrics")
    assert status == 401

    labels = {"predictor": "loan-approval", "mode": "rule", "reason": "mode", "source": "rule", "status": "answered"}
    for _ in range(4):  # whichever worker answers the scrape, it reports the sum of both
        status, text = server.fetch("GET", "/metrics", auth=f"Bearer {TOKEN}")
        assert status == 200
        text = text.decode()
        assert value(text, "oz_predictions_total", **labels) == sent
        assert value(text, "oz_predict_latency_seconds_count", predictor="loan-approval", source="rule") == sent
        assert value(text, "oz_predict_latency_seconds_bucket", predictor="loan-approval", source="rule", le="+Inf") == sent
        assert value(text, "django_http_requests_total_by_view_transport_method_total", view="predict") == sent

    # The database-backed gauges are the same whichever worker answers.
    routing_update(predictor=loan, changes={"mode": "human"})  # reaches both workers within 2 s
    pending = 0
    deadline = time.monotonic() + 15
    while pending < 3 and time.monotonic() < deadline:
        status = predict(None)
        assert status in (200, 202)
        sent += 1
        pending += status == 202
    assert pending == 3
    for _ in range(4):
        text = server.fetch("GET", "/metrics", auth=f"Bearer {TOKEN}")[1].decode()
        assert value(text, "oz_review_queue_depth", predictor="loan-approval", kind="routed", status="open") == 3
        assert value(text, "oz_predictions_total", predictor="loan-approval") == sent

    # A worker that dies keeps its counts in the sum (gunicorn's child_exit marks it dead and
    # starts another).
    victim = next(iter(served))
    os.kill(victim, signal.SIGKILL)
    text = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if server.fetch("GET", "/healthz")[0] == 200 and (metrics_dir / f"counter_{victim}.db").exists():
                text = server.fetch("GET", "/metrics", auth=f"Bearer {TOKEN}")[1].decode()
                break
        except OSError:
            pass
        time.sleep(0.2)
    assert text is not None
    assert value(text, "oz_predictions_total", predictor="loan-approval") == sent
