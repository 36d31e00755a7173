from __future__ import annotations

from .models import ReviewTask


def _iso(value):
    return value.isoformat().replace("+00:00", "Z") if value else None


def task_as_dict(task: ReviewTask) -> dict:
    prediction = task.prediction
    suggestion = None
    if prediction.output is not None and prediction.source in ("model", "rule"):
        suggestion = {
            "output": prediction.output,
            "source": prediction.source,
            "confidence": prediction.confidence,
            "scores": prediction.scores,
            "model_version": prediction.model_version,
        }
    return {
        "id": task.pk,
        "kind": task.kind,
        "priority": task.priority,
        "reason": task.reason,
        "status": task.status,
        "predictor": task.predictor.slug,
        "prediction": str(prediction.id),
        "input": prediction.input,
        "input_schema": task.predictor.schema,
        "output_spec": task.predictor.output_spec,
        "suggestion": suggestion,
        "created_at": _iso(task.created_at),
        "lease_expires_at": _iso(task.lease_expires_at),
    }
