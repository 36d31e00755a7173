"""Two real web server processes (gunicorn) on the test PostgreSQL database: a change made
through one — the routing kill switch, a promotion, a rollback — is served by the other
within 5 seconds, without a restart. Each process keeps its own serving cache
(OZ_SERVING_CACHE_SECONDS); this is the proof that the cache never outlives the promise."""
from __future__ import annotations

import os
import sys
import time

import pytest
from django.conf import settings
from django.urls import Resolver404, resolve

from gateway.models import Predictor
from gateway.services import routing_update
from models_registry.models import ModelVersion
from models_registry.services import model_version_promote
from tests import factories
from tests.servers import ROOT, Server, database_url

PROPAGATION_SECONDS = 5


def _until(check, what: str) -> float:
    """Poll `check` until it returns true; the seconds it took (at most PROPAGATION_SECONDS)."""
    start = time.monotonic()
    last = None
    while time.monotonic() - start < PROPAGATION_SECONDS:
        last = check()
        if last is True:
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {PROPAGATION_SECONDS} s (last: {last})")


def _has_route(path: str) -> bool:
    try:
        resolve(path)
    except Resolver404:
        return False
    return True


@pytest.fixture
def servers(transactional_db, tmp_path):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": database_url(),
        "DATABASE_CONN_MAX_AGE": "0",
        "OZ_MEDIA_ROOT": settings.MEDIA_ROOT,  # the artifacts this test trains
        "OZ_SERVING_CACHE_SECONDS": "2",
        "OZ_THROTTLE_CLIENT": "1000000/min",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "PYTHONPATH": str(ROOT),
    }
    started = [Server("A", env, tmp_path), Server("B", env, tmp_path)]
    try:
        for server in started:
            server.wait_ready()
        yield started
    finally:
        for server in started:
            server.stop()


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(sys.platform == "win32", reason="gunicorn is POSIX only")
def test_changes_through_one_process_reach_the_other_within_five_seconds(servers):
    a, b = servers
    loan = factories.loan_predictor()
    _, key = factories.api_client_with_key()
    _, operator_token = factories.operator_with_token()
    first = model_version_promote(version=factories.trained_version(loan, seed=3))
    second = factories.trained_version(loan, seed=5)
    routing_update(predictor=loan, changes={"mode": "model"})
    client, operator = f"Bearer {key}", f"Token {operator_token}"

    def predict_on_b() -> tuple[int, dict]:
        return b.call("POST", "/predict/loan-approval", {"input": factories.loan_input()}, auth=client)

    # B answers with the model, and its cache is warm.
    _until(lambda: predict_on_b()[0] == 200, "B answering with the model")
    status, body = predict_on_b()
    assert status == 200 and body["source"] == "model" and body["model_version"] == first.version

    # 1. The kill switch, through A: B sends requests to the humans within 5 s.
    status, routing = a.call("PATCH", "/predictors/loan-approval/routing", {"mode": "human", "reason": "kill switch"},
                             auth=operator)
    assert status == 200 and routing["mode"] == "human"

    def b_routes_to_humans():
        status, body = predict_on_b()
        return (status == 202 and body["route"]["mode"] == "human" and body["route"]["policy_version"] == routing["version"]) \
            or (status, body.get("route"))

    _until(b_routes_to_humans, "B routing to humans after the kill switch")

    # Back to the model (and B's cache warm again) before the promotion.
    status, _ = a.call("PATCH", "/predictors/loan-approval/routing", {"mode": "model"}, auth=operator)
    assert status == 200
    _until(lambda: predict_on_b()[0] == 200, "B answering with the model again")

    # 2. A promotion through A: B serves the new version within 5 s.
    status, promoted = a.call("POST", f"/predictors/loan-approval/models/{second.version}/promote",
                              {"force": True, "reason": "two-process test"}, auth=operator)
    assert status == 200, promoted
    assert ModelVersion.objects.get(pk=second.pk).stage == "champion"

    def b_serves(version):
        def check():
            status, body = predict_on_b()
            return (status == 200 and body["model_version"] == version) or (status, body.get("model_version"))
        return check

    _until(b_serves(second.version), f"B serving v{second.version} after the promotion")

    # 3. A rollback through A, where the API has it: B serves the earlier champion again.
    if not _has_route("/predictors/loan-approval/rollback"):
        return
    status, restored = a.call("POST", "/predictors/loan-approval/rollback", {"reason": "two-process test"}, auth=operator)
    assert status == 200, restored
    assert restored.get("version", first.version) == first.version
    _until(b_serves(first.version), f"B serving v{first.version} after the rollback")
    assert Predictor.objects.get(pk=loan.pk).routing.mode == "model"
