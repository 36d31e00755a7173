"""A per-process cache of what /predict needs about a predictor: the predictor, its routing
flag and its live model versions (champion and challenger).

Without it every request would read all three from the database. Entries live for
`OZ_SERVING_CACHE_SECONDS` (default 2). A process that writes a routing change, a stage
change or a predictor drops its own entry at once (post_save signals, connected when this
module is imported — gateway.services imports it — and again on commit, so a
request that read the old rows while the write was in flight cannot keep them); every other
process sees the change when its entry ages out. So a kill switch (mode back to human or
rule), a promotion or a rollback reaches every web worker within that lifetime, without a
restart and without a shared cache round trip on the hot path.

Entries are read-only and shared between the threads of a process: callers must not change
the objects they get."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from models_registry.models import ModelVersion, Stage

from .models import Predictor, RoutingPolicy


@dataclass(frozen=True)
class ServingState:
    predictor: Predictor
    policy: RoutingPolicy
    champion: object | None  # models_registry.models.ModelVersion
    challenger: object | None
    loaded_at: float

    @property
    def live_versions(self) -> tuple:
        """The versions that may run on a request: the champion, then the challenger."""
        return tuple(v for v in (self.champion, self.challenger) if v is not None)


_entries: dict[str, ServingState] = {}
_lock = threading.Lock()
# Bumped by every forget. A load that started before a forget may have read the old rows;
# it answers its own request but is not kept.
_generation = 0


def _lifetime() -> float:
    return float(getattr(settings, "OZ_SERVING_CACHE_SECONDS", 2))


def _live_versions(predictor_id: int) -> tuple:
    champion = challenger = None
    # Without the training-input statistics and gate results (tens of kilobytes of JSON,
    # decoded on every reload of the cache) that serving never reads.
    live = ModelVersion.objects.filter(predictor_id=predictor_id, stage__in=(Stage.CHAMPION, Stage.CHALLENGER))
    for version in live.defer("reference_stats", "gates"):
        if version.stage == Stage.CHAMPION:
            champion = version
        else:
            challenger = version
    return champion, challenger


def _load(slug: str) -> ServingState | None:
    predictor = Predictor.objects.select_related("routing").filter(slug=slug).first()
    if predictor is None:
        return None
    try:
        policy = predictor.routing
    except RoutingPolicy.DoesNotExist:  # a predictor saved without its flag: humans answer
        policy = RoutingPolicy(predictor=predictor, version=0)
    champion, challenger = _live_versions(predictor.pk)
    return ServingState(predictor, policy, champion, challenger, time.monotonic())


def serving_get(slug: str) -> ServingState | None:
    """The predictor named `slug`, its flag and live versions; None when there is no such
    predictor (misses are not cached, so a newly loaded predictor is served at once)."""
    state = _entries.get(slug)
    if state is not None and time.monotonic() - state.loaded_at < _lifetime():
        return state
    started = _generation
    state = _load(slug)
    with _lock:
        if state is None:
            _entries.pop(slug, None)
        elif _generation == started:
            _entries[slug] = state
    return state


def live_versions_for(predictor: Predictor) -> tuple:
    """(champion, challenger) for a predictor, from the cache when it is fresh."""
    state = serving_get(predictor.slug)
    if state is None or state.predictor.pk != predictor.pk:
        return _live_versions(predictor.pk)
    return state.champion, state.challenger


def serving_forget(slug: str | None = None) -> None:
    """Drop this process's entry for `slug` (all entries when None)."""
    global _generation
    with _lock:
        _generation += 1
        if slug is None:
            _entries.clear()
        else:
            _entries.pop(slug, None)


def _forget_predictor(predictor_id: int | None) -> None:
    if predictor_id is None:
        return
    for slug in [slug for slug, state in list(_entries.items()) if state.predictor.pk == predictor_id]:
        serving_forget(slug)


def _on_write(predictor_id: int | None, slug: str | None = None) -> None:
    def forget():
        _forget_predictor(predictor_id)
        if slug:
            serving_forget(slug)

    forget()
    transaction.on_commit(forget)


@receiver([post_save, post_delete], sender=RoutingPolicy, dispatch_uid="serving_cache_routing")
def _routing_changed(sender, instance, **kwargs):
    _on_write(instance.predictor_id)


@receiver([post_save, post_delete], sender=Predictor, dispatch_uid="serving_cache_predictor")
def _predictor_changed(sender, instance, **kwargs):
    _on_write(instance.pk, instance.slug)


@receiver([post_save, post_delete], sender=ModelVersion, dispatch_uid="serving_cache_model_version")
def _model_version_changed(sender, instance, **kwargs):
    # Promotion, rollback, a new challenger: the live versions change.
    _on_write(instance.predictor_id)
