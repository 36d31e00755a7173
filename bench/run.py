"""Benchmark of the /predict hot path, in-process (Django's test client, no network).

    make bench                          # SQLite in a temp folder, Celery eager
    scripts/testenv.sh .venv/bin/python bench/run.py   # on PostgreSQL + Redis

Prints latency percentiles and queries per request for each route (rule, model, human),
and each one's cost relative to /healthz (the framework's floor), so a regression in the
gateway's own work shows up as a ratio, whatever the machine."""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def setup(tmp: str) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{tmp}/bench.sqlite3")
    os.environ.setdefault("OZ_MEDIA_ROOT", f"{tmp}/media")
    os.environ.setdefault("OZ_THROTTLE_CLIENT", "1000000/min")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    if "test" in os.environ["DATABASE_URL"] or os.environ["DATABASE_URL"].startswith("postgres"):
        call_command("flush", "--noinput", verbosity=0)


def measure(call, n: int) -> tuple[list[float], float]:
    from django.db import connection

    for _ in range(min(20, n)):
        call()  # warm up (model load, caches)
    queries = []
    # execute_wrapper rather than CaptureQueriesContext: each request resets queries_log.
    with connection.execute_wrapper(lambda execute, sql, *a: (queries.append(sql), execute(sql, *a))[1]):
        call()
    timings = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        timings.append(time.perf_counter() - start)
    return timings, len(queries)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        setup(tmp)
        from django.test import Client

        from gateway.definitions import predictors_load
        from gateway.demo import SyntheticPredictor
        from gateway.models import Predictor
        from gateway.services import api_client_create, routing_update
        from models_registry.models import TrainingRun
        from models_registry.services import model_version_promote
        from models_registry.training import training_run_execute
        from review.models import Label

        predictors_load(ROOT / "predictors" / "loan-approval.yaml")
        # The bench measures serving, not gates: its model is promoted whatever they would say.
        Predictor.objects.filter(slug="loan-approval").update(training={}, gates={}, auto_promote=False)
        loan = Predictor.objects.get(slug="loan-approval")
        _, key = api_client_create(name=f"bench-{random.randint(0, 10**9)}")
        world = SyntheticPredictor(loan.schema, loan.output_spec)
        rng = random.Random(1)
        Label.objects.bulk_create(
            Label(predictor=loan, schema_version=1, input=(x := world.input(rng)), target=world.truth(x), source="import")
            for _ in range(300)
        )
        run = training_run_execute(run_id=TrainingRun.objects.create(predictor=loan).pk)
        model_version_promote(version=run.model_version)

        client = Client(HTTP_AUTHORIZATION=f"Bearer {key}", HTTP_HOST="127.0.0.1")
        inputs = [world.input(rng) for _ in range(64)]
        counter = iter(range(10**9))

        def predict():
            body = {"input": inputs[next(counter) % len(inputs)]}
            response = client.post("/predict/loan-approval", body, content_type="application/json")
            assert response.status_code in (200, 202), response.content

        def health():
            assert client.get("/healthz").status_code == 200

        results = {"healthz (floor)": measure(health, args.n)}
        for mode in ("rule", "model", "human"):
            routing_update(predictor=loan, changes={"mode": mode})
            results[f"predict, {mode}"] = measure(predict, args.n)

        floor = statistics.median(results["healthz (floor)"][0])
        db = os.environ["DATABASE_URL"].split(":", 1)[0]
        print(f"/predict in-process, n={args.n} per row, database={db}")
        print(f"{'route':20} {'p50 ms':>8} {'p95 ms':>8} {'req/s':>8} {'queries':>8} {'x floor':>8}")
        for name, (timings, queries) in results.items():
            timings.sort()
            p50 = statistics.median(timings)
            p95 = timings[int(len(timings) * 0.95) - 1]
            print(f"{name:20} {p50 * 1e3:8.2f} {p95 * 1e3:8.2f} {1 / p50:8.0f} {queries:8d} {p50 / floor:8.1f}")


if __name__ == "__main__":
    main()
