"""The benchmarks still run and print their figures (a few iterations each: the figures
themselves are for people, not assertions). Each runs in its own process on a temporary
SQLite database, never on the suite's PostgreSQL."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
