"""`make run`'s stand-in for Celery beat. There is no worker and no beat there (tasks run
eagerly), so nothing would retry a failed webhook, give a provisional answer past a human
SLA, return an expired lease or check drift. `manage.py run_local` runs the beat schedule
(settings.CELERY_BEAT_SCHEDULE) in a thread of the development server instead: each entry
when the server starts and then every `schedule` seconds, each task in that thread as Celery
would run it eagerly. A task that fails is logged and tried again at its next turn.
Deployments run `celery beat` (docker-compose.yml); this is for one local process only."""
from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

from django.conf import settings
from django.db import close_old_connections

logger = logging.getLogger(__name__)


def _seconds(schedule) -> float:
    return schedule.total_seconds() if isinstance(schedule, timedelta) else float(schedule)


class LocalBeat:
    """The schedule's entries and when each is next due (monotonic seconds)."""

    def __init__(self, schedule: dict, *, now: float):
        from config.celery_app import app

        # What a worker imports at start (every app's tasks module): a web process has
        # imported only the task modules its requests needed.
        app.loader.import_default_modules()
        self.schedule = dict(schedule)
        self.next_at = dict.fromkeys(self.schedule, now)  # every entry runs first at start, as beat does

    def run_due(self, now: float) -> list[str]:
        """Run every entry that is due at `now`; the names of those run, in schedule order."""
        from config.celery_app import app

        ran = []
        for name, entry in self.schedule.items():
            if now < self.next_at[name]:
                continue
            ran.append(name)
            try:
                self.next_at[name] = now + _seconds(entry["schedule"])
                result = app.tasks[entry["task"]].apply(args=entry.get("args", ()), kwargs=entry.get("kwargs", {}))
                if result.failed():
                    logger.error("periodic task %s (%s) failed: %r", name, entry["task"], result.result)
            except Exception:
                logger.exception("periodic task %s (%s) failed", name, entry["task"])
            finally:
                close_old_connections()  # as after a request: this thread keeps no stale connection
        return ran


def local_beat_start(*, tick_seconds: float = 1.0) -> threading.Thread:
    """Start the schedule in a daemon thread (it ends with the server)."""
    beat = LocalBeat(settings.CELERY_BEAT_SCHEDULE, now=time.monotonic())

    def loop():
        while True:
            try:
                beat.run_due(time.monotonic())
            except Exception:  # the schedule goes on whatever one turn did
                logger.exception("periodic tasks: a turn failed")
            time.sleep(tick_seconds)

    thread = threading.Thread(target=loop, name="oz-local-beat", daemon=True)
    thread.start()
    logger.info("periodic tasks run in this process: %s", ", ".join(beat.schedule))
    return thread
