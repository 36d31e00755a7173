"""Idempotency-Key on POST /predict: a retry returns the same prediction and creates nothing."""
from __future__ import annotations

import json
import threading

import pytest
from django.db import connection
from rest_framework.test import APIClient

from gateway import services
from gateway.models import Prediction, WebhookDelivery
from gateway.services import routing_update
from review.models import ReviewTask
from tests import factories

from .helpers import post_json, problem_body

pytestmark = pytest.mark.django_db

BODY = {"input": factories.loan_input(), "callback_url": "https://client.example/hook"}


def counts():
    return Prediction.objects.count(), ReviewTask.objects.count(), WebhookDelivery.objects.count()


def test_a_retry_returns_the_same_prediction_and_creates_nothing(predict):
    first = predict(BODY, HTTP_IDEMPOTENCY_KEY="order-42")
    assert first.status_code == 202
    assert "Idempotent-Replayed" not in first
    before = counts()
    assert before[:2] == (1, 1)

    again = predict(BODY, HTTP_IDEMPOTENCY_KEY="order-42")
    assert again.status_code == 202
    assert again["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert again.json() == first.json()
    assert again["Location"] == first["Location"]
    assert counts() == before


def test_a_retry_of_an_answered_request_replays_the_answer_even_after_routing_changed(predict, loan, rule_mode):
    first = predict(BODY, HTTP_IDEMPOTENCY_KEY="k1")
    assert first.status_code == 200
    before = counts()
    assert before[2] == 1  # one prediction.answered webhook
    routing_update(predictor=loan, changes={"mode": "human"})
    again = predict(BODY, HTTP_IDEMPOTENCY_KEY="k1")
    assert again.status_code == 200
    assert again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert counts() == before  # no review task, no second webhook


def test_key_order_and_whitespace_of_the_body_do_not_matter(predict, client_api):
    first = predict(BODY, HTTP_IDEMPOTENCY_KEY="k2")
    reordered = json.dumps({"callback_url": BODY["callback_url"], "input": dict(reversed(list(BODY["input"].items())))}, indent=2)
    again = client_api.post("/predict/loan-approval", data=reordered, content_type="application/json",
                            HTTP_IDEMPOTENCY_KEY="k2")
    assert again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert Prediction.objects.count() == 1


def test_a_retry_may_change_how_long_it_waits(predict):
    first = predict(BODY, HTTP_IDEMPOTENCY_KEY="order-43")
    again = predict({**BODY, "wait": 1, "explain": True}, HTTP_IDEMPOTENCY_KEY="order-43")
    assert again.status_code == 202 and again.json()["id"] == first.json()["id"]
    assert Prediction.objects.count() == 1


@pytest.mark.parametrize(
    "other_body",
    [
        {**BODY, "input": factories.loan_input(amount=12001)},
        {"input": BODY["input"]},  # without the callback_url
        {**BODY, "callback_url": "https://client.example/other"},
        {**BODY, "input": {**BODY["input"], "note": "hello"}},
    ],
)
def test_the_same_key_with_another_body_is_409(predict, other_body):
    first = predict(BODY, HTTP_IDEMPOTENCY_KEY="k3")
    before = counts()
    response = predict(other_body, HTTP_IDEMPOTENCY_KEY="k3")
    problem = problem_body(response, 409)
    assert "Idempotency-Key" in problem["detail"]
    assert counts() == before
    # The original is untouched and still replayable.
    assert predict(BODY, HTTP_IDEMPOTENCY_KEY="k3").json()["id"] == first.json()["id"]


def test_the_same_key_on_another_predictor_is_409(predict, tmp_path):
    from gateway.definitions import predictors_load

    path = tmp_path / "loan2.yaml"
    path.write_text((factories.DEMO_PREDICTORS / "loan-approval.yaml").read_text().replace("slug: loan-approval", "slug: loan-two"))
    predictors_load(path)
    predict(BODY, HTTP_IDEMPOTENCY_KEY="k4")
    problem_body(predict(BODY, slug="loan-two", HTTP_IDEMPOTENCY_KEY="k4"), 409)
    assert Prediction.objects.count() == 1


def test_an_invalid_retry_is_still_a_422_not_a_replay(predict):
    predict(BODY, HTTP_IDEMPOTENCY_KEY="k5")
    problem_body(predict({"input": {"amount": -1}}, HTTP_IDEMPOTENCY_KEY="k5"), 422)
    assert Prediction.objects.count() == 1


def test_keys_are_per_client(predict, other_client_api):
    mine = predict(BODY, HTTP_IDEMPOTENCY_KEY="shared-key")
    theirs = predict(BODY, api=other_client_api, HTTP_IDEMPOTENCY_KEY="shared-key")
    assert mine.status_code == theirs.status_code == 202
    assert "Idempotent-Replayed" not in theirs
    assert mine.json()["id"] != theirs.json()["id"]
    assert counts()[:2] == (2, 2)
    # And another client's different body under the same key is not a conflict either.
    assert predict({"input": {"amount": 1}}, api=other_client_api, HTTP_IDEMPOTENCY_KEY="other").status_code == 202


def test_without_a_key_every_request_is_new(predict):
    ids = {predict(BODY).json()["id"] for _ in range(3)}
    assert len(ids) == 3
    assert counts()[:2] == (3, 3)


def test_a_key_of_255_characters_is_accepted(predict):
    key = "k" * 255
    first = predict(BODY, HTTP_IDEMPOTENCY_KEY=key)
    assert first.status_code == 202
    assert predict(BODY, HTTP_IDEMPOTENCY_KEY=key).json()["id"] == first.json()["id"]


# ---------------------------------------------------------------------------------------
# Two requests with the same key at the same moment
# ---------------------------------------------------------------------------------------

def _race(monkeypatch, bodies: list[dict], credentials: list[str]) -> list:
    """POST each body at once from its own thread (own DB connection), with both requests
    held after their "seen this key before?" check until all have made it, so they really
    race to insert."""
    barrier = threading.Barrier(len(bodies), timeout=10)
    original = services.route_decide

    def route_decide_after_everyone_checked(**kwargs):
        barrier.wait()
        return original(**kwargs)

    monkeypatch.setattr(services, "route_decide", route_decide_after_everyone_checked)
    results: list = [None] * len(bodies)

    def call(i):
        try:
            api = APIClient()
            api.credentials(HTTP_AUTHORIZATION=credentials[i])
            results[i] = post_json(api, "/predict/loan-approval", bodies[i], HTTP_IDEMPOTENCY_KEY="race-1")
        except Exception as exc:
            results[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(isinstance(r, Exception) for r in results), results
    return results


@pytest.mark.django_db(transaction=True)
def test_concurrent_retries_create_exactly_one_prediction(loan, client_key, monkeypatch):
    credentials = [f"Bearer {client_key[1]}"] * 2
    first, second = _race(monkeypatch, [BODY, BODY], credentials)
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"]
    assert sorted(r.get("Idempotent-Replayed", "") for r in (first, second)) == ["", "true"]
    assert Prediction.objects.count() == 1
    assert ReviewTask.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_with_one_key_and_two_bodies_give_one_prediction_and_a_409(loan, client_key, monkeypatch):
    other = {**BODY, "input": factories.loan_input(amount=99)}
    credentials = [f"Bearer {client_key[1]}"] * 2
    responses = _race(monkeypatch, [BODY, other], credentials)
    assert sorted(r.status_code for r in responses) == [202, 409]
    assert Prediction.objects.count() == 1
    assert ReviewTask.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_of_two_clients_with_one_key_are_independent(loan, client_key, monkeypatch):
    _, other_key = factories.api_client_with_key(name="globex")
    responses = _race(monkeypatch, [BODY, BODY], [f"Bearer {client_key[1]}", f"Bearer {other_key}"])
    assert [r.status_code for r in responses] == [202, 202]
    assert responses[0].json()["id"] != responses[1].json()["id"]
    assert Prediction.objects.count() == 2
