"""Answering with a model version. Each version is loaded once per process and kept: its
ONNX export when it has one that passed parity (served by onnxruntime, one thread, no
Python code loaded), else its skops artifact (with the in-code allow-list). Either way the
served bytes' sha256 is checked first. Requests never load from storage after the first use
of a version.

A version that fails to load (sha256 mismatch, a type outside the allow-list, a missing
file) raises to the caller, which sends the request to its fallback; it is not kept as
loaded, and the failure is remembered for FAILURE_MEMORY_SECONDS so that storage is not
read again on every request meanwhile."""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import numpy as np

from gateway.models import Predictor

from .artifacts import artifact_bytes, artifact_load
from .features import feature_rows
from .loaded_once import LoadedOnce
from .models import ModelVersion, Stage
from .onnx import OnnxModel

logger = logging.getLogger(__name__)

FAILURE_MEMORY_SECONDS = 30.0

_cache = LoadedOnce(FAILURE_MEMORY_SECONDS)
_loaded = _cache.items  # (pk, format, sha256) -> _SkopsServed | _OnnxServed


@dataclass(frozen=True)
class ModelAnswer:
    output: object
    confidence: float | None
    scores: dict | None
    version: int


class _SkopsServed:
    format = "skops"

    def __init__(self, pipeline):
        self.pipeline = pipeline
        self.classes = [str(c) for c in pipeline.classes_] if hasattr(pipeline, "classes_") else []

    def predict_one(self, schema: dict, clean_input: dict, classification: bool):
        X = feature_rows(schema, [clean_input])
        if classification:
            return self.pipeline.predict_proba(X)[0]
        return self.pipeline.predict(X)[0]


class _OnnxServed:
    format = "onnx"

    def __init__(self, model: OnnxModel):
        self.model = model
        self.classes = model.classes
        self._schema = None
        self._lock = threading.Lock()

    def predict_one(self, schema: dict, clean_input: dict, classification: bool):
        model = self.model
        if schema is not self._schema:  # a new (or first) schema object: check and plan once
            with self._lock:
                model.bind(schema)
                self._schema = schema
        return model.run_one(clean_input)


def champion_get(predictor: Predictor) -> ModelVersion | None:
    return (
        ModelVersion.objects.filter(predictor=predictor, stage=Stage.CHAMPION)
        .only("id", "version", "artifact", "artifact_sha256", "onnx_artifact", "onnx_sha256", "serving_format", "schema_version")
        .first()
    )


def _key(version: ModelVersion) -> tuple:
    if version.serving_format == "onnx" and version.onnx_artifact:
        return (version.pk, "onnx", version.onnx_sha256)
    return (version.pk, "skops", version.artifact_sha256)


def _load(version: ModelVersion):
    if version.serving_format == "onnx" and version.onnx_artifact:
        data = artifact_bytes(name=version.onnx_artifact.name, sha256=version.onnx_sha256)  # tampering raises
        try:
            return _OnnxServed(OnnxModel(data))
        except Exception:  # verified bytes this onnxruntime cannot run (e.g. a missing locale): serve skops
            logger.warning("v%s: onnxruntime cannot load the ONNX export; serving the skops artifact", version.version, exc_info=True)
    return _SkopsServed(artifact_load(name=version.artifact.name, sha256=version.artifact_sha256))


def _served(version: ModelVersion):
    def failed(exc):
        logger.warning("model v%s (pk %s) failed to load: %s", version.version, version.pk, exc)

    return _cache.get(_key(version), lambda: _load(version), on_failure=failed)


def served_format(version: ModelVersion) -> str:
    """"onnx" or "skops": what actually answers for this version in this process."""
    return _served(version).format


def loaded_clear() -> None:
    """Forget every loaded version and remembered failure (tests, or after a deploy)."""
    _cache.clear()


class ModelCannotAnswer(Exception):
    """The version cannot give a trustworthy answer to this input; the caller falls back."""


def model_answer(*, predictor: Predictor, version: ModelVersion, clean_input: dict) -> ModelAnswer:
    """The version's answer to one validated input. Raises ModelCannotAnswer when the
    version was trained on another schema version (its columns may mean other fields now)
    or when its output is not finite (e.g. an input beyond float32 in the ONNX graph), and
    whatever loading raises (a tampered artifact): every caller treats a raise as a model
    error and falls back."""
    if version.schema_version != predictor.schema_version:
        raise ModelCannotAnswer(
            f"v{version.version} was trained on schema version {version.schema_version}, "
            f"the predictor is at {predictor.schema_version}; retrain it"
        )
    served = _served(version)
    classification = predictor.is_classification
    result = served.predict_one(predictor.schema, clean_input, classification)
    if classification:
        proba = np.asarray(result, dtype=np.float64)
        if not np.isfinite(proba).all():
            raise ModelCannotAnswer(f"v{version.version} gave non-finite probabilities for this input")
        classes = served.classes
        best = int(proba.argmax())
        scores = {label: round(float(p), 6) for label, p in zip(classes, proba, strict=True)}
        return ModelAnswer(output=classes[best], confidence=round(float(proba[best]), 6), scores=scores, version=version.version)
    value = float(np.asarray(result).reshape(-1)[0])
    if not np.isfinite(value):
        raise ModelCannotAnswer(f"v{version.version} gave a non-finite value for this input")
    spec = predictor.output_spec
    if "minimum" in spec:
        value = max(value, float(spec["minimum"]))
    if "maximum" in spec:
        value = min(value, float(spec["maximum"]))
    return ModelAnswer(output=value, confidence=None, scores=None, version=version.version)
