"""A per-process memory of API keys this process verified in the last moments.

Without it every /predict would look its key up in the database (a query that cost more CPU
than the model). An entry maps the SHA-256 of a presented key (never the key) to the client
and key rows it matched, with the client's predictor scope, for `OZ_AUTH_CACHE_SECONDS`
(default 2; 0 turns the memory off). Only keys that matched are remembered: a wrong key
always reaches the database and the failed-authentication throttle.

Revoking a key, deactivating a client or changing its scope through the models (admin,
services, commands) drops every entry of the process that made the change at once (signals
below), and every other web process stops accepting the key within the lifetime. Writes that
bypass the models (`QuerySet.update`) are seen within the lifetime too.

Entries are shared by the threads of a process: callers must not change the objects."""
from __future__ import annotations

import threading
import time

from django.conf import settings
from django.db.models.signals import m2m_changed, post_delete, post_save

from .models import ApiClient, ApiKey

MAX_ENTRIES = 10_000

_entries: dict[str, tuple[float, ApiClient, ApiKey]] = {}
_lock = threading.Lock()
_generation = 0


def _lifetime() -> float:
    return float(getattr(settings, "OZ_AUTH_CACHE_SECONDS", 2))


def verified_get(digest: str) -> tuple[ApiClient, ApiKey] | None:
    entry = _entries.get(digest)
    if entry is not None and time.monotonic() - entry[0] < _lifetime():
        return entry[1], entry[2]
    return None


def verified_generation() -> int:
    """Read before the database lookup; pass to verified_remember."""
    return _generation


def verified_remember(digest: str, client: ApiClient, key: ApiKey, *, generation: int) -> None:
    """Keep a key the database just matched, unless something was forgotten since the
    lookup began (it may have read rows from before a revocation)."""
    if _lifetime() <= 0:
        return
    if not client.all_predictors:
        client.allowed_predictor_ids = frozenset(client.predictors.values_list("pk", flat=True))
    with _lock:
        if _generation != generation:
            return
        if len(_entries) >= MAX_ENTRIES:
            _entries.clear()
        _entries[digest] = (time.monotonic(), client, key)


def verified_forget(**_) -> None:
    global _generation
    with _lock:
        _generation += 1
        _entries.clear()


for _model in (ApiKey, ApiClient):
    post_save.connect(verified_forget, sender=_model, dispatch_uid=f"verified_keys_save_{_model.__name__}")
    post_delete.connect(verified_forget, sender=_model, dispatch_uid=f"verified_keys_delete_{_model.__name__}")
m2m_changed.connect(verified_forget, sender=ApiClient.predictors.through, dispatch_uid="verified_keys_scope")
