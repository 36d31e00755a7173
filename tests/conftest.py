from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from tests import factories


@pytest.fixture(autouse=True)
def _media_root(settings, tmp_path):
    # Model artifacts of each test go to a folder of its own.
    settings.MEDIA_ROOT = str(tmp_path / "media")


@pytest.fixture(autouse=True)
def _fresh_explanation_budget(monkeypatch):
    # The per-process cap on sampled explanations: each test starts with a full minute's worth.
    from models_registry import explain

    monkeypatch.setattr(explain, "_sample_budget", explain.SampleBudget())


@pytest.fixture(autouse=True)
def _clear_cache():
    # Throttle counters live in the shared (Redis) cache; start each test from zero.
    from django.core.cache import cache

    from gateway import throttling

    cache.clear()
    throttling._cache_down_until = 0.0  # a test that took Redis away leaves no fail-open pause behind
    yield


@pytest.fixture
def loan(db):
    return factories.loan_predictor()


@pytest.fixture
def client_key(db):
    """(ApiClient, plaintext key) allowed on every predictor."""
    return factories.api_client_with_key()


@pytest.fixture
def reviewer(db):
    """(user, plaintext token) of a reviewer."""
    return factories.reviewer_with_token()


@pytest.fixture
def operator(db):
    """(user, plaintext token) of an operator."""
    return factories.operator_with_token()


def _api(credentials: str | None = None) -> APIClient:
    api = APIClient()
    if credentials:
        api.credentials(HTTP_AUTHORIZATION=credentials)
    return api


@pytest.fixture
def anon_api():
    return _api()


@pytest.fixture
def client_api(client_key):
    return _api(f"Bearer {client_key[1]}")


@pytest.fixture
def reviewer_api(reviewer):
    return _api(f"Token {reviewer[1]}")


@pytest.fixture
def operator_api(operator):
    return _api(f"Token {operator[1]}")


@pytest.fixture
def make_api():
    return _api


@pytest.fixture
def celery_worker_thread(transactional_db):
    """A real Celery worker consuming from the test Redis broker, in a thread of this
    process (so it uses the test database). Tests using it must commit their data, hence
    transactional_db."""
    from celery.contrib.testing.worker import start_worker

    from config.celery_app import app

    app.conf.task_always_eager = False
    with app.connection_for_write() as conn:
        # Drop messages published by earlier tests that had no worker.
        app.amqp.queues["celery"].bind(conn).purge()
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=30) as worker:
        yield worker
