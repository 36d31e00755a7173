"""Model artifacts: skops files in Django storage, each checked against its recorded sha256
before it is parsed, and loaded only with the types this allow-list trusts. The list lives
here in code, never beside the file, so a tampered artifact cannot widen it."""
from __future__ import annotations

import hashlib

import skops.io as sio
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

# Types beyond skops' own defaults (scikit-learn estimators, numpy arrays) that our
# pipelines contain. Anything else in an artifact makes loading fail.
TRUSTED_TYPES = [
    "models_registry.features.as_float",
    "numpy.dtype",
]


class ArtifactIntegrityError(Exception):
    """The stored bytes do not match the recorded sha256."""


def artifact_save(*, pipeline, name: str) -> tuple[str, str]:
    """Serialise with skops and store; returns (storage name, sha256)."""
    data = sio.dumps(pipeline)
    digest = hashlib.sha256(data).hexdigest()
    stored_name = default_storage.save(name, ContentFile(data))
    return stored_name, digest


def artifact_load(*, name: str, sha256: str):
    with default_storage.open(name, "rb") as handle:
        data = handle.read()
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise ArtifactIntegrityError(f"{name}: sha256 {actual} does not match the recorded {sha256}")
    return sio.loads(data, trusted=TRUSTED_TYPES)
