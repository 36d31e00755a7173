"""The registry's loop through a real Celery worker on the test Redis: labels start a
training run by themselves, the worker trains and gates it, shadows run in the worker off
the request's path, and human decisions on shadowed requests promote the challenger."""
from __future__ import annotations

import random
import time

from gateway.demo import SyntheticPredictor
from gateway.models import Predictor
from gateway.services import prediction_create, routing_update
from models_registry.gates import AUTO_PROMOTE_REASON
from models_registry.models import ModelVersion, ShadowPrediction, Stage, TrainingRun
from review.services import review_task_claim_next, review_task_decide
from tests import factories


def _until(check, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _send(loan, world, rng, n: int) -> list:
    loan.routing.refresh_from_db()
    return [
        prediction_create(predictor=loan, policy=loan.routing, client=None, clean_input=world.input(rng))[0] for _ in range(n)
    ]


def _decide_all(world, reviewer) -> int:
    decided = 0
    while (task := review_task_claim_next(reviewer=reviewer)) is not None:
        review_task_decide(task_id=task.pk, reviewer=reviewer, output=world.truth(task.prediction.input))
        decided += 1
    return decided


def test_labels_train_in_the_worker_and_shadow_evidence_promotes(celery_worker_thread, settings):
    settings.OZ_MIN_TRAINING_LABELS = 20
    loan = factories.loan_predictor()
    Predictor.objects.filter(pk=loan.pk).update(
        training={"retrain_after_labels": 40, "holdout_fraction": 0.25},
        gates={"min_labels": 40, "min_shadow_agreement": {"rate": 0.6, "min_requests": 6}},
        auto_promote=True,
    )
    loan.refresh_from_db()
    routing_update(predictor=loan, changes={"mode": "human", "shadow": True})
    reviewer, _ = factories.reviewer_with_token()
    world = SyntheticPredictor(loan.schema, loan.output_spec, blind_to=("sector",))
    rng = random.Random(5)

    # 39 labels: nothing yet. The 40th starts a run; the worker trains and gates it.
    _send(loan, world, rng, 39)
    assert _decide_all(world, reviewer) == 39
    assert not TrainingRun.objects.filter(predictor=loan).exists()
    _send(loan, world, rng, 1)
    _decide_all(world, reviewer)
    run = _until(lambda: TrainingRun.objects.filter(predictor=loan, status__in=["succeeded", "failed"]).first(), "the run")
    assert (run.trigger, run.status, run.dataset["n_labels"]) == (TrainingRun.Trigger.LABEL_THRESHOLD, "succeeded", 40)
    # The gates are applied just after the run is recorded as succeeded.
    v1 = _until(lambda: ModelVersion.objects.filter(run=run, stage=Stage.CHALLENGER).first(), "v1 as challenger")
    assert v1.gates_passed is None  # waiting for shadow evidence

    # Shadows run in the worker after each response; no client ever sees them.
    shadowed = _send(loan, world, rng, 8)
    assert all(p.output is None and p.route["shadow"] == [v1.version] for p in shadowed)
    _until(lambda: ShadowPrediction.objects.filter(model_version=v1).count() == 8, "eight shadow outputs")
    assert ShadowPrediction.objects.filter(model_version=v1, error="").count() == 8

    # Each decision on a shadowed request weighs the gate; enough agreement promotes v1.
    _decide_all(world, reviewer)
    v1 = _until(lambda: ModelVersion.objects.filter(pk=v1.pk, stage=Stage.CHAMPION).first(), "v1 promoted")
    assert v1.stage_reason == AUTO_PROMOTE_REASON and v1.gates_passed is True
