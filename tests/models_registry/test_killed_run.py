"""A worker killed mid-run (SIGKILL: out of memory, a hard time limit, a host restart) leaves
a failed run, no model version and no artifact, and the predictor free for the next run.

The run executes for real in another process (`manage.py shell -c`) on the test PostgreSQL,
is killed while it cross-validates a grid, and the reaper finds it by its stopped heartbeat."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import connection
from django.utils import timezone

from gateway.demo import SyntheticPredictor
from gateway.models import Predictor
from models_registry.models import ModelVersion, TrainingRun
from models_registry.training import training_run_request, training_runs_reap
from review.models import Label
from tests import factories

SLOW_GRID = {"C": [round(0.01 * 1.6**i, 6) for i in range(24)]}  # 24 x 3 folds on thousands of labels


def _database_url() -> str:
    db = connection.settings_dict
    return f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def _run_in_another_process(run_id: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": _database_url(),  # the test database, not the one it was made from
        "OZ_MEDIA_ROOT": settings.MEDIA_ROOT,
        "OZ_TRAINING_HEARTBEAT_SECONDS": "0.3",
    }
    code = f"from models_registry.training import training_run_execute; training_run_execute(run_id={run_id})"
    return subprocess.Popen(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=settings.BASE_DIR, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def test_a_run_killed_mid_fit_fails_registers_nothing_and_frees_the_predictor(celery_worker_thread):
    loan = factories.loan_predictor()
    Predictor.objects.filter(pk=loan.pk).update(training={"grid": SLOW_GRID})
    world = SyntheticPredictor(loan.schema, loan.output_spec)
    rng = random.Random(4)
    inputs = [world.input(rng) for _ in range(4000)]
    Label.objects.bulk_create(
        Label(predictor=loan, schema_version=1, input=data, target=world.truth(data), source="import") for data in inputs
    )
    run = TrainingRun.objects.create(predictor=loan)  # queued; run by hand in the other process
    process = _run_in_another_process(run.pk)
    try:
        # It runs, beats, and gets into the grid search.
        _wait_for(lambda: TrainingRun.objects.filter(pk=run.pk, status="running").exists(), 60, "the run to start")
        first_beat = TrainingRun.objects.get(pk=run.pk).heartbeat_at
        _wait_for(
            lambda: "grid {'C'" in TrainingRun.objects.get(pk=run.pk).logs,
            120, "the grid search to be under way (its log lines come with the heartbeat)",
        )
        assert process.poll() is None, process.stderr.read().decode()
        assert TrainingRun.objects.get(pk=run.pk).heartbeat_at > first_beat
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    run.refresh_from_db()
    assert run.status == "running" and run.worker.endswith(f":{process.pid}")
    assert not ModelVersion.objects.exists()
    media = Path(settings.MEDIA_ROOT)
    assert _files_under(media / "models") == []
    # The predictor is blocked until the reaper notices the silence.
    assert training_runs_reap()["running_failed"] == 0
    later = timezone.now() + timedelta(seconds=settings.OZ_TRAINING_HEARTBEAT_TIMEOUT + 1)
    assert training_runs_reap(now=later)["running_failed"] == 1
    run.refresh_from_db()
    assert run.status == "failed" and "stopped responding" in run.error
    assert not ModelVersion.objects.exists() and _files_under(media / "models") == []

    # A new run can be requested, and a real worker trains it.
    Predictor.objects.filter(pk=loan.pk).update(training={})
    loan.refresh_from_db()
    again = training_run_request(predictor=loan)
    _wait_for(
        lambda: TrainingRun.objects.filter(pk=again.pk, status__in=["succeeded", "failed"]).exists(), 120, "the new run",
    )
    again.refresh_from_db()
    assert again.status == "succeeded", again.error
    version = ModelVersion.objects.get()
    assert version.run_id == again.pk and version.version == 1
    stored = {version.artifact.name, version.onnx_artifact.name} - {""}
    assert {p.relative_to(media).as_posix() for p in _files_under(media / "models")} == stored
