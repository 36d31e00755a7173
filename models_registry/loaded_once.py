"""What a process builds once per model version and keeps: served models (serving.py) and
explainers (explain.py). One builder per key at a time, other keys in parallel; a failed
build is remembered for a while, so a broken artifact is not read from storage on every
request."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable


class LoadedOnce:
    def __init__(self, failure_memory_seconds: float):
        self.failure_memory_seconds = failure_memory_seconds
        self.items: dict[Hashable, object] = {}
        self._failed: dict[Hashable, tuple[float, BaseException]] = {}  # key -> (retry after, error)
        self._key_locks: dict[Hashable, threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, build: Callable[[], object], *, on_failure: Callable[[BaseException], None] | None = None):
        item = self.items.get(key)
        if item is not None:
            return item
        with self._lock:
            lock = self._key_locks.setdefault(key, threading.Lock())
        with lock:
            item = self.items.get(key)
            if item is not None:
                return item
            failure = self._failed.get(key)
            if failure is not None and time.monotonic() < failure[0]:
                raise failure[1].with_traceback(None)
            try:
                item = build()
            except Exception as exc:
                if on_failure is not None:
                    on_failure(exc)
                self._failed[key] = (time.monotonic() + self.failure_memory_seconds, exc)
                raise
            self._failed.pop(key, None)
            self.items[key] = item
        return item

    def clear(self) -> None:
        with self._lock:
            self.items.clear()
            self._failed.clear()
            self._key_locks.clear()
