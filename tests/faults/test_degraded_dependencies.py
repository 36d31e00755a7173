"""Unit level, in this process: what the fault tests rely on.

- A dependency that is down (the database's OperationalError/InterfaceError, a Redis
  connection error) is 503 with Retry-After on every path: DRF views (problem+json), other
  views such as the admin (an HTML page, DEBUG or not), and errors raised outside any view
  (handler500). Never a 500, a stack trace or the server's address.
- The API throttles fail open when the cache (Redis) is down, logging it once per pause.
- The model health check behind GET /predictors/<slug> `model_health`, the
  `oz_model_artifact_ok` gauge and the `oz_model_load_failures_total` counter.
- The outbox sweeper's grace period is a setting."""
from __future__ import annotations

import hashlib
import socket

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import InterfaceError, OperationalError
from django.test import Client
from django.utils import timezone
from prometheus_client import REGISTRY
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway import outbox, throttling
from gateway.errors import RETRY_AFTER_SECONDS, handler500
from gateway.metrics import database_metrics
from gateway.models import WebhookDelivery
from gateway.services import prediction_create, routing_update
from models_registry import serving
from models_registry.models import ModelVersion, Stage, TrainingRun
from tests import factories

pytestmark = pytest.mark.django_db

DOWN = [
    OperationalError('connection to server at "10.1.2.3", port 5432 failed: Connection refused'),
    InterfaceError("connection already closed"),
    RedisConnectionError("Error 111 connecting to 10.1.2.3:6379. Connection refused."),
]


def _raiser(exc):
    def down(*args, **kwargs):
        raise exc

    return down


def _assert_clean_503(response, content_type: str) -> str:
    assert response.status_code == 503
    assert response["Content-Type"].startswith(content_type)
    assert response["Retry-After"] == str(RETRY_AFTER_SECONDS)
    text = response.content.decode()
    assert "Traceback" not in text and "10.1.2.3" not in text and "connection" not in text.lower()
    return text


# --- 503, not 500 ------------------------------------------------------------------------------

@pytest.mark.parametrize("exc", DOWN, ids=lambda e: type(e).__name__)
def test_an_api_view_whose_dependency_is_down_answers_503_problem_json(client_api, loan, monkeypatch, exc):
    monkeypatch.setattr("gateway.api.serving_get", _raiser(exc))
    response = client_api.post("/predict/loan-approval", {"input": factories.loan_input()}, format="json")
    _assert_clean_503(response, "application/problem+json")
    body = response.json()
    assert (body["status"], body["title"], body["type"]) == (503, "Service unavailable", "https://oz.invalid/problems/unavailable")


@pytest.mark.parametrize("debug", [False, True])
def test_the_admin_with_the_database_down_shows_a_503_page_not_a_traceback(settings, admin_user, monkeypatch, debug):
    settings.DEBUG = debug
    browser = Client()
    browser.force_login(admin_user)
    # The session (and so the user) is read inside the admin's view: the database is down.
    monkeypatch.setattr("django.contrib.sessions.backends.db.SessionStore.load", _raiser(DOWN[0]))
    response = browser.get("/admin/")
    assert "Service unavailable" in _assert_clean_503(response, "text/html")


def test_an_error_raised_outside_any_view_is_503_too(monkeypatch):
    # The session middleware fails before any view runs: Django's handler500 answers.
    monkeypatch.setattr("django.contrib.sessions.middleware.SessionMiddleware.process_request", _raiser(DOWN[0]))
    browser = Client(raise_request_exception=False)
    _assert_clean_503(browser.get("/predictors"), "application/problem+json")
    _assert_clean_503(browser.get("/admin/"), "text/html")


def test_handler500_keeps_500_for_real_bugs(rf):
    try:
        raise OperationalError("the database system is shutting down")
    except OperationalError:
        assert handler500(rf.get("/predict/x")).status_code == 503
    try:
        raise KeyError("a bug")
    except KeyError:
        response = handler500(rf.get("/predict/x"))
    assert response.status_code == 500 and "Retry-After" not in response


# --- the throttles fail open -------------------------------------------------------------------

def _dead_redis() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"redis://127.0.0.1:{s.getsockname()[1]}/0"  # nothing listens there once closed


def test_the_throttles_let_requests_through_when_redis_is_down(settings, client_api, loan, monkeypatch):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": _dead_redis(),
                                   "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1}}}
    monkeypatch.setattr(throttling, "_cache_down_until", 0.0)
    warnings = []
    monkeypatch.setattr(throttling.logger, "warning", lambda *args, **kwargs: warnings.append(args[0] % args[1:]))
    statuses = [client_api.post("/predict/loan-approval", {"input": factories.loan_input()}, format="json").status_code
                for _ in range(3)]
    assert statuses == [202, 202, 202]  # loan-approval routes to humans
    # One line, then the cache is left alone for a few seconds (no failed connection per request).
    assert len(warnings) == 1 and "cache is unreachable" in warnings[0] and "ClientRateThrottle" in warnings[0]
    # /readyz says what is wrong.
    ready = client_api.get("/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["redis"].startswith("error")


def test_the_throttles_still_count_when_redis_is_up(client_api, loan, monkeypatch):
    from rest_framework.throttling import SimpleRateThrottle

    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {**SimpleRateThrottle.THROTTLE_RATES, "client": "2/min"})
    statuses = [client_api.post("/predict/loan-approval", {"input": factories.loan_input()}, format="json").status_code
                for _ in range(3)]
    assert statuses == [202, 202, 429]


# --- model health ------------------------------------------------------------------------------

def _champion_with_file(loan, data: bytes = b"model bytes") -> ModelVersion:
    name = default_storage.save("models/loan-approval/run-1/v1.skops", ContentFile(data))
    run = TrainingRun.objects.create(predictor=loan, status=TrainingRun.Status.SUCCEEDED)
    return ModelVersion.objects.create(
        predictor=loan, version=1, run=run, schema_version=loan.schema_version, artifact=name,
        artifact_sha256=hashlib.sha256(data).hexdigest(), stage=Stage.CHAMPION, serving_format="skops",
    )


def _artifact_gauge() -> dict:
    family = next(f for f in database_metrics() if f.name == "oz_model_artifact_ok")
    return {tuple(labels): value for labels, value in family.samples}


def test_model_health_says_when_the_served_file_is_missing_or_corrupt(loan, client_api):
    assert client_api.get("/predictors/loan-approval").json()["model_health"] is None  # no champion
    version = _champion_with_file(loan)
    health = client_api.get("/predictors/loan-approval").json()["model_health"]
    assert (health["status"], health["problem"], health["version"], health["format"]) == ("ok", None, 1, "skops")
    assert _artifact_gauge() == {("loan-approval", "1", "champion", "skops"): 1.0}

    with default_storage.open(version.artifact.name, "wb") as handle:
        handle.write(b"tampered, and longer than before")
    health = client_api.get("/predictors/loan-approval").json()["model_health"]
    assert (health["status"], health["problem"], health["fallback"]) == ("broken", "corrupt", loan.routing.fallback)
    assert "does not match" in health["detail"]
    assert _artifact_gauge() == {("loan-approval", "1", "champion", "skops"): 0.0}

    default_storage.delete(version.artifact.name)
    health = client_api.get("/predictors/loan-approval").json()["model_health"]
    assert (health["status"], health["problem"]) == ("broken", "missing")


def test_a_failed_load_is_counted_once_and_the_request_falls_back(loan):
    version = _champion_with_file(loan)
    default_storage.delete(version.artifact.name)
    labels = {"predictor": "loan-approval", "model_version": "1", "reason": "missing"}
    before = REGISTRY.get_sample_value("oz_model_load_failures_total", labels) or 0
    policy = routing_update(predictor=loan, changes={"mode": "model", "fallback": "human"})
    serving.loaded_clear()
    try:
        for _ in range(3):
            prediction, _ = prediction_create(predictor=loan, policy=policy, client=None,
                                              clean_input=factories.loan_input(), live_versions=(version, None))
            assert prediction.status == "pending" and prediction.route["reason"] == "model_error"
    finally:
        serving.loaded_clear()
    # The failure is remembered for a while: one load attempt, one count, three fallbacks.
    assert REGISTRY.get_sample_value("oz_model_load_failures_total", labels) == before + 1


# --- the outbox ----------------------------------------------------------------------------------

def test_the_outbox_grace_period_is_a_setting(settings, monkeypatch, loan):
    sent = []
    monkeypatch.setattr(outbox, "task_send", lambda task, *args: sent.append(args) or True)
    prediction, _ = prediction_create(predictor=loan, policy=loan.routing, client=None, clean_input=factories.loan_input())
    delivery = WebhookDelivery.objects.create(prediction=prediction, event="prediction.answered", url="http://x.invalid/",
                                              payload={}, next_attempt_at=timezone.now())
    settings.OZ_OUTBOX_GRACE_SECONDS = 30
    assert outbox.outbox_resend()["webhooks"] == 0  # too fresh: its own message is on the way
    settings.OZ_OUTBOX_GRACE_SECONDS = 0
    assert outbox.outbox_resend()["webhooks"] == 1 and sent == [(delivery.pk,)]
