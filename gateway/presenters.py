"""The one shape of a prediction on the wire (API responses and webhook payloads)."""
from __future__ import annotations

from .appeal_tokens import appeal_path
from .models import AnswerSource, Prediction, PredictionStatus

_APPEALABLE = (PredictionStatus.ANSWERED, PredictionStatus.REVISED)


def _iso(value):
    return value.isoformat().replace("+00:00", "Z") if value else None


def _explanation(prediction: Prediction):
    if prediction.source != AnswerSource.MODEL:
        return None  # nobody asked, or a person has answered since: no model answer to explain
    return prediction.explanation


def prediction_as_dict(prediction: Prediction, *, explanation=None) -> dict:
    return {
        "id": str(prediction.id),
        "predictor": prediction.predictor.slug,
        "status": prediction.status,
        "output": prediction.output,
        "confidence": prediction.confidence,
        "scores": prediction.scores,
        "source": prediction.source or None,
        "provisional": prediction.provisional,
        "model_version": prediction.model_version,
        # Stored when the client asked for it; shown while the model's answer stands.
        "explanation": explanation if explanation is not None else _explanation(prediction),
        "route": prediction.route,
        "created_at": _iso(prediction.created_at),
        "answered_at": _iso(prediction.answered_at),
        # Answers can be appealed by the person they are about; the link is theirs to pass on.
        "appeal_url": appeal_path(prediction.id) if prediction.status in _APPEALABLE else None,
        "links": {"self": f"/predictions/{prediction.id}"},
    }
