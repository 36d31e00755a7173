"""What /predict tells the operators about each prediction it makes: one metrics update
(gateway.metrics) and one structured log event, `prediction`, with what an analyst needs
to follow it. Input fields whose schema spec says `log: false` (free text that may hold
personal data) never reach the log."""
from __future__ import annotations

import structlog

from . import metrics
from .models import Prediction, Predictor

logger = structlog.get_logger("oz.predictions")


def loggable_input(input_schema: dict, clean_input: dict) -> dict:
    """The input without the fields the schema marks `log: false` (default: logged)."""
    return {
        name: value for name, value in clean_input.items()
        if (input_schema.get(name) or {}).get("log", True) is not False
    }


def prediction_observe(*, prediction: Prediction, predictor: Predictor, client, seconds: float) -> None:
    """Count and log one prediction made by /predict. No database query."""
    route = prediction.route or {}
    # A pending prediction waits for a human: that is who answers it.
    source = prediction.source or "human"
    metrics.prediction_count(predictor=predictor.slug, route=route, source=source, status=prediction.status, seconds=seconds)
    logger.info(
        "prediction",
        prediction_id=str(prediction.id),
        predictor=predictor.slug,
        schema_version=prediction.schema_version,
        route_mode=route.get("mode"),
        route_reason=route.get("reason"),
        route=route,  # policy_version, and canary / qa_sample / shadow when they apply
        source=source,
        status=prediction.status,
        provisional=prediction.provisional,
        output=prediction.output,
        model_version=prediction.model_version,
        confidence=prediction.confidence,
        latency_ms=round(seconds * 1000, 2),
        client=getattr(client, "name", None),
        input=loggable_input(predictor.input_schema, prediction.input),
    )
