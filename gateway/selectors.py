from __future__ import annotations

import time

from .models import Prediction, PredictionStatus, Predictor


def predictor_for_request(slug: str) -> Predictor | None:
    """The predictor with its routing flag, in one query (the /predict hot path)."""
    return Predictor.objects.select_related("routing").filter(slug=slug).first()


def prediction_wait(*, prediction: Prediction, seconds: float) -> Prediction:
    """Hold up to `seconds` until the prediction stops being pending; returns it fresh.
    Polls the database with a growing interval (0.1 s up to 1 s): cheap, and correct across
    processes without a pub/sub dependency."""
    if seconds <= 0 or prediction.status != PredictionStatus.PENDING:
        return prediction
    deadline = time.monotonic() + seconds
    interval = 0.1
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        time.sleep(min(interval, remaining))
        interval = min(interval * 1.5, 1.0)
        status = Prediction.objects.filter(pk=prediction.pk).values_list("status", flat=True).first()
        if status != PredictionStatus.PENDING:
            break
    return Prediction.objects.select_related("predictor").get(pk=prediction.pk)
