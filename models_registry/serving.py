"""Answering with the champion model. Each version's artifact is loaded once per process
(sha256 checked, skops allow-list applied) and kept; requests never load from storage
after the first use of a version."""
from __future__ import annotations

import threading
from dataclasses import dataclass

from gateway.models import Predictor

from .artifacts import artifact_load
from .features import feature_rows
from .models import ModelVersion, Stage

_loaded: dict[int, object] = {}
_load_lock = threading.Lock()


@dataclass(frozen=True)
class ModelAnswer:
    output: object
    confidence: float | None
    scores: dict | None
    version: int


def champion_get(predictor: Predictor) -> ModelVersion | None:
    return (
        ModelVersion.objects.filter(predictor=predictor, stage=Stage.CHAMPION)
        .only("id", "version", "artifact", "artifact_sha256", "schema_version")
        .first()
    )


def _pipeline(version: ModelVersion):
    pipeline = _loaded.get(version.pk)
    if pipeline is None:
        with _load_lock:
            pipeline = _loaded.get(version.pk)
            if pipeline is None:
                pipeline = artifact_load(name=version.artifact.name, sha256=version.artifact_sha256)
                _loaded[version.pk] = pipeline
    return pipeline


def model_answer(*, predictor: Predictor, version: ModelVersion, clean_input: dict) -> ModelAnswer:
    pipeline = _pipeline(version)
    X = feature_rows(predictor.schema, [clean_input])
    if predictor.is_classification:
        proba = pipeline.predict_proba(X)[0]
        classes = [str(c) for c in pipeline.classes_]
        best = int(proba.argmax())
        scores = {label: round(float(p), 6) for label, p in zip(classes, proba, strict=True)}
        return ModelAnswer(output=classes[best], confidence=round(float(proba[best]), 6), scores=scores, version=version.version)
    value = float(pipeline.predict(X)[0])
    spec = predictor.output_spec
    if "minimum" in spec:
        value = max(value, spec["minimum"])
    if "maximum" in spec:
        value = min(value, spec["maximum"])
    return ModelAnswer(output=value, confidence=None, scores=None, version=version.version)
