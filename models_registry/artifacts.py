"""Model artifacts in Django storage: the skops file of every version and, when the pipeline
converts and agrees with it, its ONNX export. Each is checked against its recorded sha256
before it is parsed. skops artifacts are loaded only with the types this allow-list trusts;
the list lives here in code, never beside the file, so a tampered artifact cannot widen it.
ONNX artifacts are data only (a graph of standard operators): onnxruntime loads no Python
code from them."""
from __future__ import annotations

import hashlib

import skops.io as sio
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

# Types beyond skops' own defaults (scikit-learn estimators, numpy and scipy containers)
# that the allow-listed pipelines (features.ESTIMATORS) contain: the internals of the
# calibrated SVM, the forests and the gradient-boosting models. Anything else in an
# artifact makes loading fail with UntrustedArtifactError. tests/models_registry/
# test_serving_depth.py trains every allow-listed estimator and loads it with this list.
TRUSTED_TYPES = [
    "models_registry.features.as_float",  # pipelines trained before the ONNX path
    "numpy.dtype",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.tree._tree.Tree",
]


class ArtifactIntegrityError(Exception):
    """The stored bytes do not match the recorded sha256."""


class UntrustedArtifactError(Exception):
    """A skops artifact names a type outside the in-code allow-list; it is not loaded."""


def bytes_save(*, data: bytes, name: str) -> tuple[str, str]:
    """Store `data` under `name` (or a free name like it); returns (storage name, sha256)."""
    digest = hashlib.sha256(data).hexdigest()
    stored_name = default_storage.save(name, ContentFile(data))
    return stored_name, digest


def artifact_save(*, pipeline, name: str) -> tuple[str, str]:
    """Serialise with skops and store; returns (storage name, sha256)."""
    return bytes_save(data=sio.dumps(pipeline), name=name)


def onnx_artifact_save(*, data: bytes, name: str) -> tuple[str, str]:
    """Store an ONNX export; returns (storage name, sha256)."""
    return bytes_save(data=data, name=name)


def artifact_bytes(*, name: str, sha256: str) -> bytes:
    """The stored bytes, only if they are the ones recorded."""
    with default_storage.open(name, "rb") as handle:
        data = handle.read()
    actual = hashlib.sha256(data).hexdigest()
    if not sha256 or actual != sha256:
        raise ArtifactIntegrityError(f"{name}: sha256 {actual} does not match the recorded {sha256 or '(none)'}")
    return data


def skops_loads(data: bytes, *, name: str = "artifact"):
    """Parse skops bytes with the in-code allow-list; refuses anything it does not name."""
    try:
        untrusted = [t for t in sio.get_untrusted_types(data=data) if t not in TRUSTED_TYPES]
    except Exception as exc:  # not a skops file at all
        raise UntrustedArtifactError(f"{name}: not a readable skops artifact ({exc})") from exc
    if untrusted:
        raise UntrustedArtifactError(f"{name}: refusing to load untrusted types {untrusted}; they are not in the allow-list")
    try:
        return sio.loads(data, trusted=TRUSTED_TYPES)
    except sio.exceptions.UntrustedTypesFoundException as exc:
        raise UntrustedArtifactError(f"{name}: refusing to load untrusted types: {exc}") from exc


def artifact_load(*, name: str, sha256: str):
    """The skops pipeline stored under `name`: sha256 checked, then the allow-list applied."""
    return skops_loads(artifact_bytes(name=name, sha256=sha256), name=name)
