"""The whole Wizard-of-Oz loop through real HTTP, a real Celery worker on Redis, and
PostgreSQL: human answers → labels → training in the worker → promotion → model answers."""
from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import pytest

from gateway.demo import SyntheticPredictor
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)


class Http:
    def __init__(self, base: str, credentials: str):
        self.base = base
        self.credentials = credentials

    def call(self, method: str, path: str, body=None, timeout: float = 30):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Authorization", self.credentials)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                raw = response.read()
                return response.status, (json.loads(raw) if raw else None)
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")


def _until(predicate, timeout: float = 60, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def test_human_to_model_loop(live_server, celery_worker_thread, settings):
    settings.OZ_MIN_TRAINING_LABELS = 30
    predictor = factories.loan_predictor()
    _, key = factories.api_client_with_key()
    _, reviewer_token = factories.reviewer_with_token()
    _, operator_token = factories.operator_with_token()
    client = Http(live_server.url, f"Bearer {key}")
    reviewer = Http(live_server.url, f"Token {reviewer_token}")
    operator = Http(live_server.url, f"Token {operator_token}")
    world = SyntheticPredictor(predictor.schema, predictor.output_spec)

    # 1. Before any model exists, a human answers; the client polls with ?wait=.
    status, first = client.call("POST", "/predict/loan-approval", {"input": factories.loan_input()})
    assert status == 202
    assert first["status"] == "pending" and first["output"] is None
    assert first["route"]["mode"] == "human" and first["route"]["reason"] == "mode"

    polled = {}

    def poll():
        polled["result"] = client.call("GET", f"/predictions/{first['id']}?wait=20")

    poller = threading.Thread(target=poll)
    poller.start()
    status, task = reviewer.call("POST", "/review/claim")
    assert status == 200 and task["prediction"] == first["id"]
    assert task["input"]["amount"] == 12000
    status, _ = reviewer.call("POST", f"/review/tasks/{task['id']}/decision", {"output": "refer", "note": "first one"})
    assert status == 201
    poller.join(timeout=25)
    status, answered = polled["result"]
    assert status == 200
    assert answered["status"] == "answered" and answered["source"] == "human" and answered["output"] == "refer"

    # 2. More traffic; the reviewer answers from the ground truth, producing labels.
    import random

    rng = random.Random(3)
    for _ in range(59):
        status, _ = client.call("POST", "/predict/loan-approval", {"input": world.input(rng)})
        assert status == 202
    decided = 0
    while True:
        status, task = reviewer.call("POST", "/review/claim")
        if status == 204:
            break
        status, _ = reviewer.call("POST", f"/review/tasks/{task['id']}/decision", {"output": world.truth(task["input"])})
        assert status == 201
        decided += 1
    assert decided == 59

    # 3. Model mode without a champion still answers, through the human queue (the fallback).
    status, routing = operator.call("PATCH", "/predictors/loan-approval/routing", {"mode": "model", "fallback": "human", "reason": "try"})
    assert status == 200 and routing["mode"] == "model"
    status, pending = client.call("POST", "/predict/loan-approval", {"input": factories.loan_input()})
    assert status == 202 and pending["route"]["reason"] == "no_model"
    assert pending["route"]["policy_version"] == routing["version"]

    # 4. Rule mode answers at once.
    status, _ = operator.call("PATCH", "/predictors/loan-approval/routing", {"mode": "rule"})
    assert status == 200
    status, ruled = client.call(
        "POST", "/predict/loan-approval", {"input": factories.loan_input(amount=3000, has_collateral=True)}
    )
    assert status == 200 and ruled["source"] == "rule" and ruled["output"] == "approve"

    # 5. Train in the Celery worker (on Redis), then promote.
    status, run = operator.call("POST", "/predictors/loan-approval/train")
    assert status == 202 and run["status"] == "queued"
    status, _ = operator.call("POST", "/predictors/loan-approval/train")
    assert status in (202, 409)  # 409 while the first run is still active
    def run_finished():
        body = operator.call("GET", f"/training-runs/{run['id']}")[1]
        return body if body["status"] in ("succeeded", "failed") else None

    finished = _until(run_finished)
    assert finished["status"] == "succeeded", finished["error"]
    assert finished["model_version"] == 1
    assert finished["dataset"]["n_labels"] == 60
    assert len(finished["dataset"]["label_ids_sha256"]) == 64
    assert 0.0 <= finished["metrics"]["accuracy"] <= 1.0 and "f1_macro" in finished["metrics"]
    status, models = operator.call("GET", "/predictors/loan-approval/models")
    assert [m["stage"] for m in models["results"]] == ["candidate"]
    status, promoted = operator.call("POST", "/predictors/loan-approval/models/1/promote", {"reason": "first model"})
    assert status == 200 and promoted["stage"] == "champion"

    # 6. Model mode: the champion answers at once.
    status, _ = operator.call("PATCH", "/predictors/loan-approval/routing", {"mode": "model"})
    status, modelled = client.call("POST", "/predict/loan-approval", {"input": world.input(rng)})
    assert status == 200
    assert modelled["source"] == "model" and modelled["model_version"] == 1
    assert modelled["output"] in ("approve", "refer")
    assert set(modelled["scores"]) == {"approve", "refer"}
    assert abs(sum(modelled["scores"].values()) - 1) <= 1e-6 * len(modelled["scores"]) + 1e-12  # each score is rounded to 6 places
    assert modelled["confidence"] == max(modelled["scores"].values())
    status, predictor_view = client.call("GET", "/predictors/loan-approval")
    assert predictor_view["champion"]["version"] == 1
