"""Shadow traffic: what a model that did not answer would have said, and how often that
agrees with the humans who did decide. The agreement is the evidence for a candidate's
`min_shadow_agreement` gate and for the dashboard's model-human agreement."""
from __future__ import annotations

from django.db.models import OuterRef, Subquery

from review.models import Label, LabelSource

from .models import ModelVersion, ShadowPrediction

# Labels that are a person's decision (client-reported outcomes and imports are not).
HUMAN_LABEL_SOURCES = (
    LabelSource.REVIEW,
    LabelSource.QA,
    LabelSource.LOW_CONFIDENCE,
    LabelSource.ADJUDICATION,
    LabelSource.APPEAL,
)


def shadow_agreement(*, version: ModelVersion) -> dict:
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

    n = agreeing = 0
    for output, target in pairs.iterator(chunk_size=2000):
        n += 1
        agreeing += _same_answer(output, target)
    return {"n": n, "agreeing": agreeing, "rate": agreeing / n if n else None}
