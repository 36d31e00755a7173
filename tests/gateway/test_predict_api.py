"""POST /predict/<slug>, GET /predictions/<id>[?wait=N], POST /predictions/<id>/outcome."""
from __future__ import annotations

import threading
import time

import pytest
from django.db import connection

from gateway.models import Prediction, WebhookDelivery
from gateway.services import routing_update
from review.models import Label, ReviewTask
from review.services import review_task_claim_next, review_task_decide
from tests import factories

from .helpers import error_fields, post_json, problem_body

pytestmark = pytest.mark.django_db

PREDICTION_KEYS = {
    "id", "predictor", "status", "output", "confidence", "scores", "source", "provisional",
    "model_version", "explanation", "route", "created_at", "answered_at", "appeal_url", "links",
}


def answer_as_reviewer(reviewer, output="approve"):
    task = review_task_claim_next(reviewer=reviewer)
    assert task is not None
    return review_task_decide(task_id=task.pk, reviewer=reviewer, output=output)


# ---------------------------------------------------------------------------------------
# human mode
# ---------------------------------------------------------------------------------------

def test_human_mode_answers_202_pending(predict, client_key):
    response = predict({"input": factories.loan_input()})
    assert response.status_code == 202
    body = response.json()
    assert body.keys() == PREDICTION_KEYS
    assert body["predictor"] == "loan-approval"
    assert body["status"] == "pending"
    assert body["output"] is None and body["source"] is None and body["answered_at"] is None
    assert body["provisional"] is False
    assert body["route"] == {"mode": "human", "reason": "mode", "policy_version": 1}
    assert body["links"] == {"self": f"/predictions/{body['id']}"}
    assert response["Location"] == f"/predictions/{body['id']}"
    assert "Idempotent-Replayed" not in response
    prediction = Prediction.objects.get(pk=body["id"])
    assert prediction.client == client_key[0]
    assert prediction.schema_version == 1


def test_the_prediction_and_its_review_task_are_created_together(predict):
    body = predict({"input": factories.loan_input()}).json()
    task = ReviewTask.objects.get()
    assert str(task.prediction_id) == body["id"]
    assert task.kind == "routed"
    assert task.status == "open"
    assert task.predictor.slug == "loan-approval"


def test_the_stored_input_is_the_clean_input(predict):
    body = predict({"input": {"amount": 900, "sector": None, "note": None, "has_collateral": True}}).json()
    assert Prediction.objects.get(pk=body["id"]).input == {"amount": 900, "has_collateral": True}


def test_a_reviewer_answer_reaches_the_client(predict, client_api, reviewer):
    body = predict({"input": factories.loan_input()}).json()
    answer_as_reviewer(reviewer[0], "refer")
    response = client_api.get(f"/predictions/{body['id']}")
    assert response.status_code == 200
    got = response.json()
    assert got["id"] == body["id"]
    assert got["status"] == "answered"
    assert got["output"] == "refer"
    assert got["source"] == "human"
    assert got["answered_at"] is not None
    assert got["route"] == body["route"]  # the route taken does not change


# ---------------------------------------------------------------------------------------
# GET /predictions/<id>: who may read it
# ---------------------------------------------------------------------------------------

def test_the_owner_reads_its_prediction(predict, client_api):
    created = predict({"input": factories.loan_input()}).json()
    response = client_api.get(f"/predictions/{created['id']}")
    assert response.status_code == 202  # still pending
    assert response.json() == created


def test_another_client_gets_404(predict, other_client_api):
    created = predict({"input": factories.loan_input()}).json()
    problem_body(other_client_api.get(f"/predictions/{created['id']}"), 404)
    problem_body(post_json(other_client_api, f"/predictions/{created['id']}/outcome", {"output": "approve"}), 404)
    assert not Label.objects.exists()


def test_an_operator_reads_any_prediction(predict, operator_api):
    created = predict({"input": factories.loan_input()}).json()
    response = operator_api.get(f"/predictions/{created['id']}")
    assert response.status_code == 202
    assert response.json()["id"] == created["id"]


def test_a_reviewer_cannot_read_predictions_through_the_client_api(predict, reviewer_api):
    created = predict({"input": factories.loan_input()}).json()
    response = reviewer_api.get(f"/predictions/{created['id']}")
    assert response.status_code in (403, 404)
    problem_body(response)


def test_anonymous_gets_401(predict, anon_api):
    created = predict({"input": factories.loan_input()}).json()
    problem_body(anon_api.get(f"/predictions/{created['id']}"), 401)


@pytest.mark.parametrize("prediction_id", ["7f0e4a5e-4c39-4d53-9c3c-9a0d0e0a0b0c", "not-a-uuid", "1"])
def test_unknown_prediction_is_404(client_api, prediction_id):
    problem_body(client_api.get(f"/predictions/{prediction_id}"), 404)


# ---------------------------------------------------------------------------------------
# ?wait=
# ---------------------------------------------------------------------------------------

def test_wait_on_an_answered_prediction_returns_at_once(predict, client_api, reviewer):
    created = predict({"input": factories.loan_input()}).json()
    answer_as_reviewer(reviewer[0])
    started = time.monotonic()
    response = client_api.get(f"/predictions/{created['id']}?wait=30")
    assert time.monotonic() - started < 1
    assert response.status_code == 200
    assert response.json()["output"] == "approve"


def test_wait_on_a_pending_prediction_holds_then_answers_202(predict, client_api):
    created = predict({"input": factories.loan_input()}).json()
    started = time.monotonic()
    response = client_api.get(f"/predictions/{created['id']}?wait=1")
    elapsed = time.monotonic() - started
    assert response.status_code == 202
    assert response.json()["status"] == "pending"
    assert 0.9 <= elapsed < 3


def test_wait_in_the_predict_body_holds_too(predict):
    started = time.monotonic()
    response = predict({"input": factories.loan_input(), "wait": 1})
    assert response.status_code == 202
    assert 0.9 <= time.monotonic() - started < 3


@pytest.mark.parametrize("wait", ["-1", "31", "abc", "1.5", "1e3"])
def test_wait_out_of_range_or_not_a_number_is_422(predict, client_api, wait):
    created = predict({"input": factories.loan_input()}).json()
    body = problem_body(client_api.get(f"/predictions/{created['id']}?wait={wait}"), 422)
    assert error_fields(body) == {"wait"}


@pytest.mark.django_db(transaction=True)
def test_wait_returns_as_soon_as_a_reviewer_answers(loan, client_api, reviewer):
    created = post_json(client_api, "/predict/loan-approval", {"input": factories.loan_input()}).json()
    failures = []

    def decide_later():
        try:
            time.sleep(0.5)
            answer_as_reviewer(reviewer[0], "refer")
        except Exception as exc:
            failures.append(exc)
        finally:
            connection.close()

    worker = threading.Thread(target=decide_later)
    started = time.monotonic()
    worker.start()
    response = client_api.get(f"/predictions/{created['id']}?wait=20")
    elapsed = time.monotonic() - started
    worker.join(10)
    assert not failures
    assert response.status_code == 200
    assert response.json()["output"] == "refer"
    assert 0.4 <= elapsed < 3  # not the full 20 s


# ---------------------------------------------------------------------------------------
# rule and model modes
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "data, output",
    [
        (factories.loan_input(amount=3000, has_collateral=True, years_trading=0), "approve"),  # rule 0
        (factories.loan_input(amount=12000, years_trading=4), "approve"),  # rule 1
        (factories.loan_input(amount=12000, years_trading=1), "refer"),  # default
        (factories.loan_input(amount=3000, has_collateral=False, years_trading=1), "refer"),  # default
        ({"amount": 3000}, "refer"),  # missing fields match no comparison
    ],
)
def test_rule_mode_answers_200_with_the_rule_outcome(predict, rule_mode, data, output):
    response = predict({"input": data})
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "answered"
    assert body["output"] == output
    assert body["source"] == "rule"
    assert body["confidence"] is None and body["scores"] is None and body["model_version"] is None
    assert body["answered_at"] is not None
    assert body["route"] == {"mode": "rule", "reason": "mode", "policy_version": rule_mode.version}
    assert not ReviewTask.objects.exists()
    assert Prediction.objects.get(pk=body["id"]).output == output


def test_model_mode_without_a_champion_goes_to_reviewers(predict, loan):
    policy = routing_update(predictor=loan, changes={"mode": "model", "fallback": "human"})
    response = predict({"input": factories.loan_input()})
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "pending"
    assert body["route"]["mode"] == "model"
    assert body["route"]["reason"] == "no_model"
    assert body["route"]["policy_version"] == policy.version
    task = ReviewTask.objects.get()
    assert str(task.prediction_id) == body["id"]
    assert "no champion" in task.reason


# ---------------------------------------------------------------------------------------
# callback_url
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("url", ["ftp://client.example/hook", "not a url", "javascript:alert(1)",
                                 "http://", 42, ["https://client.example"], "https://" + "a" * 2000 + ".example"])
def test_invalid_callback_urls_are_422(predict, url):
    body = problem_body(predict({"input": factories.loan_input(), "callback_url": url}), 422)
    assert "callback_url" in error_fields(body)
    assert not Prediction.objects.exists()


def test_a_callback_url_is_kept_and_gets_the_answer(predict, rule_mode):
    url = "https://client.example/hooks/oz"
    body = predict({"input": factories.loan_input(), "callback_url": url}).json()
    assert Prediction.objects.get(pk=body["id"]).callback_url == url
    delivery = WebhookDelivery.objects.get()
    assert delivery.url == url
    assert delivery.event == "prediction.answered"
    assert delivery.payload["data"]["id"] == body["id"]
    assert delivery.payload["data"]["output"] == body["output"]


def test_no_callback_url_no_webhook(predict, rule_mode):
    assert predict({"input": factories.loan_input()}).status_code == 200
    assert not WebhookDelivery.objects.exists()


# ---------------------------------------------------------------------------------------
# POST /predictions/<id>/outcome
# ---------------------------------------------------------------------------------------

def test_an_outcome_becomes_a_label_with_source_outcome(predict, client_api, rule_mode):
    created = predict({"input": factories.loan_input()}).json()
    response = post_json(client_api, f"/predictions/{created['id']}/outcome", {"output": "refer"})
    assert response.status_code == 201
    label = Label.objects.get()
    assert response.json() == {"label_id": label.pk, "prediction": created["id"], "output": "refer"}
    assert label.source == "outcome"
    assert label.target == "refer"
    assert str(label.prediction_id) == created["id"]
    assert label.input == Prediction.objects.get(pk=created["id"]).input
    assert label.predictor.slug == "loan-approval"


def test_an_outcome_reported_again_replaces_the_earlier_outcome_only(predict, client_api, rule_mode):
    from review.services import label_record

    created = predict({"input": factories.loan_input()}).json()
    prediction = Prediction.objects.get(pk=created["id"])
    reviewed = label_record(prediction=prediction, target="approve", source="review")
    first = post_json(client_api, f"/predictions/{created['id']}/outcome", {"output": "approve"}).json()
    last = post_json(client_api, f"/predictions/{created['id']}/outcome", {"output": "refer"}).json()
    # The outcomes do not pile up: the last one is current, the earlier one stays, marked.
    current = dict(Label.objects.filter(prediction=prediction, superseded_by__isnull=True).values_list("pk", "target"))
    assert current == {reviewed.pk: "approve", last["label_id"]: "refer"}
    assert Label.objects.get(pk=first["label_id"]).superseded_by_id == last["label_id"]
    # The reviewer's label is theirs to change (the shadow gate and appeals read it).
    assert Label.objects.get(pk=reviewed.pk).superseded_by_id is None


@pytest.mark.parametrize(
    "body, field",
    [
        ({"output": "maybe"}, "output"),
        ({"output": None}, "output"),
        ({"output": 1}, "output"),
        ({}, "output"),
        ({"output": "approve", "note": "x"}, "note"),
    ],
)
def test_an_invalid_outcome_is_422_and_stores_nothing(predict, client_api, body, field):
    created = predict({"input": factories.loan_input()}).json()
    problem = problem_body(post_json(client_api, f"/predictions/{created['id']}/outcome", body), 422)
    assert field in error_fields(problem)
    assert not Label.objects.exists()


def test_an_outcome_body_must_be_an_object(predict, client_api):
    created = predict({"input": factories.loan_input()}).json()
    problem_body(post_json(client_api, f"/predictions/{created['id']}/outcome", ["approve"]), 422)
    assert not Label.objects.exists()


def test_only_api_clients_report_outcomes(predict, operator_api):
    created = predict({"input": factories.loan_input()}).json()
    problem_body(post_json(operator_api, f"/predictions/{created['id']}/outcome", {"output": "approve"}), 403)
    assert not Label.objects.exists()


# ---------------------------------------------------------------------------------------
# GET /predictors
# ---------------------------------------------------------------------------------------

def test_predictor_detail_shows_schema_output_routing_and_champion(client_api, loan):
    response = client_api.get("/predictors/loan-approval")
    assert response.status_code == 200
    body = response.json()
    assert body["slug"] == "loan-approval"
    assert body["input"]["amount"]["type"] == "number"
    assert list(body["input"]) == ["amount", "years_trading", "sector", "has_collateral", "note"]  # as declared
    assert body["output"] == {"type": "label", "labels": ["approve", "refer"]}
    assert body["routing"]["mode"] == "human"
    assert body["routing"]["version"] == 1
    assert body["champion"] is None
    assert body["has_rules"] is True


def test_unknown_predictor_detail_is_404(client_api, loan):
    problem_body(client_api.get("/predictors/nope"), 404)
