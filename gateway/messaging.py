"""Celery messages are sent only after the transaction that made their work commits, and a
broker outage never fails a request: the database row is the source of truth, the message
is a nudge, and the periodic sweeper (gateway.tasks.outbox_sweep) re-sends what was lost."""
from __future__ import annotations

import logging

from django.db import transaction

logger = logging.getLogger(__name__)


def task_send(task, *args) -> bool:
    """Publish now, without Celery's blocking publish retries. False when the broker is down."""
    try:
        task.apply_async(args=args, retry=False)
        return True
    except Exception:  # any broker failure: the sweeper will re-send
        logger.warning("could not publish %s%r; the sweeper will re-send it", task.name, args, exc_info=True)
        return False


def task_send_on_commit(task, *args) -> None:
    transaction.on_commit(lambda: task_send(task, *args))
