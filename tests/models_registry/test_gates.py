"""Promotion gates: each gate passing and failing, the stage following the results (failed →
rejected, shadow pending → challenger, all passed → champion with auto_promote), the sweep
that re-evaluates pending shadow gates, and forcing past a gate needing a reason."""
from __future__ import annotations

import pytest

from gateway.models import Predictor
from gateway.services import prediction_create, routing_update
from models_registry.gates import AUTO_PROMOTE_REASON, shadow_gates_sweep, version_gates_apply
from models_registry.models import ModelVersion, ShadowPrediction, Stage, TrainingRun
from models_registry.services import PromotionRefused, gates_blocking, model_version_promote
from models_registry.tasks import shadow_gates_sweep as shadow_gates_sweep_task
from review.models import Label
from tests import factories

pytestmark = pytest.mark.django_db

GOOD = {"accuracy": 0.9, "f1_macro": 0.88, "roc_auc": 0.93, "log_loss": 0.3, "brier": 0.1}


def _gates(predictor: Predictor, gates: dict, auto_promote: bool = False) -> Predictor:
    Predictor.objects.filter(pk=predictor.pk).update(gates=gates, auto_promote=auto_promote)
    predictor.refresh_from_db()
    return predictor


def _version(predictor, number: int, *, metrics=None, champion_metrics=None, fairness=None, n_labels=200,
             stage=Stage.CANDIDATE, gates=None) -> ModelVersion:
    metrics = dict(GOOD if metrics is None else metrics)
    run = TrainingRun.objects.create(
        predictor=predictor, status=TrainingRun.Status.SUCCEEDED, metrics=metrics,
        champion_metrics=champion_metrics or {}, fairness=fairness or {}, dataset={"n_labels": n_labels},
    )
    return ModelVersion.objects.create(
        predictor=predictor, version=number, run=run, schema_version=predictor.schema_version,
        **factories.stored_artifact(f"models/{predictor.slug}/v{number}.skops"), metrics=metrics,
        stage=stage, gates=gates or [],
    )


def _result(version, gate: str) -> dict:
    return next(g for g in version.gates if g["gate"] == gate)


# --- each gate, passing and failing ---------------------------------------------------------

@pytest.mark.parametrize(
    "gates, overrides, gate, passed",
    [
        ({"min_labels": 100}, {}, "min_labels", True),
        ({"min_labels": 500}, {}, "min_labels", False),
        ({"min_metrics": {"accuracy": 0.85}}, {}, "min_metrics.accuracy", True),
        ({"min_metrics": {"accuracy": 0.95}}, {}, "min_metrics.accuracy", False),
        ({"min_metrics": {"roc_auc": 0.5}}, {"metrics": {**GOOD, "roc_auc": None}}, "min_metrics.roc_auc", False),
        ({"max_metrics": {"log_loss": 0.5}}, {}, "max_metrics.log_loss", True),
        ({"max_metrics": {"log_loss": 0.2}}, {}, "max_metrics.log_loss", False),
        ({"max_metrics": {"brier": 0.2}}, {"metrics": {"accuracy": 0.9, "calibration": {"brier": 0.1}}},
         "max_metrics.brier", True),
        # No champion: nothing to beat.
        ({"beat_champion": {"metric": "f1_macro", "margin": 0.0}}, {}, "beat_champion", True),
        ({"beat_champion": {"metric": "f1_macro", "margin": 0.02}}, {"champion_metrics": {"f1_macro": 0.85}},
         "beat_champion", True),
        ({"beat_champion": {"metric": "f1_macro", "margin": 0.05}}, {"champion_metrics": {"f1_macro": 0.85}},
         "beat_champion", False),
        # Lower is better for log_loss: 0.3 beats 0.4, and does not beat 0.25.
        ({"beat_champion": {"metric": "log_loss", "margin": 0.05}}, {"champion_metrics": {"log_loss": 0.4}},
         "beat_champion", True),
        ({"beat_champion": {"metric": "log_loss", "margin": 0.0}}, {"champion_metrics": {"log_loss": 0.25}},
         "beat_champion", False),
        ({"max_fairness_gaps": {"demographic_parity_difference": 0.1}},
         {"fairness": {"demographic_parity_difference": 0.04, "equalized_odds_difference": 0.3}},
         "max_fairness_gaps.demographic_parity_difference", True),
        ({"max_fairness_gaps": {"equalized_odds_difference": 0.2}},
         {"fairness": {"demographic_parity_difference": 0.04, "equalized_odds_difference": 0.3}},
         "max_fairness_gaps.equalized_odds_difference", False),
        # Not measured is not a pass.
        ({"max_fairness_gaps": {"equalized_odds_difference": 0.2}}, {}, "max_fairness_gaps.equalized_odds_difference", False),
    ],
)
def test_each_gate_passes_and_fails(loan, gates, overrides, gate, passed):
    _gates(loan, gates)
    version = version_gates_apply(version=_version(loan, 1, **overrides))
    result = _result(version, gate)
    assert result["passed"] is passed, result
    assert result["detail"]
    assert version.gates_passed is passed
    assert version.stage == (Stage.CANDIDATE if passed else Stage.REJECTED)
    if not passed:
        assert gate in version.stage_reason and version.stage_reason.startswith("gates failed:")
        assert version.history.latest("history_date").history_change_reason.startswith("gates failed:")


def test_results_are_stored_in_order_and_informational_entries_are_kept(loan):
    _gates(loan, {"min_labels": 10, "min_metrics": {"accuracy": 0.8}, "max_metrics": {"log_loss": 0.5}})
    parity = {"gate": "onnx_parity", "passed": False, "value": 0.01, "threshold": 1e-5, "detail": "skops served",
              "informational": True}
    version = version_gates_apply(version=_version(loan, 1, gates=[parity]))
    assert [g["gate"] for g in version.gates] == ["min_labels", "min_metrics.accuracy", "max_metrics.log_loss", "onnx_parity"]
    assert all(set(g) >= {"gate", "passed", "value", "threshold", "detail"} for g in version.gates)
    # An informational failure blocks nothing.
    assert version.gates_passed is True and version.stage == Stage.CANDIDATE
    assert gates_blocking(version) == []


def test_no_gates_pass_and_leave_a_candidate_for_the_operator(loan):
    version = version_gates_apply(version=_version(loan, 1))
    assert (version.gates, version.gates_passed, version.stage) == ([], True, Stage.CANDIDATE)


def test_all_passed_with_auto_promote_makes_the_champion(loan):
    _gates(loan, {"min_metrics": {"accuracy": 0.8}}, auto_promote=True)
    old = _version(loan, 1, stage=Stage.CHAMPION)
    version = version_gates_apply(version=_version(loan, 2))
    assert version.stage == Stage.CHAMPION and version.stage_reason == AUTO_PROMOTE_REASON
    old.refresh_from_db()
    assert old.stage == Stage.ARCHIVED


def test_applying_twice_changes_nothing_more(loan):
    _gates(loan, {"min_metrics": {"accuracy": 0.95}})
    version = version_gates_apply(version=_version(loan, 1))
    records = version.history.count()
    again = version_gates_apply(version=version)
    assert (again.stage, again.gates, again.gates_passed) == (version.stage, version.gates, version.gates_passed)
    assert again.history.count() == records


def test_a_champion_is_never_moved_by_its_gates(loan):
    _gates(loan, {"min_metrics": {"accuracy": 0.99}})
    version = version_gates_apply(version=_version(loan, 1, stage=Stage.CHAMPION))
    assert version.stage == Stage.CHAMPION and version.gates_passed is False


# --- the shadow-agreement gate ----------------------------------------------------------------

def _shadowed(version, outputs_and_humans: list[tuple[str, str | None]]) -> None:
    """One prediction per pair, shadowed by `version`; a human label when the second is given."""
    predictor = version.predictor
    for output, human in outputs_and_humans:
        data = factories.loan_input()
        prediction, _ = prediction_create(predictor=predictor, policy=predictor.routing, client=None, clean_input=data)
        ShadowPrediction.objects.create(prediction=prediction, model_version=version, output=output, confidence=0.9)
        if human is not None:
            Label.objects.create(predictor=predictor, prediction=prediction, schema_version=predictor.schema_version,
                                 input=data, target=human, source="review")


def test_pending_shadow_gate_makes_a_challenger_then_the_sweep_promotes(loan):
    _gates(loan, {"min_metrics": {"accuracy": 0.8}, "min_shadow_agreement": {"rate": 0.75, "min_requests": 4}},
           auto_promote=True)
    champion = _version(loan, 1, stage=Stage.CHAMPION)
    version = version_gates_apply(version=_version(loan, 2))
    shadow = _result(version, "min_shadow_agreement")
    assert shadow["passed"] is None and "0 of 4" in shadow["detail"]
    assert (version.gates_passed, version.stage) == (None, Stage.CHALLENGER)
    with pytest.raises(PromotionRefused, match=r"min_shadow_agreement \(pending\)"):
        model_version_promote(version=version)

    # Three decided, one not yet: still pending, still the challenger.
    _shadowed(version, [("approve", "approve"), ("refer", "refer"), ("approve", "refer"), ("approve", None)])
    assert shadow_gates_sweep() == {"evaluated": 1, "promoted": 0, "rejected": 0, "pending": 1}
    version.refresh_from_db()
    assert version.stage == Stage.CHALLENGER and "3 of 4" in _result(version, "min_shadow_agreement")["detail"]

    # The fourth decided prediction agrees: 3 of 4 (75 %) meets 75 %.
    _shadowed(version, [("refer", "refer")])
    assert shadow_gates_sweep_task.apply().get() == {"evaluated": 1, "promoted": 1, "rejected": 0, "pending": 0}
    version.refresh_from_db()
    champion.refresh_from_db()
    assert (version.stage, version.gates_passed, version.stage_reason) == (Stage.CHAMPION, True, AUTO_PROMOTE_REASON)
    assert _result(version, "min_shadow_agreement")["value"] == pytest.approx(0.75)
    assert champion.stage == Stage.ARCHIVED
    # Nothing left pending: the sweep has nothing to do.
    assert shadow_gates_sweep()["evaluated"] == 0


def test_a_reviewer_decision_on_a_shadowed_request_weighs_the_gate_at_once(loan, reviewer, django_capture_on_commit_callbacks):
    from review.services import review_task_claim_next, review_task_decide

    _gates(loan, {"min_shadow_agreement": {"rate": 0.5, "min_requests": 1}}, auto_promote=True)
    version = version_gates_apply(version=_version(loan, 1))
    assert version.stage == Stage.CHALLENGER
    routing_update(predictor=loan, changes={"shadow": True})
    loan.routing.refresh_from_db()
    prediction, _ = prediction_create(predictor=loan, policy=loan.routing, client=None, clean_input=factories.loan_input())
    assert prediction.route["shadow"] == [1]
    ShadowPrediction.objects.get_or_create(prediction=prediction, model_version=version,
                                           defaults={"output": "refer", "confidence": 0.9})
    task = review_task_claim_next(reviewer=reviewer[0])
    with django_capture_on_commit_callbacks(execute=True):
        review_task_decide(task_id=task.pk, reviewer=reviewer[0], output="refer")
    version.refresh_from_db()  # no sweep ran: the decision itself promoted it
    assert (version.stage, version.stage_reason) == (Stage.CHAMPION, AUTO_PROMOTE_REASON)


def test_enough_agreement_without_auto_promote_leaves_it_for_the_operator(loan):
    _gates(loan, {"min_shadow_agreement": {"rate": 0.5, "min_requests": 2}})
    version = version_gates_apply(version=_version(loan, 1))
    assert version.stage == Stage.CHALLENGER
    _shadowed(version, [("approve", "approve"), ("refer", "refer")])
    shadow_gates_sweep()
    version.refresh_from_db()
    assert (version.stage, version.gates_passed) == (Stage.CHALLENGER, True)
    assert model_version_promote(version=version, reason="looks good").stage == Stage.CHAMPION


def test_too_little_agreement_rejects(loan):
    _gates(loan, {"min_shadow_agreement": {"rate": 0.9, "min_requests": 3}}, auto_promote=True)
    version = version_gates_apply(version=_version(loan, 1))
    _shadowed(version, [("approve", "refer"), ("refer", "refer"), ("approve", "approve")])
    assert shadow_gates_sweep()["rejected"] == 1
    version.refresh_from_db()
    assert version.stage == Stage.REJECTED and "min_shadow_agreement" in version.stage_reason


def test_a_failed_gate_rejects_even_while_the_shadow_gate_is_pending(loan):
    _gates(loan, {"min_metrics": {"accuracy": 0.95}, "min_shadow_agreement": {"rate": 0.5, "min_requests": 10}})
    version = version_gates_apply(version=_version(loan, 1))
    assert (version.gates_passed, version.stage) == (False, Stage.REJECTED)
    assert "min_metrics.accuracy" in version.stage_reason and "min_shadow_agreement" not in version.stage_reason


# --- forcing ------------------------------------------------------------------------------------

def test_forcing_past_a_failed_gate_needs_a_reason(loan, operator):
    _gates(loan, {"min_metrics": {"accuracy": 0.95}})
    version = version_gates_apply(version=_version(loan, 1))
    with pytest.raises(PromotionRefused, match="written reason"):
        model_version_promote(version=version, user=operator[0], force=True, reason="  ")
    with pytest.raises(PromotionRefused, match=r"min_metrics\.accuracy \(failed\)"):
        model_version_promote(version=version, user=operator[0])
    promoted = model_version_promote(version=version, user=operator[0], force=True, reason="the holdout is tiny")
    assert promoted.stage == Stage.CHAMPION
    record = promoted.history.latest("history_date")
    assert record.history_user == operator[0]
    assert "forced past min_metrics.accuracy: the holdout is tiny" in record.stage_reason
