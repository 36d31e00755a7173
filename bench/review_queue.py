"""Claim-next under load: 16 reviewers working a queue of 100,000 open review tasks.

    scripts/testenv.sh .venv/bin/python bench/review_queue.py            # full size (PostgreSQL only)
    scripts/testenv.sh .venv/bin/python bench/review_queue.py --quick    # smoke run, a few seconds
    scripts/testenv.sh .venv/bin/python bench/review_queue.py --sweep 1,4,8   # also fewer reviewers

PostgreSQL only: the point is concurrent `SELECT ... FOR UPDATE SKIP LOCKED`, which SQLite
cannot show. The bench runs on a fresh database of its own (bench/_common.py). (Not named
bench/queue.py: a script's folder comes first on sys.path, so a queue.py there would shadow
the standard library's `queue` for every script in bench/.)

Setup: the demo predictor, `--tasks` pending predictions each with an open review task
(kinds mixed as in production: routed, low-confidence, QA samples; loaded with COPY), and
`--decided` already decided tasks with their decisions (the queue's history, which claim-next
must look past). Then:

1. solo: one reviewer claims and releases `--solo` times: the uncontended floor.
2. back to back: `--reviewers` processes, each with its own connection and its own reviewer
   user, loop for `--seconds`: claim-next (timed, with the time inside its SQL statements
   and its own CPU time), then decide (`1 - --release-share` of the time) or release, at
   once. `--sweep` adds phases with other reviewer counts.
3. paced: the same reviewers pausing about `--think-ms` after each task, as people do.
   The first claims of each process (connection set-up) are not counted.
   During each phase: pg_stat_activity sampled every 20 ms (running, waiting on a lock,
   idle in transaction = waiting for its reviewer process), the CPU time of the reviewer
   processes and their backends, and the whole machine's busy share (other work included).
4. the check for double claims (must be 0), from three sources: the claims the processes
   recorded (a task handed out again after it was decided), the task history table
   (a task going claimed -> claimed without returning to the queue between) and the
   decisions (more than `reviews_required` on a task); and every claim must be in history.
5. EXPLAIN (ANALYZE, BUFFERS) of the claim query on the fresh queue and as the run left it.

Prints a table and writes bench/results/review_queue.json. Goal: p99 of claim-next < 10 ms with
16 concurrent reviewers. Times are wall-clock on whatever else the machine runs: read them
beside the solo floor, the CPU columns and the machine's busy share."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import json
import multiprocessing
import os
import random
import statistics
import tempfile
import time
import uuid
from datetime import timedelta

from bench._common import (
    ROOT,
    Stopwatch,
    analyze,
    goal_line,
    insert_dicts,
    percentile,
    process_cpu_seconds,
    setup,
    write_results,
)

GOAL_P99_MS = 10.0
WARMUP_CLAIMS = 3
KIND_MIX = (("routed", 0.7), ("low_confidence", 0.2), ("qa_sample", 0.1))


def seed(args, rng: random.Random) -> dict:
    from django.utils import timezone

    from gateway.definitions import predictors_load
    from gateway.demo import SyntheticPredictor
    from gateway.models import Prediction, Predictor
    from gateway.roles import REVIEWERS
    from gateway.services import person_create, routing_update
    from review.models import KIND_PRIORITY, Decision, ReviewTask

    predictors_load(ROOT / "predictors" / "loan-approval.yaml")
    # No training, gates or promotion: deciding must not start training runs mid-bench.
    Predictor.objects.filter(slug="loan-approval").update(training={}, gates={}, auto_promote=False)
    loan = Predictor.objects.get(slug="loan-approval")
    routing_update(predictor=loan, changes={"mode": "human"})
    reviewers = [person_create(username=f"reviewer-{i:02d}", group=REVIEWERS)[0] for i in range(args.reviewers)]
    world = SyntheticPredictor(loan.schema, loan.output_spec)
    inputs = [world.input(rng) for _ in range(512)]
    route = {"mode": "human", "reason": "bench", "policy_version": 1}
    start = timezone.now() - timedelta(hours=6)
    kinds = [k for k, _ in KIND_MIX]
    weights = [w for _, w in KIND_MIX]

    def predictions(n, offset, status):
        for i in range(n):
            yield {
                "id": uuid.UUID(int=rng.getrandbits(128), version=4),
                "predictor_id": loan.pk, "schema_version": loan.schema_version, "input": inputs[i % len(inputs)],
                "status": status, "route": route, "created_at": start + timedelta(milliseconds=offset + i),
            }

    with Stopwatch() as clock:
        n_open = insert_dicts(Prediction, predictions(args.tasks, args.decided, "pending"))
        n_old = insert_dicts(Prediction, predictions(args.decided, 0, "answered"))
        ids = list(Prediction.objects.order_by("created_at").values_list("id", "created_at"))

        def tasks():
            for i, (pk, created) in enumerate(ids):
                decided = i < args.decided
                kind = rng.choices(kinds, weights)[0]
                yield {
                    "prediction_id": pk, "predictor_id": loan.pk, "kind": kind, "priority": KIND_PRIORITY[kind],
                    "reason": "bench", "reviews_required": 1, "status": "decided" if decided else "open",
                    "created_at": created, "decided_at": created + timedelta(minutes=5) if decided else None,
                    "final_output": "approve" if decided else None,
                }

        insert_dicts(ReviewTask, tasks())
        decided = list(ReviewTask.objects.filter(status="decided").order_by("id").values_list("id", "decided_at"))
        insert_dicts(Decision, (
            {"task_id": pk, "reviewer_id": reviewers[i % len(reviewers)].pk, "output": "approve", "note": "",
             "created_at": when, "seconds_to_decide": 30.0}
            for i, (pk, when) in enumerate(decided)
        ))
        analyze(Prediction, ReviewTask, Decision)
    return {"predictor": loan, "reviewers": [r.pk for r in reviewers], "open": n_open, "decided": n_old,
            "seconds": clock.seconds}


def _machine_busy() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs so far, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values) - idle, sum(values)


def _claim_loop(reviewer_id: int, stop, release_share: float, think: float, seed_: int, out: str,
                labels=("approve", "refer")) -> None:
    """One reviewer: claim-next, then decide or release, then think (a random pause around
    `think` seconds) until `stop`: a deadline (a float, on the perf_counter clock, which is
    CLOCK_MONOTONIC, one clock for every process on Linux) or a number of claims (an int).
    Each claim records its wall time and the time spent in its SQL statements."""
    from django.contrib.auth import get_user_model
    from django.db import connection

    from review.services import review_task_claim_next, review_task_decide, review_task_release

    rng = random.Random(seed_)
    reviewer = get_user_model().objects.get(pk=reviewer_id)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    cpu0, server0 = time.process_time(), process_cpu_seconds(backend)
    in_sql = [0.0]

    def timed(execute, sql, params, many, context):
        start = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            in_sql[0] += time.perf_counter() - start

    records = []
    n = 0
    while True:
        if isinstance(stop, int):
            if n >= stop:
                break
        elif time.perf_counter() >= stop:
            break
        n += 1
        in_sql[0] = 0.0
        with connection.execute_wrapper(timed):
            c0, t0 = time.process_time(), time.perf_counter()
            task = review_task_claim_next(reviewer=reviewer)
            t1, c1 = time.perf_counter(), time.process_time()
        if task is None:
            records.append({"task": None, "t0": t0, "t1": t1})
            break
        sql = in_sql[0]
        if rng.random() < release_share:
            action = "release"
            review_task_release(task_id=task.pk, reviewer=reviewer)
        else:
            action = "decide"
            review_task_decide(task_id=task.pk, reviewer=reviewer, output=rng.choice(labels))
        t2 = time.perf_counter()
        records.append({"task": task.pk, "t0": t0, "t1": t1, "t2": t2, "sql": sql, "cpu": c1 - c0, "action": action})
        if think:
            time.sleep(rng.uniform(0.5, 1.5) * think)
    server1 = process_cpu_seconds(backend)
    connection.close()
    Path(out).write_text(json.dumps({
        "reviewer": reviewer_id, "records": records, "client_cpu": time.process_time() - cpu0,
        "server_cpu": server1 - server0 if server0 is not None and server1 is not None else None,
    }))


class WaitSampler:
    """Samples pg_stat_activity every `interval` s (its own connection) while a phase runs:
    what the bench's backends are doing. `running` is active with no wait event (on a CPU,
    or waiting for one); `lock` waits on a row or transaction lock; `idle in transaction`
    waits for its reviewer process mid-transaction; `idle` is between transactions."""

    def __init__(self, interval: float = 0.02):
        import threading

        self.interval = interval
        self.counts: dict[str, int] = {}
        self.samples = 0
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        import psycopg
        from django.db import connection

        params = connection.get_connection_params()
        with psycopg.connect(**{k: v for k, v in params.items() if k in ("dbname", "user", "password", "host", "port")},
                             autocommit=True) as conn:
            while not self.stop_event.wait(self.interval):
                rows = conn.execute(
                    "SELECT state, wait_event_type, wait_event FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
                ).fetchall()
                self.samples += 1
                for state, wait_type, wait in rows:
                    if state == "active":
                        key = "running" if wait_type is None else f"{wait_type.lower()}:{wait}"
                    elif state == "idle in transaction":
                        key = "idle in transaction"
                    else:
                        key = str(state)
                    self.counts[key] = self.counts.get(key, 0) + 1

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_event.set()
        self.thread.join()
        return False

    def shares(self) -> dict:
        total = sum(self.counts.values())
        return {k: v / total for k, v in sorted(self.counts.items(), key=lambda kv: -kv[1])} if total else {}


def concurrent_phase(reviewers: list[int], seconds: float, think: float, release_share: float, tmp: str,
                     tag: str) -> dict:
    """`reviewers` processes at once, each with its own connection, for `seconds`."""
    from django.db import connections

    connections.close_all()  # each forked process opens its own connection
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(len(reviewers) + 1)
    procs, outs = [], []
    for i, reviewer_id in enumerate(reviewers):
        out = f"{tmp}/{tag}-reviewer-{i}.json"
        outs.append(out)
        proc = ctx.Process(target=_concurrent_worker,
                           args=(reviewer_id, seconds, release_share, think, hash((tag, i)) % 10**6, out, barrier))
        proc.start()
        procs.append(proc)
    barrier.wait()
    busy0, wall0 = _machine_busy(), time.perf_counter()
    with WaitSampler() as sampler:
        for proc in procs:
            proc.join()
    busy1, wall = _machine_busy(), time.perf_counter() - wall0
    failed = [p.exitcode for p in procs if p.exitcode != 0]
    if failed:
        raise RuntimeError(f"{len(failed)} reviewer processes failed (exit codes {failed})")
    machine = (busy1[0] - busy0[0]) / (busy1[1] - busy0[1]) if busy0 and busy1 and busy1[1] > busy0[1] else None
    return {"workers": [json.loads(Path(out).read_text()) for out in outs], "wall": wall, "machine_busy": machine,
            "backend_states": sampler.shares()}


def _concurrent_worker(reviewer_id, seconds, release_share, think, seed_, out, barrier):
    from django.contrib.auth import get_user_model
    from django.db import connection

    try:
        # Connect (and load the user) before the start line, so no timing holds connection set-up.
        connection.ensure_connection()
        get_user_model().objects.get(pk=reviewer_id)
        barrier.wait()
        _claim_loop(reviewer_id, time.perf_counter() + seconds, release_share, think, seed_, out)
    except BaseException:
        import traceback

        traceback.print_exc()
        raise


def double_claims(worker_results: list[dict]) -> dict:
    """Every way a task could have been held by two reviewers at once; all must be 0."""
    from django.db import connection

    from review.models import Decision

    claims: dict[int, list[tuple]] = {}
    for result in worker_results:
        for r in result["records"]:
            if r["task"] is not None:
                claims.setdefault(r["task"], []).append((r["t1"], r["t2"], r["action"], result["reviewer"]))
    # 1. From the processes' own records: a task handed out again after it was decided
    #    (reviews_required is 1: only a released task may come back).
    reclaimed_after_decide = 0
    for held in claims.values():
        held.sort()
        reclaimed_after_decide += sum(1 for claim in held[:-1] if claim[2] == "decide")
    # 2. From the history table: claimed -> claimed with no return to the queue between.
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT count(*) FROM (
                SELECT status, lag(status) OVER (PARTITION BY id ORDER BY history_id) AS before
                FROM review_historicalreviewtask
            ) h WHERE status = 'claimed' AND before = 'claimed'
            """
        )
        history_double = cursor.fetchone()[0]
        cursor.execute(
            """
            SELECT count(*), count(DISTINCT id) FROM review_historicalreviewtask WHERE status = 'claimed'
            """
        )
        history_claims, _ = cursor.fetchone()
    # 3. From the decisions: more than reviews_required (1) on a task.
    from django.db.models import Count

    over_decided = (
        Decision.objects.values("task_id").annotate(n=Count("id")).filter(n__gt=1).count()
    )
    recorded = sum(len(v) for v in claims.values())
    return {
        "recorded_claims": recorded,
        "history_claim_rows": history_claims,
        "tasks_claimed": len(claims),
        "reclaimed_after_decide": reclaimed_after_decide,
        "history_claimed_to_claimed": history_double,
        "tasks_with_more_decisions_than_required": over_decided,
        "every_claim_in_history": recorded == history_claims,
        "double_claims": reclaimed_after_decide + history_double + over_decided,
    }


def explain_claim(reviewer_id: int) -> dict:
    """EXPLAIN (ANALYZE, BUFFERS) of claim-next's query, in a transaction rolled back after."""
    from django.contrib.auth import get_user_model
    from django.db import connection, transaction

    from review.selectors import claimable_tasks

    reviewer = get_user_model().objects.get(pk=reviewer_id)
    qs = (
        claimable_tasks(reviewer=reviewer)
        .select_for_update(skip_locked=True, of=("self",))
        .order_by("-priority", "created_at", "id")[:1]
    )
    try:
        with transaction.atomic():
            sql, params = qs.query.sql_with_params()
            with connection.cursor() as cursor:
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
                plan = [row[0] for row in cursor.fetchall()]
            raise _Rollback
    except _Rollback:
        pass
    execution = next((line for line in plan if line.startswith("Execution Time")), "")
    return {"sql": sql, "plan": plan, "execution_ms": float(execution.split(":")[1].split()[0]) if execution else None}


class _Rollback(Exception):
    pass


def summarize(latencies: list[float]) -> dict:
    latencies = sorted(latencies)
    return {
        "n": len(latencies),
        "p50_ms": percentile(latencies, 50) * 1e3 if latencies else None,
        "p95_ms": percentile(latencies, 95) * 1e3 if latencies else None,
        "p99_ms": percentile(latencies, 99) * 1e3 if latencies else None,
        "max_ms": latencies[-1] * 1e3 if latencies else None,
        "mean_ms": statistics.fmean(latencies) * 1e3 if latencies else None,
    }


def phase_figures(name: str, phase: dict, reviewers: int, think: float) -> dict:
    workers = phase["workers"]
    counted = [r for w in workers for r in w["records"][WARMUP_CLAIMS:] if r["task"] is not None]
    done = [r for w in workers for r in w["records"] if r["task"] is not None]
    span = (max(r["t2"] for r in done) - min(r["t0"] for r in done)) if done else 0.0
    client_cpu = sum(w["client_cpu"] for w in workers)
    server = [w["server_cpu"] for w in workers if w["server_cpu"] is not None]
    return {
        "name": name,
        "reviewers": reviewers,
        "think_seconds": think,
        "claim": summarize([r["t1"] - r["t0"] for r in counted]),
        "claim_sql": summarize([r["sql"] for r in counted]),
        "claim_client_cpu": summarize([r["cpu"] for r in counted]),
        "decide": summarize([r["t2"] - r["t1"] for r in counted if r["action"] == "decide"]),
        "release": summarize([r["t2"] - r["t1"] for r in counted if r["action"] == "release"]),
        "claims": len(done),
        "claims_per_second": len(done) / span if span else 0.0,
        "claims_per_reviewer": [sum(1 for r in w["records"] if r["task"] is not None) for w in workers],
        "empty_queue_answers": sum(1 for w in workers for r in w["records"] if r["task"] is None),
        "seconds": phase["wall"],
        # Where the CPU went: the reviewer processes, their PostgreSQL backends, and the
        # whole machine's busy share over the phase (other work on the machine included).
        "client_cpu_seconds": client_cpu,
        "server_cpu_seconds": sum(server) if server else None,
        "machine_busy": phase["machine_busy"],
        "cpu_ms_per_claim": (client_cpu + sum(server)) / len(done) * 1e3 if done and server else None,
        "bench_cpu_share": (client_cpu + sum(server)) / (phase["wall"] * os.cpu_count()) if phase["wall"] and server else None,
        "backend_states": phase.get("backend_states"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000, help="open review tasks")
    parser.add_argument("--decided", type=int, default=20_000, help="already decided tasks (the queue's history)")
    parser.add_argument("--reviewers", type=int, default=16, help="concurrent reviewer processes")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each concurrent phase")
    parser.add_argument("--think-ms", type=float, default=1000.0,
                        help="a paced phase too, reviewers pausing about this long after each task (0: no paced phase)")
    parser.add_argument("--sweep", default="", help="more back-to-back phases with these reviewer counts, e.g. 1,4,8")
    parser.add_argument("--solo", type=int, default=300, help="claims of the single-reviewer floor")
    parser.add_argument("--release-share", type=float, default=0.2, help="share of claims released instead of decided")
    parser.add_argument("--quick", action="store_true", help="smoke size: 3,000 tasks, 3 s phases")
    parser.add_argument("--keep-db", action="store_true", help="keep the bench's database (its name goes to stderr)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.quick:
        args.tasks, args.decided, args.seconds, args.solo, args.think_ms = 3000, 500, 3.0, 50, 100.0
    sweep = [int(x) for x in args.sweep.split(",") if x.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        db = setup(tmp, name="review_queue", require_postgres=True, keep_db=args.keep_db)
        seeded = seed(args, random.Random(args.seed))
        reviewers = seeded["reviewers"]
        print(f"claim-next bench: {seeded['open']} open tasks, {seeded['decided']} decided, "
              f"{args.reviewers} reviewers x {args.seconds:g} s per phase, PostgreSQL {db['server_version']}, "
              f"{os.cpu_count()} CPUs (seeded in {seeded['seconds']:.1f} s)")
        plan_before = explain_claim(reviewers[0])

        # 1. The uncontended floor: one reviewer, claim then release.
        _claim_loop(reviewers[0], args.solo + WARMUP_CLAIMS, 1.0, 0.0, 7, f"{tmp}/solo.json")
        solo_worker = json.loads(Path(f"{tmp}/solo.json").read_text())
        solo = phase_figures("solo", {"workers": [solo_worker], "wall": None, "machine_busy": None}, 1, 0.0)
        everything = [solo_worker]
        # 2. Reviewers back to back (the brief's load: no pause between tasks), then paced.
        phases = [("back to back", args.reviewers, 0.0)]
        phases += [(f"back to back, {n}", n, 0.0) for n in sweep]
        if args.think_ms:
            phases.append((f"paced ~{args.think_ms:g} ms", args.reviewers, args.think_ms / 1000))
        figures = [solo]
        for i, (name, n, think) in enumerate(phases):
            phase = concurrent_phase(reviewers[:n], args.seconds, think, args.release_share, tmp, f"phase{i}")
            everything += phase["workers"]
            figures.append(phase_figures(name, phase, n, think))
        # 3. Double claims over every phase; 4. the plan as the run left the queue.
        doubles = double_claims(everything)
        plan_after = explain_claim(reviewers[0])

    main_phase = figures[1]
    p99 = main_phase["claim"]["p99_ms"]
    met = p99 is not None and p99 < GOAL_P99_MS
    floor = solo["claim"]["p50_ms"] or float("nan")
    print()
    print(f"{'phase':22} {'rev':>3} {'claims':>6} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'max ms':>7} "
          f"{'sql p50':>7} {'sql p99':>7} {'cpu p50':>7} {'x solo':>6} {'claim/s':>7} {'decide p50':>10} {'cpu ms/claim':>12} "
          f"{'busy':>5}")
    for row in figures:
        c, q = row["claim"], row["claim_sql"]
        if not c["n"]:
            continue
        busy = f"{row['machine_busy']:.0%}" if row["machine_busy"] is not None else "-"
        cpu = f"{row['cpu_ms_per_claim']:.1f}" if row["cpu_ms_per_claim"] is not None else "-"
        decide = f"{row['decide']['p50_ms']:.1f}" if row["decide"]["n"] else "-"
        rate = f"{row['claims_per_second']:.0f}" if row["name"] != "solo" else "-"
        print(f"{row['name']:22} {row['reviewers']:3d} {row['claims']:6d} {c['p50_ms']:7.2f} {c['p95_ms']:7.2f} "
              f"{c['p99_ms']:7.2f} {c['max_ms']:7.2f} {q['p50_ms']:7.2f} {q['p99_ms']:7.2f} {row['claim_client_cpu']['p50_ms']:7.2f} "
              f"{c['p50_ms'] / floor:6.1f} {rate:>7} {decide:>10} {cpu:>12} {busy:>5}")
    print("(sql: time inside the claim's SQL statements, commit excluded; cpu: the claim's own CPU time in its "
          "reviewer process; cpu ms/claim: reviewer processes plus "
          "their PostgreSQL backends, per claim with its decide/release; busy: the whole machine's CPU over the phase, "
          "this bench's share of it below)")
    print()
    print("what the PostgreSQL backends were doing (pg_stat_activity sampled every 20 ms):")
    for row in figures[1:]:
        states = ", ".join(f"{k} {v:.0%}" for k, v in list(row["backend_states"].items())[:6])
        own = f"{row['bench_cpu_share']:.0%}" if row["bench_cpu_share"] is not None else "-"
        print(f"  {row['name']:22} bench's own CPU share {own:>4}; {states}")
    print()
    print(f"claim query, EXPLAIN ANALYZE execution: {plan_before['execution_ms']} ms on the fresh queue, "
          f"{plan_after['execution_ms']} ms after the run")
    print("double claims: {double_claims} (recorded claims {recorded_claims}, history claim rows "
          "{history_claim_rows}; reclaimed after decide {reclaimed_after_decide}, claimed->claimed in history "
          "{history_claimed_to_claimed}, tasks with extra decisions {tasks_with_more_decisions_than_required})"
          .format(**doubles))
    print(goal_line(f"p99 claim-next < {GOAL_P99_MS:g} ms with {args.reviewers} reviewers back to back "
                    f"(p99 {p99:.2f} ms)", met))
    paced = next((row for row in figures if row["think_seconds"]), None)
    if paced and paced["claim"]["n"]:
        print(goal_line(f"p99 claim-next < {GOAL_P99_MS:g} ms with {args.reviewers} paced reviewers "
                        f"(p99 {paced['claim']['p99_ms']:.2f} ms)", paced["claim"]["p99_ms"] < GOAL_P99_MS))
    print(goal_line("0 double claims", doubles["double_claims"] == 0))
    print()
    print("claim query plan after the run:")
    print("\n".join("  " + line for line in plan_after["plan"]))
    path = write_results("review_queue", {
        "goal": {"p99_ms_below": GOAL_P99_MS, "met": met, "double_claims_zero": doubles["double_claims"] == 0},
        "setup": {"open_tasks": seeded["open"], "decided_tasks": seeded["decided"], "reviewers": args.reviewers,
                  "seconds": args.seconds, "release_share": args.release_share, "seed_seconds": seeded["seconds"],
                  "cpus": os.cpu_count()},
        "phases": figures,
        "double_claims": doubles,
        "explain_before": plan_before,
        "explain_after": plan_after,
    }, args=args, db=db)
    print(f"\nfigures written to {path}")


if __name__ == "__main__":
    main()
