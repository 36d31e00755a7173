"""The benchmarks still run and print their figures (a few iterations each: the figures
themselves are for people, not assertions). Each runs in its own process: the /predict
benches on a temporary SQLite database; the queue, training and export benches on a
database of their own on the suite's PostgreSQL server (never the suite's database)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _bench(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE", "OZ_MEDIA_ROOT")}
    done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_the_predict_bench_measures_every_route():
    out = _bench("bench/run.py", "--n", "5")
    assert "database=sqlite" in out
    for row in ("healthz (floor)", "predict, rule", "predict, model", "predict, human"):
        line = next(x for x in out.splitlines() if x.startswith(row))
        assert float(line.split()[-1]) >= 1.0  # the "x floor" ratio


def test_the_serving_bench_compares_both_formats_for_every_estimator():
    out = _bench("bench/serving_formats.py", "--n", "5", "--labels", "150")
    rows = {" ".join(x.split()[:2]): x for x in out.splitlines() if x.startswith(("label ", "number "))}
    assert set(rows) == {
        "label logistic_regression", "label linear_svm", "label random_forest", "label hist_gradient_boosting",
        "number ridge", "number random_forest", "number gradient_boosting",
    }
    assert "pass" in rows["label logistic_regression"]  # the default estimator serves through ONNX


# -- the queue, training and export benches: on PostgreSQL, as they are meant to run ---------


@pytest.fixture(scope="module")
def bench_postgres(tmp_path_factory):
    """The environment for a bench on the suite's PostgreSQL server: each bench creates (and
    drops) a database of its own there, copied from one migrated template made here once."""
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        pytest.skip("these benches run on PostgreSQL: run the suite under scripts/testenv.sh")
    # The settings the benches pick themselves; no Redis (the suite's cache stays the suite's).
    env = {k: v for k, v in os.environ.items()
           if k not in ("DJANGO_SETTINGS_MODULE", "OZ_MEDIA_ROOT", "REDIS_URL", "CELERY_BROKER_URL")}
    made = subprocess.run([sys.executable, "bench/_common.py", "make-template"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr[-3000:]
    template = made.stdout.strip().splitlines()[-1]
    # Their figures go to a folder of the tests' own, not over bench/results/.
    yield {**env, "OZ_BENCH_TEMPLATE_DB": template, "OZ_BENCH_RESULTS_DIR": str(tmp_path_factory.mktemp("results"))}
    from bench._common import drop_postgres_database

    drop_postgres_database(url, template)


def _pg_bench(env: dict, *args: str) -> tuple[str, dict]:
    """Run a bench; returns its output and the figures it wrote (bench/results/<name>.json)."""
    done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    written = next(x for x in done.stdout.splitlines() if x.startswith("figures written to "))
    path = Path(written.removeprefix("figures written to "))
    assert path.parent == Path(env["OZ_BENCH_RESULTS_DIR"]) and path.name.endswith("-quick.json")
    return done.stdout, json.loads(path.read_text())


def test_the_queue_bench_refuses_sqlite():
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE", "OZ_MEDIA_ROOT")}
    done = subprocess.run([sys.executable, "bench/review_queue.py", "--quick"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "needs PostgreSQL" in done.stderr and "scripts/testenv.sh" in done.stderr


def test_the_queue_bench_measures_claims_and_finds_no_double_claim(bench_postgres):
    out, figures = _pg_bench(bench_postgres, "bench/review_queue.py", "--quick", "--reviewers", "4")
    assert figures["database"]["database"] == "postgresql"
    _solo, back_to_back, paced = figures["phases"]
    assert back_to_back["reviewers"] == 4 and back_to_back["claim"]["n"] > 0 and paced["think_seconds"] > 0
    assert back_to_back["claim"]["p50_ms"] <= back_to_back["claim"]["p99_ms"]
    assert figures["double_claims"]["double_claims"] == 0
    assert figures["double_claims"]["every_claim_in_history"]
    assert "Index Scan using reviewtask_claimable_idx" in "\n".join(figures["explain_after"]["plan"])
    assert "goal: p99 claim-next < 10 ms" in out and "goal: 0 double claims -> MET" in out


def test_the_training_bench_times_each_size_and_phase(bench_postgres):
    out, figures = _pg_bench(bench_postgres, "bench/training.py", "--quick")
    small, large = figures["runs"]
    assert (small["n_labels"], large["n_labels"]) == (500, 1000)
    for run in figures["runs"]:
        assert run["status"] == "succeeded" and run["fairness"] and run["onnx"] == "onnx"
        assert run["run_peak_memory_bytes"] > 0 and run["rss"]["peak"] > 0
        assert {"read labels", "fit", "fairness (fairlearn)", "ONNX export + parity", "drift reference stats"} <= set(
            run["phases"])
    assert figures["ratios"][1]["labels"] == 2
    assert "not measured at these sizes" in out  # the goal is for 100k labels


def test_the_export_bench_streams_both_formats_in_flat_memory(bench_postgres):
    out, figures = _pg_bench(bench_postgres, "bench/export.py", "--quick")
    assert [(r["format"], r["labels"]) for r in figures["runs"]] == [
        ("csv", 5_000), ("csv", 25_000), ("jsonl", 5_000), ("jsonl", 25_000)]
    # Figures, not a verdict on time; memory is the export's promise, and 5x the labels
    # must not come near 5x the memory.
    assert all(ratio < 3 for ratio in figures["goal"]["ratios"].values()), figures["goal"]
    assert "goal: flat memory" in out


def test_the_http_bench_serves_every_route_and_the_floors_over_http(bench_postgres):
    # wrk against gunicorn on PostgreSQL, for a couple of seconds each (no peers: their
    # virtualenvs are built by `make bench`, not by the suite).
    import re

    # Redis database 1 of the suite's server: the servers' cache and broker, apart from the suite's.
    env = {**bench_postgres, "REDIS_URL": re.sub(r"/\d*$", "/1", os.environ.get("REDIS_URL", ""))}
    out, figures = _pg_bench(env, "bench/predict_http.py", "--quick")
    rows = figures["rows"]
    assert set(rows) == {"oz model", "oz human", "oz rule", "floor sklearn", "floor onnx", "floor onnx-store",
                         "bare django-drf"}
    for name, row in rows.items():
        assert row["requests"] > 0 and row["non_2xx"] == 0 and row["socket_errors"] == 0, (name, row)
    # Every request Oz answered is a stored prediction.
    stored = figures["predictions_stored"]
    assert stored["bench-model"] >= rows["oz model"]["requests"] and stored["bench-human"] >= rows["oz human"]["requests"]
    # ...and so is every answer of the storing floor and of the bare Django app (their own
    # tables, in the bench's database).
    assert stored["floor onnx-store"] >= rows["floor onnx-store"]["requests"]
    assert stored["bare django-drf"] >= rows["bare django-drf"]["requests"]
    # The calibration ratios are this run's own figures.
    ratio = figures["calibration"]["bare django-drf / floor onnx"]["rps"]
    assert ratio == pytest.approx(rows["bare django-drf"]["rps"] / rows["floor onnx"]["rps"], abs=1e-3)
    assert "oz model / bare django-drf" in figures["calibration"]
    assert "goal oz model req/s >= 0.5x floor onnx" in out
