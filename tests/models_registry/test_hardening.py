"""Edges found in review: inputs beyond the numeric limit, a champion from another
schema version, promotion on stale gate results, bodies that are JSON null or carry fields
a request does not take, racing rollbacks, a cache load overtaken by a change, number
outputs under the shadow gate."""
from __future__ import annotations

from datetime import timedelta

import pytest

from gateway import serving_cache, sla
from gateway.models import Prediction, Predictor
from gateway.services import prediction_create, routing_update
from models_registry.config import definition_errors
from models_registry.models import ModelVersion, ShadowPrediction, Stage, TrainingRun
from models_registry.services import PromotionRefused, model_version_promote
from models_registry.shadow import shadow_agreement
from review.models import Label
from tests import factories
from tests.gateway.helpers import error_fields, post_json, problem_body
from tests.models_registry.test_gates import _gates, _version
from tests.review.test_sla import _champion

ROLLBACK = "/predictors/loan-approval/rollback"


# --- the model cannot answer: the fallback does --------------------------------------------------

def test_an_input_beyond_the_models_numeric_range_is_refused_before_a_model_sees_it(loan, client_api):
    # Was: valid up to 1e308, so 1e39 (inf in the ONNX graph's float32) reached the model and
    # fell back with model_error, and such a value, once labelled, broke training. The
    # number limit (gateway.schema.NUMBER_LIMIT, 1e15) refuses it, field by field.
    routing_update(predictor=loan, changes={"mode": "model", "fallback": "human"})
    huge = factories.loan_input(amount=1e39, years_trading=10**39)
    problem = problem_body(post_json(client_api, "/predict/loan-approval", {"input": huge}), 422)
    assert error_fields(problem) == {"input.amount", "input.years_trading"}
    assert not Prediction.objects.exists()


def test_a_champion_trained_on_another_schema_version_does_not_answer(loan, client_api):
    champion = _champion(loan)
    routing_update(predictor=loan, changes={"mode": "model", "fallback": "human"})
    Predictor.objects.filter(pk=loan.pk).update(schema_version=champion.schema_version + 1)
    response = post_json(client_api, "/predict/loan-approval", {"input": factories.loan_input()})
    assert response.status_code == 202 and response.json()["route"]["reason"] == "model_error"


def test_one_prediction_the_sla_sweep_cannot_save_spoils_no_other(loan, monkeypatch):
    routing_update(predictor=loan, changes={"human_sla_seconds": 10, "fallback": "rule"})
    loan.routing.refresh_from_db()
    first, _ = prediction_create(predictor=loan, policy=loan.routing, client=None,
                                 clean_input=factories.loan_input(amount=3000, has_collateral=True))
    second, _ = prediction_create(predictor=loan, policy=loan.routing, client=None,
                                  clean_input=factories.loan_input(amount=3000, has_collateral=True))
    real = sla.prediction_answer

    def fails_for_the_first(*, prediction, **kwargs):
        if prediction.pk == first.pk:
            raise RuntimeError("cannot be stored")
        return real(prediction=prediction, **kwargs)

    monkeypatch.setattr(sla, "prediction_answer", fails_for_the_first)
    counts = sla.sla_enforce(now=second.sla_due_at + timedelta(seconds=1))
    assert counts == {"provisional": 1, "expired": 1}
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, first.sla_due_at) == ("expired", None)
    assert (second.status, second.provisional, second.output) == ("answered", True, "approve")


# --- promotion is judged on the evidence now ---------------------------------------------------

def test_a_version_whose_gates_were_never_applied_is_not_promoted_past_them(loan, operator_api):
    _gates(loan, {"min_metrics": {"accuracy": 0.99}})
    version = _version(loan, 1, gates=[{"gate": "onnx_parity", "passed": True, "informational": True}])
    assert version.gates_passed is None  # its worker died before the gates ran
    with pytest.raises(PromotionRefused, match=r"min_metrics.accuracy \(failed\)"):
        model_version_promote(version=version)
    response = post_json(operator_api, "/predictors/loan-approval/models/1/promote", {})
    assert response.status_code == 409
    assert ModelVersion.objects.get(pk=version.pk).stage == Stage.CANDIDATE


def test_a_version_of_another_schema_is_not_promoted_even_forced_and_a_champion_of_one_is_broken(loan, operator_api):
    old = _version(loan, 1)
    model_version_promote(version=old, reason="ship")
    stale = _version(loan, 2)
    Predictor.objects.filter(pk=loan.pk).update(schema_version=loan.schema_version + 1)  # a field was added since
    with pytest.raises(PromotionRefused, match="trained on schema version 1 and the predictor is at 2"):
        model_version_promote(version=stale, force=True, reason="try it")
    assert ModelVersion.objects.get(pk=stale.pk).stage == Stage.CANDIDATE
    # The champion from before the change answers nothing now: the health says so.
    health = operator_api.get("/predictors/loan-approval").json()["model_health"]
    assert (health["status"], health["problem"], health["version"]) == ("broken", "schema_mismatch", 1)
    assert "retrain on the current schema" in health["detail"]


def test_no_rollback_to_a_version_of_an_earlier_schema(loan, operator_api):
    model_version_promote(version=_version(loan, 1), reason="ship")
    Predictor.objects.filter(pk=loan.pk).update(schema_version=loan.schema_version + 1)
    loan.refresh_from_db()
    model_version_promote(version=_version(loan, 2), reason="retrained on the new schema")
    problem = problem_body(post_json(operator_api, ROLLBACK, {"reason": "complaints"}), 409)
    assert "v1 was trained on schema version 1 and the predictor is at 2" in problem["detail"]
    assert ModelVersion.objects.get(version=2).stage == Stage.CHAMPION


def test_a_rolled_back_version_is_refused_with_the_reason_it_was_rejected(loan, operator_api):
    for number in (1, 2):
        model_version_promote(version=_version(loan, number), reason="ship")
    assert post_json(operator_api, ROLLBACK, {"reason": "complaints"}).status_code == 200
    # A gate pending for v2 now is not why it was rejected; the rollback is, and is said first.
    _gates(loan, {"min_shadow_agreement": {"rate": 0.9, "min_requests": 10}})
    problem = problem_body(post_json(operator_api, "/predictors/loan-approval/models/2/promote", {}), 409)
    assert "not promoted: this version was rejected (rolled back to v1: complaints)" in problem["detail"]
    assert "its gates now: min_shadow_agreement (pending)" in problem["detail"]


# --- bodies -----------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/predictors/loan-approval/models/1/promote", ROLLBACK])
def test_a_json_null_body_is_422_not_an_empty_one(loan, operator_api, path):
    for number in (1, 2):
        model_version_promote(version=_version(loan, number), reason="ship")
    response = operator_api.post(path, "null", content_type="application/json")
    assert error_fields(problem_body(response, 422)) == {""}
    assert ModelVersion.objects.get(version=2).stage == Stage.CHAMPION


@pytest.mark.parametrize("body, fields", [({"estimator": "random_forest"}, {"estimator"}), ([], {""})])
def test_a_training_request_with_fields_is_refused_not_ignored(loan, operator_api, body, fields):
    # A run takes its settings from the definition: a field that looks like a setting would
    # otherwise be accepted and silently have no effect.
    problem = problem_body(post_json(operator_api, "/predictors/loan-approval/train", body), 422)
    assert error_fields(problem) == fields
    assert not TrainingRun.objects.exists()


@pytest.mark.parametrize("body", [None, {}])
def test_a_training_request_without_fields_is_queued(loan, operator_api, body):
    if body is None:
        response = operator_api.post("/predictors/loan-approval/train")
    else:
        response = post_json(operator_api, "/predictors/loan-approval/train", body)
    assert response.status_code == 202, response.content[:300]
    assert TrainingRun.objects.count() == 1


def test_rollback_with_expected_version_refuses_a_second_racing_rollback(loan, operator_api):
    for number in (1, 2, 3):
        model_version_promote(version=_version(loan, number), reason="ship")
    first = post_json(operator_api, ROLLBACK, {"reason": "v3 is bad", "expected_version": 3})
    assert first.status_code == 200 and first.json()["version"] == 2
    # A second operator saw v3 as champion too: nothing happens, v2 stays.
    second = post_json(operator_api, ROLLBACK, {"reason": "v3 is bad", "expected_version": 3})
    assert problem_body(second, 409)
    assert ModelVersion.objects.get(version=2).stage == Stage.CHAMPION
    for bad in (0, "3", True, 10**23):
        assert error_fields(problem_body(post_json(operator_api, ROLLBACK, {"expected_version": bad}), 422)) == {
            "expected_version"
        }
    assert problem_body(post_json(operator_api, ROLLBACK, {"expected_version": 9}), 409)


# --- the serving cache ------------------------------------------------------------------------

def test_a_load_overtaken_by_a_change_is_not_kept(loan, monkeypatch):
    serving_cache.serving_forget()
    real = serving_cache._load

    def load_then_a_change_commits(slug):
        state = real(slug)  # read the old rows...
        serving_cache.serving_forget(slug)  # ...while another request's change commits
        return state

    monkeypatch.setattr(serving_cache, "_load", load_then_a_change_commits)
    assert serving_cache.serving_get("loan-approval") is not None  # this request is answered
    assert "loan-approval" not in serving_cache._entries  # but the stale rows are not kept
    monkeypatch.setattr(serving_cache, "_load", real)
    serving_cache.serving_get("loan-approval")
    assert "loan-approval" in serving_cache._entries


# --- number outputs under the shadow gate -------------------------------------------------------

def test_number_outputs_agree_within_the_gates_tolerance(loan):
    def errors(gate):
        data = {"output": {"type": "number"}, "gates": {"min_shadow_agreement": gate}}
        return [e.field for e in definition_errors(data)]

    assert errors({"rate": 0.8, "min_requests": 10, "tolerance": 500}) == []
    assert errors({"rate": 0.8, "min_requests": 10}) == ["gates.min_shadow_agreement"]
    assert errors({"rate": 0.8, "min_requests": 10, "tolerance": -1}) == ["gates.min_shadow_agreement.tolerance"]
    assert errors({"rate": float("nan"), "min_requests": 10, "tolerance": 1}) == ["gates.min_shadow_agreement.rate"]

    version = _version(loan, 1)
    for model_said, human_said in (("42000", "41999.87"), ("42000", "39000")):
        prediction, _ = prediction_create(predictor=loan, policy=loan.routing, client=None, clean_input=factories.loan_input())
        ShadowPrediction.objects.create(prediction=prediction, model_version=version, output=float(model_said))
        Label.objects.create(predictor=loan, prediction=prediction, schema_version=1, input=prediction.input,
                             target=float(human_said), source="review")
    assert shadow_agreement(version=version, tolerance=500)["agreeing"] == 1
    assert shadow_agreement(version=version)["agreeing"] == 0
    assert Prediction.objects.count() == 2
