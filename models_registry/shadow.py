"""Shadow traffic: what a model that did not answer would have said, and how often that
agrees with the humans who did decide. The agreement is the evidence for a candidate's
`min_shadow_agreement` gate and for the dashboard's model-human agreement.

`shadow_run` executes the shadows. The routing flag's `shadow` asks for it; the gateway
sends a Celery task once the prediction is committed, so the client never waits on it and a
failing shadow never touches the answer. Which versions run: every live version (the
champion and, when there is one, the challenger) that did not give the answer. The
challenger exists to be measured, so shadow on is what measures it. A message lost to a
broker outage loses that shadow only (it is evidence, not an answer), and nothing re-sends it."""
from __future__ import annotations

import logging

from django.db.models import OuterRef, Subquery

from review.models import Label, LabelSource

from .models import ModelVersion, ShadowPrediction

logger = logging.getLogger(__name__)

SHADOW_ERROR_MAX_LENGTH = 500


def shadow_run(*, prediction_id, version_ids: list[int]) -> int:
    """Run each model version on the prediction's input and store what it says (or the
    error it raised) as a ShadowPrediction. Idempotent: versions already shadowed on this
    prediction are skipped, and a concurrent duplicate is absorbed by the unique constraint
    (prediction, model_version). Returns how many versions ran."""
    from gateway.models import Prediction

    from . import serving

    prediction = Prediction.objects.select_related("predictor").filter(pk=prediction_id).first()
    if prediction is None:
        return 0
    done = set(ShadowPrediction.objects.filter(prediction=prediction).values_list("model_version_id", flat=True))
    versions = ModelVersion.objects.filter(pk__in=[v for v in version_ids if v not in done], predictor=prediction.predictor)
    rows = []
    for version in versions:
        row = ShadowPrediction(prediction=prediction, model_version=version)
        try:
            answer = serving.model_answer(predictor=prediction.predictor, version=version, clean_input=prediction.input)
        except Exception as exc:  # stored, never raised: a shadow must not fail anything
            logger.warning("shadow v%s on %s failed", version.version, prediction.pk, exc_info=True)
            row.error = f"{exc.__class__.__name__}: {exc}"[:SHADOW_ERROR_MAX_LENGTH]
        else:
            row.output, row.confidence, row.scores = answer.output, answer.confidence, answer.scores
        rows.append(row)
    if not rows:
        return 0
    return len(ShadowPrediction.objects.bulk_create(rows, ignore_conflicts=True))

# Labels that are a person's decision (client-reported outcomes and imports are not).
HUMAN_LABEL_SOURCES = (
    LabelSource.REVIEW,
    LabelSource.QA,
    LabelSource.LOW_CONFIDENCE,
    LabelSource.ADJUDICATION,
    LabelSource.APPEAL,
)


def shadow_tolerance(predictor) -> float | None:
    """How far a number model answer may be from the human's and still agree: the shadow
    gate's `tolerance` (models_registry.config), or None (equal up to rounding)."""
    block = (predictor.gates or {}).get("min_shadow_agreement") or {}
    return block.get("tolerance") if isinstance(block, dict) else None


def _within(tolerance: float):
    def same(output, target) -> bool:
        try:
            return abs(float(output) - float(target)) <= tolerance
        except (TypeError, ValueError):
            return False

    return same


def shadow_agreement(*, version: ModelVersion, tolerance: float | None = None) -> dict:
    """Over the version's shadowed predictions that a human has since decided: how many,
    how many the model got the same answer as the human's current label, and the rate
    (None when there are none). One query, however many shadows."""
    human = Label.objects.filter(
        prediction_id=OuterRef("prediction_id"), superseded_by__isnull=True, source__in=HUMAN_LABEL_SOURCES
    ).order_by("-id")
    pairs = (
        ShadowPrediction.objects.filter(model_version=version, error="")
        .annotate(human=Subquery(human.values("target")[:1]))
        .exclude(human__isnull=True)
        .values_list("output", "human")
    )
    from review.services import _same_answer

    same = _same_answer if tolerance is None else _within(tolerance)  # numbers agree within a tolerance
    n = agreeing = 0
    for output, target in pairs.iterator(chunk_size=2000):
        n += 1
        agreeing += same(output, target)
    return {"n": n, "agreeing": agreeing, "rate": agreeing / n if n else None}
