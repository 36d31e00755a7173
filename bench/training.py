"""Training cost by label count: a synthetic 30-field predictor trained on 10k, 30k and 100k
labels, each run through the real path (`training_run_execute`: labels read in chunks,
features, fit, holdout metrics, fairness, ONNX export and parity, drift reference stats,
artifacts, gates) in a fresh child process.

    scripts/testenv.sh .venv/bin/python bench/training.py            # PostgreSQL (the real target)
    .venv/bin/python bench/training.py                               # SQLite in a temp folder
    scripts/testenv.sh .venv/bin/python bench/training.py --quick    # smoke run: 500 and 1,000 labels

Per size: the run's duration (as it records it), the child's CPU time over the run, and
each phase's own time; memory as the run records it (`peak_memory_bytes`) and as this bench
reads it (the child process's resident set at its highest over the run, and that peak above
the resident set before the run: the run's own growth), with each phase's highest resident
set; and the growth ratios between sizes (time and memory per label).
The labels are loaded by the parent (COPY on PostgreSQL), so the child's memory holds the
run only. Prints a table and writes bench/results/training.json.
Goal: 100k labels with 30 fields in under 60 s and 2 GiB."""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    MiB,
    PeakRSS,
    Stopwatch,
    analyze,
    goal_line,
    insert_dicts,
    max_rss_bytes,
    mib,
    run_child,
    setup,
    write_results,
)

GOAL_SECONDS = 60.0
GOAL_BYTES = 2 * 1024 * MiB
GOAL_LABELS = 100_000


def definition(slug: str, fields: int) -> dict:
    """A predictor definition (the YAML format of predictors/) with `fields` input fields
    of every kind, in the proportions of a typical tabular form: a quarter numbers, a fifth
    integers, a fifth booleans, a quarter categories and the rest free text."""
    kinds = []
    for i in range(fields):
        share = i / fields
        kinds.append("number" if share < 0.25 else "integer" if share < 0.45 else "boolean" if share < 0.65
                     else "category" if share < 0.9 else "text")
    schema: dict = {}
    counts: dict[str, int] = {}
    for kind in kinds:
        counts[kind] = counts.get(kind, 0) + 1
        n = counts[kind]
        name = f"{kind[:3]}_{n:02d}"
        if kind == "number":
            schema[name] = {"type": "number", "minimum": 0, "maximum": [100, 5_000, 250_000][n % 3],
                            "required": n == 1}
        elif kind == "integer":
            schema[name] = {"type": "integer", "minimum": 0, "maximum": [10, 60, 400][n % 3]}
        elif kind == "boolean":
            schema[name] = {"type": "boolean"}
        elif kind == "category":
            schema[name] = {"type": "category", "choices": [f"c{n}_{j}" for j in range(3 + n % 6)]}
        else:
            schema[name] = {"type": "text", "max_length": 500, "log": False}
    sensitive = next(name for name, spec in schema.items() if spec["type"] == "category")
    return {
        "slug": slug,
        "description": f"bench: {fields} synthetic fields",
        "input": schema,
        "output": {"type": "label", "labels": ["approve", "refer"]},
        "sensitive_attribute": sensitive,
        "routing": {"mode": "human"},
        "training": {"estimator": "logistic_regression", "holdout_fraction": 0.25},
    }


def seed_labels(tmp: str, sizes: list[int], fields: int, seed: int) -> dict:
    """One predictor per size (its labels exactly that many), loaded from YAML."""
    import yaml

    from gateway.definitions import predictors_load
    from gateway.demo import SyntheticPredictor
    from gateway.models import Predictor
    from review.models import Label

    slugs = {}
    with Stopwatch() as clock:
        for n in sizes:
            slug = f"bench-{fields}f-{n}"
            path = Path(tmp) / f"{slug}.yaml"
            path.write_text(yaml.safe_dump(definition(slug, fields), sort_keys=False))
            predictors_load(path)
            predictor = Predictor.objects.get(slug=slug)
            world = SyntheticPredictor(predictor.schema, predictor.output_spec, seed=seed,
                                       blind_to=(predictor.sensitive_attribute,))
            rng = random.Random(seed + n)

            def rows(predictor=predictor, world=world, rng=rng, n=n):
                for _ in range(n):
                    data = world.input(rng)
                    yield {"predictor_id": predictor.pk, "schema_version": predictor.schema_version, "input": data,
                           "target": world.truth(data), "source": "import"}

            insert_dicts(Label, rows())
            slugs[n] = slug
        analyze(Label)
    return {"slugs": slugs, "seconds": clock.seconds}


# -- the child: one training run, timed by phase -------------------------------------------


class Phases:
    """Wraps the training module's steps with timers. A step's time is its own: a step
    called inside another (features inside reading labels, say) is taken out of the outer
    one. A sampler thread reads the process's resident set every 10 ms and keeps each
    step's highest reading, so the table shows where the run's memory peaks."""

    STEPS = {
        "_environment": "environment (git, versions)",
        "_dataset": "read labels",
        "_split": "split",
        "feature_rows": "features",
        "usable_text_fields": "text vocabulary check",
        "_evaluate": "holdout metrics",
        "_champion_scored": "champion on holdout",
        "_fairness": "fairness (fairlearn)",
        "_onnx_export": "ONNX export + parity",
        "reference_stats_for_training": "drift reference stats",
        "artifact_save": "artifact (skops) save",
        "_gates_apply": "gates",
    }

    def __init__(self):
        import threading

        self.seconds: dict[str, float] = {}
        self.rss_peak: dict[str, int] = {}
        self.stack: list[list] = []  # [label, start, time of the steps inside it]
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.sampler = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        from bench._common import rss_bytes

        while not self.stopped.wait(0.01):
            rss = rss_bytes() or 0
            with self.lock:
                label = self.stack[-1][0] if self.stack else "other"
                if rss > self.rss_peak.get(label, 0):
                    self.rss_peak[label] = rss

    def _timed(self, label, fn):
        def wrapper(*args, **kwargs):
            with self.lock:
                self.stack.append([label, time.perf_counter(), 0.0])
            try:
                return fn(*args, **kwargs)
            finally:
                with self.lock:
                    _, start, inner = self.stack.pop()
                    spent = time.perf_counter() - start
                    self.seconds[label] = self.seconds.get(label, 0.0) + spent - inner
                    if self.stack:
                        self.stack[-1][2] += spent

        return wrapper

    def install(self):
        from models_registry import artifacts, training

        for name, label in self.STEPS.items():
            setattr(training, name, self._timed(label, getattr(training, name)))
        artifacts.onnx_artifact_save = self._timed("artifact (ONNX) save", artifacts.onnx_artifact_save)
        build = training.pipeline_build
        phases = self

        def pipeline_build(*args, **kwargs):
            pipeline = build(*args, **kwargs)
            pipeline.fit = phases._timed("fit", pipeline.fit)
            return pipeline

        training.pipeline_build = pipeline_build
        self.sampler.start()

    def stop(self):
        self.stopped.set()
        self.sampler.join()


class _CPU:
    def __enter__(self):
        self.start = time.process_time()
        return self

    def __exit__(self, *exc):
        self.seconds = time.process_time() - self.start
        return False


def child(slug: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        setup(tmp, name="training")
        import logging

        for handler in logging.getLogger().handlers:  # the run keeps its INFO lines in its own log
            handler.setLevel(logging.WARNING)
        from gateway.models import Predictor
        from models_registry.models import TrainingRun
        from models_registry.training import training_run_execute

        phases = Phases()
        phases.install()
        predictor = Predictor.objects.get(slug=slug)
        run = TrainingRun.objects.create(predictor=predictor)
        import gc

        gc.collect()
        with PeakRSS() as rss, Stopwatch() as wall, _CPU() as cpu:
            run = training_run_execute(run_id=run.pk)
        phases.stop()
        if run.status != "succeeded":
            raise SystemExit(f"training run failed: {run.error}")
        version = run.model_version
        return {
            "slug": slug,
            "status": run.status,
            "n_labels": run.dataset["n_labels"],
            "n_train": run.dataset["n_train"],
            "n_holdout": run.dataset["n_holdout"],
            "duration_seconds": run.duration_seconds,
            "wall_seconds": wall.seconds,
            "phases": phases.seconds,
            "phase_rss_peak_bytes": phases.rss_peak,
            "run_peak_memory_bytes": run.peak_memory_bytes,
            "cpu_seconds": cpu.seconds,
            "rss": rss.as_dict(),
            "max_rss_bytes": max_rss_bytes(),
            "accuracy": run.metrics.get("accuracy"),
            "onnx": version.serving_format,
            "fairness": bool(run.fairness),
        }


# -- the parent -----------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,30000,100000", help="label counts, comma separated")
    parser.add_argument("--fields", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="smoke size: 500 and 1,000 labels")
    parser.add_argument("--keep-db", action="store_true")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--slug", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.slug)))
        return
    sizes = [500, 1000] if args.quick else [int(x) for x in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        db = setup(tmp, name="training", keep_db=args.keep_db)
        if db["database"] == "sqlite":
            # SQLite has one writer: the run's heartbeat thread would hold up its final commit.
            os.environ.setdefault("OZ_TRAINING_HEARTBEAT_SECONDS", "3600")
        seeded = seed_labels(tmp, sizes, args.fields, args.seed)
        print(f"training bench: {args.fields} input fields, logistic_regression, {db['database']} "
              f"{db['server_version']}, {os.cpu_count()} CPUs (labels loaded in {seeded['seconds']:.1f} s)")
        results = [run_child("training.py", "--slug", seeded["slugs"][n]) for n in sizes]

    print()
    head = f"{'labels':>8} {'run s':>7} {'cpu s':>7} {'s/10k':>6} {'x time':>7} {'x cpu':>6} {'run peak MiB':>12} " \
           f"{'RSS peak MiB':>12} {'RSS growth MiB':>14} {'x mem':>6} {'accuracy':>8}"
    print(head)
    first = results[0]
    for r in results:
        print(f"{r['n_labels']:8d} {r['duration_seconds']:7.1f} {r['cpu_seconds']:7.1f} "
              f"{r['duration_seconds'] / r['n_labels'] * 1e4:6.2f} {r['duration_seconds'] / first['duration_seconds']:7.2f} "
              f"{r['cpu_seconds'] / first['cpu_seconds']:6.2f} {mib(r['run_peak_memory_bytes']):>12} "
              f"{mib(r['rss']['peak']):>12} {mib(r['rss']['growth']):>14} "
              f"{r['rss']['growth'] / max(first['rss']['growth'], 1):6.2f} {r['accuracy']:8.3f}")
    print(f"(x time, x cpu, x mem: against {first['n_labels']} labels; cpu s: the child's CPU time over the run (less "
          f"sensitive to a busy machine than run s); run peak: peak_memory_bytes as the run records it; RSS peak: the "
          f"child's resident set at its highest during the run ({first['rss']['method']}); RSS growth: that peak above "
          f"the RSS before the run)")
    print()
    labels = list(Phases.STEPS.values())
    labels[labels.index("features") + 1:labels.index("features") + 1] = ["fit"]
    labels.append("artifact (ONNX) save")
    print(f"{'phase, seconds':28}" + "".join(f"{r['n_labels']:>10d}" for r in results) + f"{'share':>8}"
          + f"{'RSS peak MiB':>14}")
    last = results[-1]
    for label in [*labels, "other"]:
        cells = []
        for r in results:
            value = r["phases"].get(label) if label != "other" else r["duration_seconds"] - sum(
                v for k, v in r["phases"].items() if k not in ("gates", "other"))
            if label == "other":
                r["phases"]["other"] = value
            cells.append(f"{value:10.2f}" if value is not None else f"{'-':>10}")
        share = (last["phases"].get(label) or 0.0) / last["duration_seconds"]
        print(f"{label:28}" + "".join(cells) + f"{share:8.0%}" + f"{mib(last['phase_rss_peak_bytes'].get(label)):>14}")
    print(f"(a step's own time, steps called inside it taken out; share and RSS peak: of the {last['n_labels']} run, the "
          "resident set sampled every 10 ms while the step ran; gates run after the run's duration is recorded)")
    print()
    target = next((r for r in results if r["n_labels"] >= GOAL_LABELS), None)
    if target is None:
        print(f"goal: {GOAL_LABELS} labels in < {GOAL_SECONDS:g} s and < 2 GiB -> not measured at these sizes")
        met = None
    else:
        peak = max(target["rss"]["peak"], target["max_rss_bytes"])
        met = target["duration_seconds"] < GOAL_SECONDS and peak < GOAL_BYTES
        print(goal_line(f"{target['n_labels']} labels x {args.fields} fields in < {GOAL_SECONDS:g} s "
                        f"({target['duration_seconds']:.1f} s) and < 2 GiB (process peak RSS {mib(peak)} MiB)", met))
    path = write_results("training", {
        "goal": {"labels": GOAL_LABELS, "seconds_below": GOAL_SECONDS, "bytes_below": GOAL_BYTES, "met": met},
        "fields": args.fields,
        "seed_seconds": seeded["seconds"],
        "runs": results,
        "ratios": [{
            "labels": r["n_labels"] / first["n_labels"],
            "time": r["duration_seconds"] / first["duration_seconds"],
            "rss_growth": r["rss"]["growth"] / max(first["rss"]["growth"], 1),
            "cpu": r["cpu_seconds"] / first["cpu_seconds"],
        } for r in results],
    }, args=args, db=db)
    print(f"\nfigures written to {path}")


if __name__ == "__main__":
    main()
