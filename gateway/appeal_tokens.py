"""Appeal links. The token is 256 bits derived with HMAC from a server secret and the
prediction id, so the link can be shown again on every read of the prediction without
being stored; the database keeps only its SHA-256, to find the prediction. A database
leak reveals no link, and nobody can forge one without the secret."""
from __future__ import annotations

import base64
import functools
import hashlib
import hmac

from django.conf import settings


def _key() -> bytes:
    return (settings.OZ_APPEAL_TOKEN_KEY or settings.SECRET_KEY).encode()


def appeal_token(prediction_id) -> str:
    return _token(_key(), str(prediction_id))


# /predict derives a new prediction's link twice (its hash is stored, the link is answered):
# the last few are kept, keyed by the secret too, so a new secret derives new links.
@functools.lru_cache(maxsize=256)
def _token(key: bytes, prediction_id: str) -> str:
    mac = hmac.new(key, f"oz-appeal:{prediction_id}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def appeal_token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def appeal_path(prediction_id) -> str:
    return f"/appeal/{appeal_token(prediction_id)}"
