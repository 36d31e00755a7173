"""make run has no Celery worker or beat: `manage.py run_local` runs the beat schedule in a
thread of the development server (config/local_beat.py), so a human SLA, webhook retries,
expired leases and drift checks work there as in a deployment."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta

from django.utils import timezone

from config.local_beat import LocalBeat
from gateway.models import Prediction
from gateway.services import prediction_create, routing_update
from tests import factories
from tests.servers import ROOT, database_url, free_port


def _past_its_sla(loan) -> Prediction:
    routing_update(predictor=loan, changes={"mode": "human", "human_sla_seconds": 10, "fallback": "rule"})
    loan.routing.refresh_from_db()
    prediction, _ = prediction_create(predictor=loan, policy=loan.routing, client=None, clean_input=factories.loan_input())
    Prediction.objects.filter(pk=prediction.pk).update(sla_due_at=timezone.now() - timedelta(minutes=1))
    return prediction


def test_each_entry_runs_at_start_then_every_interval_and_a_failing_one_stops_nothing(transactional_db, loan, capfd):
    prediction = _past_its_sla(loan)
    beat = LocalBeat({
        "missing": {"task": "gateway.tasks.no_such_task", "schedule": timedelta(seconds=5)},
        "answer-sla-misses": {"task": "gateway.tasks.sla_sweep", "schedule": timedelta(seconds=15)},
    }, now=100.0)

    assert beat.run_due(100.0) == ["missing", "answer-sla-misses"]
    prediction.refresh_from_db()
    assert prediction.provisional and prediction.source == "rule"  # the SLA sweep ran, after the failure
    assert "periodic task missing (gateway.tasks.no_such_task) failed" in capfd.readouterr().err  # logged
    assert beat.run_due(104.0) == []
    assert beat.run_due(105.0) == ["missing"]
    assert beat.run_due(115.0) == ["missing", "answer-sla-misses"]


def test_the_local_server_runs_the_schedule(transactional_db, loan, tmp_path):
    # End to end, as `make run` starts it: a prediction past its SLA gets its provisional
    # answer with nothing but the development server running.
    prediction = _past_its_sla(loan)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")},
        "DJANGO_SETTINGS_MODULE": "config.settings.local",
        "DATABASE_URL": database_url(),
        "CELERY_TASK_ALWAYS_EAGER": "true",
        "OZ_MEDIA_ROOT": str(tmp_path / "media"),
    }
    log = open(tmp_path / "run_local.log", "wb")
    server = subprocess.Popen([sys.executable, "manage.py", "run_local", f"127.0.0.1:{free_port()}", "--noreload"],
                              cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and server.poll() is None:
            prediction.refresh_from_db()
            if prediction.provisional:
                break
            time.sleep(0.5)
        assert prediction.provisional and prediction.source == "rule", (tmp_path / "run_local.log").read_text()[-3000:]
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
