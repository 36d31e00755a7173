"""Answering with a model version. Each version is loaded once per process and kept: its
ONNX export when it has one that passed parity (served by onnxruntime, one thread, no
Python code loaded), else its skops artifact (with the in-code allow-list). Either way the
served bytes' sha256 is checked first. Requests never load from storage after the first use
of a version.

A version that fails to load (sha256 mismatch, a type outside the allow-list, a missing
file) raises to the caller, which sends the request to its fallback; it is not kept as
loaded, and the failure is remembered for FAILURE_MEMORY_SECONDS so that storage is not
read again on every request meanwhile. Each failed load is counted in /metrics
(`oz_model_load_failures_total`); `model_health` says, without loading anything, whether the
champion's served file is there and intact (GET /predictors/<slug> `model_health`, and the
`oz_model_artifact_ok` gauge), so a broken artifact raises an alert even before traffic meets it.
Neither adds work to a request that the model answers."""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import numpy as np

from gateway.models import Predictor

from .artifacts import ArtifactIntegrityError, artifact_bytes, artifact_load
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


def _served(version: ModelVersion, predictor_slug: str = ""):
    def failed(exc):
        # Once per FAILURE_MEMORY_SECONDS per process and version, not per request.
        logger.warning("model v%s (pk %s) failed to load: %s", version.version, version.pk, exc)
        from gateway.metrics import model_load_failure_count

        model_load_failure_count(predictor=predictor_slug, version=version.version, reason=_failure_reason(exc))

    return _cache.get(_key(version), lambda: _load(version), on_failure=failed)


def _failure_reason(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return "missing"
    if isinstance(exc, ArtifactIntegrityError):
        return "corrupt"
    if isinstance(exc, OSError):
        return "unreadable"
    return "unloadable"


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
    served = _served(version, predictor.slug)
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


# --- health of the served files (an alert state, without loading anything) -------------------

def served_artifact(version: ModelVersion) -> tuple[str, str, str]:
    """(format, storage name, recorded sha256) of the file this version is served from."""
    if version.serving_format == "onnx" and version.onnx_artifact:
        return "onnx", version.onnx_artifact.name, version.onnx_sha256
    return "skops", version.artifact.name, version.artifact_sha256


# (name, sha256, size, modified) -> (problem, detail): a file is hashed again only when it changed.
_verdicts: dict[tuple, tuple[str | None, str]] = {}
_verdicts_lock = threading.Lock()


def artifact_check(version: ModelVersion) -> tuple[str | None, str]:
    """(problem, detail) of the file this version is served from: problem is None when it is
    there and its sha256 is the recorded one, else "missing", "corrupt" or "unreadable".
    Reads and hashes the file only when its size or modification time changed since this
    process last looked."""
    from django.core.files.storage import default_storage

    _, name, sha256 = served_artifact(version)
    if not name:
        return "missing", "no artifact is recorded for this version"
    try:
        stamp = (default_storage.size(name), default_storage.get_modified_time(name))
    except FileNotFoundError:
        return "missing", f"{name} does not exist"
    except (NotImplementedError, OSError):
        stamp = None  # a storage that cannot say: hash every time
    key = (name, sha256, stamp)
    if stamp is not None and key in _verdicts:
        return _verdicts[key]
    try:
        artifact_bytes(name=name, sha256=sha256)
        verdict: tuple[str | None, str] = (None, "")
    except FileNotFoundError:
        return "missing", f"{name} does not exist"
    except ArtifactIntegrityError as exc:
        verdict = ("corrupt", str(exc))
    except OSError as exc:
        return "unreadable", f"{name}: {exc}"
    if stamp is not None:
        with _verdicts_lock:
            if len(_verdicts) > 1000:
                _verdicts.clear()
            _verdicts[key] = verdict
    return verdict


def model_health(version: ModelVersion | None, *, fallback: str | None = None, schema_version: int | None = None) -> dict | None:
    """The alert state of a predictor's champion for GET /predictors/<slug>: `status` "ok"
    or "broken" (its served file is missing, corrupt or unreadable, so no process that has
    not loaded it yet can answer with it; or, given the predictor's `schema_version`, it was
    trained on another one and answers nothing: requests go to the routing flag's
    `fallback`). None without a champion."""
    if version is None:
        return None
    problem, detail = artifact_check(version)
    if problem is None and schema_version is not None and version.schema_version != schema_version:
        problem = "schema_mismatch"
        detail = (f"trained on schema version {version.schema_version}, the predictor is at {schema_version}: "
                  "retrain on the current schema")
    fmt, name, _ = served_artifact(version)
    health = {
        "status": "ok" if problem is None else "broken",
        "version": version.version,
        "format": fmt,
        "artifact": name,
        "problem": problem,
        "detail": detail or None,
    }
    if problem is not None and fallback is not None:
        health["fallback"] = fallback
    return health
