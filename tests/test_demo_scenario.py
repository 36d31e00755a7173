"""`demo_traffic loan-approval --scenario` plays the whole loop on the shipped predictor,
on PostgreSQL, with no Celery worker (the scenario runs queued training and shadows itself),
and every step it tells really happened in the database."""
from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from gateway.models import Prediction
from models_registry.gates import AUTO_PROMOTE_REASON
from models_registry.models import ModelVersion, ShadowPrediction, Stage, TrainingRun
from review.models import ReviewTask
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)  # the label trigger runs on commit


def test_the_scenario_plays_every_step_of_the_loop():
    predictor = factories.loan_predictor(registry_blocks=True)
    out = io.StringIO()
    call_command("demo_traffic", "loan-approval", "--scenario", stdout=out)
    told = out.getvalue()

    # 1. Cold start: the first version came from the label threshold, not from a person.
    runs = list(TrainingRun.objects.filter(predictor=predictor).order_by("pk"))
    first = runs[0]
    assert first.trigger == TrainingRun.Trigger.LABEL_THRESHOLD and first.status == "succeeded"
    assert first.dataset["n_labels"] == predictor.training["retrain_after_labels"]
    v1 = first.model_version

    # 2. Shadow: v1 was measured against the reviewers, then promoted by its gates.
    assert ShadowPrediction.objects.filter(model_version=v1).count() >= predictor.gates["min_shadow_agreement"]["min_requests"]
    shadow_gate = next(g for g in v1.gates if g["gate"] == "min_shadow_agreement")
    assert shadow_gate["passed"] is True
    promotions = [h for h in v1.history.order_by("history_date") if h.stage == Stage.CHAMPION]
    assert promotions[0].history_change_reason == AUTO_PROMOTE_REASON

    # 3. Canary: a share of the human-mode requests was answered by v1, the rest queued.
    canary = Prediction.objects.filter(predictor=predictor, route__canary=True)
    assert 3 <= canary.count() <= 25  # 25 % of 50, give or take chance
    assert set(canary.values_list("source", flat=True)) == {"model"}

    # 4. Model mode: below the threshold a reviewer answered, shown the model's suggestion.
    low = ReviewTask.objects.filter(predictor=predictor, kind="low_confidence")
    assert low.exists()
    assert all(t.suggestion["confidence"] < 0.75 and t.suggestion["model_version"] == v1.version for t in low)

    # 5. The hurried v2 was forced past its pending gate, then rolled back: v1 serves again.
    v2 = ModelVersion.objects.get(predictor=predictor, version=2)
    assert v2.run.trigger == TrainingRun.Trigger.MANUAL
    assert v2.history.filter(stage=Stage.CHAMPION).exists() and v2.stage == Stage.REJECTED
    v1.refresh_from_db()
    assert v1.stage == Stage.CHAMPION

    # 6. The biased reviewer's labels trained a version the fairness gate rejected.
    unfair = ModelVersion.objects.filter(predictor=predictor, version__gt=2, stage=Stage.REJECTED).order_by("-version").first()
    assert unfair is not None
    gap = next(g for g in unfair.gates if g["gate"] == "max_fairness_gaps.demographic_parity_difference")
    assert gap["passed"] is False and gap["value"] > gap["threshold"]
    assert unfair.run.fairness["by_group"]["food"]["selection_rate"] < min(
        r["selection_rate"] for g, r in unfair.run.fairness["by_group"].items() if g not in ("food", "(missing)")
    )

    # What it told is what happened.
    for step in ("== 1.", "== 2.", "== 3.", "== 4.", "== 5.", "== 6.", "Done:"):
        assert step in told
    assert f"v{unfair.version} is now rejected" in told and "rollback: v1 is champion again" in told


def test_the_scenario_refuses_a_predictor_with_history():
    predictor = factories.loan_predictor(registry_blocks=True)
    TrainingRun.objects.create(predictor=predictor, status="failed")
    with pytest.raises(CommandError, match="fresh database"):
        call_command("demo_traffic", "loan-approval", "--scenario", stdout=io.StringIO())


def test_the_scenario_says_what_the_predictor_lacks():
    factories.loan_predictor()  # without its training and gates blocks
    with pytest.raises(CommandError, match=r"retrain_after_labels.*min_shadow_agreement.*auto_promote"):
        call_command("demo_traffic", "loan-approval", "--scenario", stdout=io.StringIO())
