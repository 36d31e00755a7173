"""What explanations cost on /predict in model mode, in-process (Django's test client).

    .venv/bin/python bench/explain.py                      # SQLite in a temp folder
    scripts/testenv.sh .venv/bin/python bench/explain.py   # on PostgreSQL + Redis

Rows, all answered by the champion model:
- `no explain feature`: OZ_EXPLAIN_SAMPLE_PERCENT=0 and prediction_create's explanation
  follow-up replaced by a no-op: the request path as it was before explanations existed.
- `explain absent` / `explain: false`: the default sampling (OZ_EXPLAIN_SAMPLE_PERCENT,
  10 %): the sampled answers only publish a Celery message on commit; nothing is explained
  on the request path. These two must match each other, and the baseline within noise
  plus that publish.
- `explain: true (<estimator>)`: the explanation computed on the request path (the
  explainer is built once, in the warm-up) and a sample row written.

Celery is not eager here (a sampled answer's task is published, as in production: to Redis
under testenv, else to kombu's in-memory broker, and never run), so the figures are the
request path's own. Requests of the compared rows are interleaved one by one, so drift of the
machine hits them alike. Prints medians, p95 and ratios; asserts nothing about time."""
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


def _train(loan, estimator: str, params: dict, world, rng):
    from gateway.models import Predictor
    from models_registry.models import TrainingRun
    from models_registry.services import model_version_promote
    from models_registry.training import training_run_execute

    Predictor.objects.filter(pk=loan.pk).update(training={"estimator": estimator, "params": params})
    run = training_run_execute(run_id=TrainingRun.objects.create(predictor=loan).pk)
    assert run.status == "succeeded", run.error
    return model_version_promote(version=run.model_version)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=600, help="requests per row")
    parser.add_argument("--rounds", type=int, default=12, help="interleaved rounds the requests are spread over")
    parser.add_argument("--labels", type=int, default=300)
    args = parser.parse_args()
    os.environ.setdefault("CELERY_TASK_ALWAYS_EAGER", "false")
    os.environ.setdefault("OZ_LOG_LEVEL", "WARNING")  # no log line per request in the timings
    # SQLite: no heartbeat thread writing while the bench's training run commits its version.
    os.environ.setdefault("OZ_TRAINING_HEARTBEAT_SECONDS", "3600")
    with tempfile.TemporaryDirectory() as tmp:
        from bench.run import setup

        setup(tmp)
        from django.conf import settings
        from django.test import Client

        from gateway import services, serving_cache
        from gateway.definitions import predictors_load
        from gateway.demo import SyntheticPredictor
        from gateway.models import Predictor
        from gateway.services import api_client_create, routing_update
        from models_registry.models import ExplanationSample
        from review.models import Label

        predictors_load(ROOT / "predictors" / "loan-approval.yaml")
        Predictor.objects.filter(slug="loan-approval").update(training={}, gates={}, auto_promote=False)
        loan = Predictor.objects.get(slug="loan-approval")
        _, key = api_client_create(name=f"bench-{random.randint(0, 10**9)}")
        world = SyntheticPredictor(loan.schema, loan.output_spec)
        rng = random.Random(1)
        Label.objects.bulk_create(
            Label(predictor=loan, schema_version=1, input=(x := world.input(rng)), target=world.truth(x), source="import")
            for _ in range(args.labels)
        )
        routing_update(predictor=loan, changes={"mode": "model"})
        client = Client(HTTP_AUTHORIZATION=f"Bearer {key}", HTTP_HOST="127.0.0.1")
        inputs = [world.input(rng) for _ in range(64)]
        counter = iter(range(10**9))
        follow_up = services.explanations_follow_up
        default_percent = settings.OZ_EXPLAIN_SAMPLE_PERCENT

        def request(extra: dict):
            body = {"input": inputs[next(counter) % len(inputs)], **extra}
            response = client.post("/predict/loan-approval", body, content_type="application/json")
            assert response.status_code == 200 and response.json()["source"] == "model", response.content

        def configure(row: str):
            without = row == "no explain feature"
            settings.OZ_EXPLAIN_SAMPLE_PERCENT = 0 if without else default_percent
            services.explanations_follow_up = (lambda **kwargs: None) if without else follow_up

        def run_rows(rows: dict) -> dict:
            timings = {name: [] for name in rows}
            for name, extra in rows.items():  # warm up: model, explainer, caches
                configure(name)
                for _ in range(20):
                    request(extra)
            # Request by request in turn (a, b, c, a, b, c, ...): drift of the machine or the
            # database hits every row alike; each round starts with a different row.
            names = list(rows)
            per_round = max(1, args.n // args.rounds)
            for round_ in range(args.rounds):
                order = names[round_ % len(names):] + names[:round_ % len(names)]
                for _ in range(per_round):
                    for name in order:
                        configure(name)
                        start = time.perf_counter()
                        request(rows[name])
                        timings[name].append(time.perf_counter() - start)
            configure("")
            return timings

        results = {}
        for estimator, params in (("logistic_regression", {}), ("random_forest", {"n_estimators": 100})):
            _train(loan, estimator, params, world, rng)
            serving_cache.serving_forget()
            rows = {"explain: true": {"explain": True}}
            if estimator == "logistic_regression":
                rows = {"no explain feature": {}, "explain absent": {}, "explain: false": {"explain": False}, **rows}
            for name, timings in run_rows(rows).items():
                results[f"{name} ({estimator})"] = timings

        # What the feature adds to an answer nobody asked to explain: the sampling decision.
        import uuid

        from models_registry.explain import explanation_sampled

        ids = [uuid.uuid4() for _ in range(20_000)]
        start = time.perf_counter()
        for pk in ids:
            explanation_sampled(pk)
        decision_us = (time.perf_counter() - start) / len(ids) * 1e6

        db = os.environ["DATABASE_URL"].split(":", 1)[0]
        print(f"/predict in model mode, in-process, n={args.n} per row in {args.rounds} interleaved rounds, database={db}, "
              f"OZ_EXPLAIN_SAMPLE_PERCENT={default_percent:g}, {ExplanationSample.objects.count()} samples kept")
        print(f"{'row':44} {'p50 ms':>8} {'p95 ms':>8} {'req/s':>8}")
        p50s = {}
        for name, timings in results.items():
            timings.sort()
            p50s[name] = statistics.median(timings)
            p95 = timings[max(0, int(len(timings) * 0.95) - 1)]
            print(f"{name:44} {p50s[name] * 1e3:8.2f} {p95 * 1e3:8.2f} {1 / p50s[name]:8.0f}")
        print(f"{'sampling decision per model answer':44} {decision_us:8.2f} µs (in-process, no I/O)")
        base = p50s["no explain feature (logistic_regression)"]
        absent = p50s["explain absent (logistic_regression)"]
        print("ratios of medians")
        print(f"{'explain: false / explain absent':44} {p50s['explain: false (logistic_regression)'] / absent:8.3f}")
        print(f"{'explain absent / no explain feature':44} {absent / base:8.3f}")
        print(f"{'explain: false / no explain feature':44} {p50s['explain: false (logistic_regression)'] / base:8.3f}")
        for estimator in ("logistic_regression", "random_forest"):
            name = f"explain: true ({estimator})"
            print(f"{name + ' / no explain feature':44} {p50s[name] / base:8.3f}")


if __name__ == "__main__":
    main()
