"""Label export at 100,000 and 1,000,000 labels: time and peak memory of the real path, the
streaming HTTP view (`GET /predictors/<slug>/dataset?format=csv|jsonl`) read through
Django's test client to the last byte, each size and format in a fresh child process (--quick:
all in one).

    scripts/testenv.sh .venv/bin/python bench/export.py            # PostgreSQL (the real target)
    .venv/bin/python bench/export.py                               # SQLite in a temp folder
    scripts/testenv.sh .venv/bin/python bench/export.py --quick    # smoke run: 5k and 25k labels

The export streams (review/export.py: a server-side cursor read 2,000 rows at a time, lines
handed out in 64 KiB pieces), so its memory must not grow with the label count: the figure
to watch is the ratio of peak memory between sizes, which should be about 1. Per run: time
to the first piece, total time, CPU time, rows/s, MiB/s, and the child's resident set at its
highest while streaming above what it held before the request (growth). The labels are
loaded by the parent (COPY on PostgreSQL), a predictor per size, with the demo predictor's
schema; every other label names a reviewer (the export joins their username).
Prints a table and writes bench/results/export.json.
Goal: memory flat in the label count (peak growth ratio 1M / 100k about 1; 1.5 at most)."""
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
    ROOT,
    MiB,
    PeakRSS,
    RawJSON,
    Stopwatch,
    analyze,
    goal_line,
    insert_dicts,
    mib,
    run_child,
    setup,
    write_results,
)

GOAL_RATIO = 1.5
OPERATOR = "bench-operator"


def seed(tmp: str, sizes: list[int], seed_: int) -> dict:
    import yaml

    from gateway.definitions import predictors_load
    from gateway.demo import SyntheticPredictor
    from gateway.models import Predictor
    from gateway.roles import OPERATORS, REVIEWERS
    from gateway.services import person_create
    from review.models import Label

    definition = yaml.safe_load((ROOT / "predictors" / "loan-approval.yaml").read_text())
    for key in ("training", "gates", "auto_promote"):
        definition.pop(key, None)
    _, token = person_create(username=OPERATOR, group=OPERATORS)
    reviewers = [person_create(username=f"reviewer-{i}", group=REVIEWERS)[0].pk for i in range(8)]
    rng = random.Random(seed_)
    slugs = {}
    with Stopwatch() as clock:
        for n in sizes:
            slug = f"export-{n}"
            path = Path(tmp) / f"{slug}.yaml"
            path.write_text(yaml.safe_dump({**definition, "slug": slug}, sort_keys=False))
            predictors_load(path)
            predictor = Predictor.objects.get(slug=slug)
            world = SyntheticPredictor(predictor.schema, predictor.output_spec)
            inputs = [world.input(rng) for _ in range(4096)]
            targets = [RawJSON(json.dumps(world.truth(x))) for x in inputs]
            pool = [RawJSON(json.dumps(x, separators=(",", ":"))) for x in inputs]

            def rows(predictor=predictor, pool=pool, targets=targets, n=n):
                for i in range(n):
                    j = i % len(pool)
                    yield {"predictor_id": predictor.pk, "schema_version": predictor.schema_version, "input": pool[j],
                           "target": targets[j], "source": "review" if i % 2 else "import",
                           "created_by_id": reviewers[i % len(reviewers)] if i % 2 else None}

            insert_dicts(Label, rows())
            slugs[n] = slug
        analyze(Label)
    return {"slugs": slugs, "token": token, "seconds": clock.seconds}


def child(runs: list[tuple[str, str]], token: str) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        setup(tmp, name="export")
        return [_export(slug, fmt, token) for slug, fmt in runs]


def _export(slug: str, fmt: str, token: str) -> dict:
    import gc

    from django.test import Client

    client = Client(HTTP_AUTHORIZATION=f"Token {token}", HTTP_HOST="127.0.0.1")
    # Warm up: the view, the serializers and the connection, on an unknown format (422).
    assert client.get(f"/predictors/{slug}/dataset", {"format": "xml"}).status_code == 422
    gc.collect()
    first = None
    lines = size = pieces = 0
    with PeakRSS() as rss, Stopwatch() as wall:
        cpu0 = time.process_time()
        response = client.get(f"/predictors/{slug}/dataset", {"format": fmt})
        assert response.status_code == 200 and response.streaming, response.status_code
        for piece in response.streaming_content:
            if first is None:
                first = time.perf_counter() - wall.start
            pieces += 1
            size += len(piece)
            lines += piece.count(b"\n")
        cpu = time.process_time() - cpu0
    return {"slug": slug, "format": fmt, "lines": lines, "bytes": size, "pieces": pieces, "seconds": wall.seconds,
            "first_piece_seconds": first, "cpu_seconds": cpu, "rss": rss.as_dict()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100000,1000000", help="label counts, comma separated (smallest first)")
    parser.add_argument("--formats", default="csv,jsonl")
    parser.add_argument("--quick", action="store_true", help="smoke size: 5,000 and 25,000 labels")
    parser.add_argument("--keep-db", action="store_true")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--runs", help=argparse.SUPPRESS)  # slug:format,... for a child
    args = parser.parse_args()
    if args.child:
        runs = [tuple(run.split(":")) for run in args.runs.split(",")]
        print(json.dumps(child(runs, os.environ["OZ_BENCH_EXPORT_TOKEN"])))
        return
    sizes = [5_000, 25_000] if args.quick else sorted(int(x) for x in args.sizes.split(","))
    formats = [f for f in args.formats.split(",") if f]
    with tempfile.TemporaryDirectory() as tmp:
        db = setup(tmp, name="export", keep_db=args.keep_db)
        seeded = seed(tmp, sizes, args.seed)
        print(f"label export bench: {', '.join(f'{n:,}' for n in sizes)} labels, GET /predictors/<slug>/dataset "
              f"through the test client, {db['database']} {db['server_version']}, {os.cpu_count()} CPUs "
              f"(labels loaded in {seeded['seconds']:.1f} s)")
        os.environ["OZ_BENCH_EXPORT_TOKEN"] = seeded["token"]
        planned = [(fmt, n) for fmt in formats for n in sizes]
        if args.quick:  # a smoke run: every export in one child process, the smallest first
            results = run_child("export.py", "--runs", ",".join(f"{seeded['slugs'][n]}:{fmt}" for fmt, n in planned))
        else:  # each export in a fresh process: no allocator state carried from one to the next
            results = [run_child("export.py", "--runs", f"{seeded['slugs'][n]}:{fmt}")[0] for fmt, n in planned]
        for result, (fmt, n) in zip(results, planned, strict=True):
            result["labels"] = n
            expected = n + 1 if fmt == "csv" else n  # CSV has a header line
            assert result["lines"] == expected, f"{fmt} {n}: {result['lines']} lines, expected {expected}"

    print()
    print(f"{'format':6} {'labels':>9} {'first ms':>9} {'total s':>8} {'cpu s':>7} {'rows/s':>8} {'MiB/s':>6} "
          f"{'MiB out':>8} {'RSS before':>10} {'RSS peak':>9} {'growth MiB':>10} {'x labels':>8} {'x time':>7} "
          f"{'x growth':>8}")
    ratios = {}
    for fmt in formats:
        rows = [r for r in results if r["format"] == fmt]
        base = rows[0]
        for r in rows:
            r["x_labels"] = r["labels"] / base["labels"]
            r["x_time"] = r["seconds"] / base["seconds"]
            r["x_growth"] = r["rss"]["growth"] / max(base["rss"]["growth"], 1)
            print(f"{fmt:6} {r['labels']:9d} {r['first_piece_seconds'] * 1e3:9.1f} {r['seconds']:8.2f} "
                  f"{r['cpu_seconds']:7.2f} {r['labels'] / r['seconds']:8.0f} {r['bytes'] / MiB / r['seconds']:6.1f} "
                  f"{r['bytes'] / MiB:8.1f} {mib(r['rss']['before']):>10} {mib(r['rss']['peak']):>9} "
                  f"{mib(r['rss']['growth']):>10} {r['x_labels']:8.1f} {r['x_time']:7.2f} {r['x_growth']:8.2f}")
        ratios[fmt] = rows[-1]["x_growth"]
    print(f"(first ms: time to the first piece, the query included; growth: the child's resident set at its highest "
          f"while streaming ({results[0]['rss']['method']}) above what it held before the request; x: against "
          f"{sizes[0]:,} labels)")
    print()
    met = all(ratio <= GOAL_RATIO for ratio in ratios.values())
    print(goal_line(f"flat memory: peak growth x{sizes[-1] // sizes[0]} labels / x1 <= {GOAL_RATIO:g} ("
                    + ", ".join(f"{fmt} {ratio:.2f}" for fmt, ratio in ratios.items()) + ")", met)
          + (" (--quick: every export in one process, so a later one reuses memory an earlier one freed; "
             "the ratios say little)" if args.quick else ""))
    path = write_results("export", {
        "goal": {"growth_ratio_at_most": GOAL_RATIO, "met": met, "ratios": ratios},
        "seed_seconds": seeded["seconds"],
        "runs": results,
    }, args=args, db=db)
    print(f"\nfigures written to {path}")


if __name__ == "__main__":
    main()
