from __future__ import annotations

import json
import time

import pytest

from .harness import HEARTBEAT_SECONDS, SESSION_ROWS, Receiver, Stack, broker_bind, require_testenv


@pytest.fixture(scope="package")
def _stack_processes(django_db_setup, tmp_path_factory):
    """gunicorn, a Celery worker and beat, started once for the fault tests (about ten
    seconds) and stopped after them. Their database is the test database."""
    require_testenv()
    stack = Stack(tmp_path_factory.mktemp("faults"))
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def stack(_stack_processes, transactional_db, settings):
    """The running stack, its broker binding restored (see broker_bind), and this process's
    artifacts in the servers' media folder."""
    broker_bind()
    settings.MEDIA_ROOT = str(_stack_processes.media)
    # A run trained in this process must beat as often as beat's reaper expects.
    settings.OZ_TRAINING_HEARTBEAT_SECONDS = HEARTBEAT_SECONDS
    stack = _stack_processes
    for proc in (stack.web, stack.worker, stack.beat):
        assert proc.running(), f"{proc.name} is not running:\n{proc.tail()}"
    # The database was emptied after the previous test; let the web processes' serving
    # caches (OZ_SERVING_CACHE_SECONDS=1) forget its predictors before this test makes new
    # ones under the same slugs (a live server never sees its rows vanish like that).
    time.sleep(1.2)
    yield stack
    # A test that restarted PostgreSQL left this process's connections dead; the next test
    # (a transactional one does no health check) must not inherit them.
    from django.db import connections

    connections.close_all()


@pytest.fixture
def receiver():
    hooks = Receiver()
    yield hooks
    hooks.close()


def pytest_terminal_summary(terminalreporter):
    if SESSION_ROWS:
        terminalreporter.section("fault injection (test-artifacts/faults.json)")
        for row in SESSION_ROWS:
            terminalreporter.write_line(json.dumps(row, default=str))
