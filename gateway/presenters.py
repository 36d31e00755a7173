"""The one shape of a prediction on the wire (API responses and webhook payloads)."""
from __future__ import annotations

from .models import Prediction


def _iso(value):
    return value.isoformat().replace("+00:00", "Z") if value else None


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
        "explanation": explanation,
        "route": prediction.route,
        "created_at": _iso(prediction.created_at),
        "answered_at": _iso(prediction.answered_at),
        # End-user appeals arrive with the review-queue work; until then there is no link.
        "appeal_url": None,
        "links": {"self": f"/predictions/{prediction.id}"},
    }
