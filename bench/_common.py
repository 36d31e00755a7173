"""What bench/review_queue.py, bench/training.py and bench/export.py share: Django set up on a
database of the bench's own, fast bulk loading, peak-memory readings, child processes,
percentiles and the JSON results file.

Database. With DATABASE_URL naming PostgreSQL (`scripts/testenv.sh` exports one), the
bench creates a fresh database on that server (`ozbench_<name>_<pid>_<random>`), migrates
it and drops it when the bench ends (`--keep-db` keeps it): it never touches the database
the URL names, nor anybody else's. Without one it uses SQLite in a temporary folder (the
queue bench refuses SQLite: it needs real concurrency).

Peak memory of a phase is read from Linux's /proc/self/status: VmHWM (the process's peak
resident set) is reset by writing 5 to /proc/self/clear_refs just before the phase, so the
figure is the phase's own peak, not the process's since it started. Where that reset is
not available, the lifetime peak (getrusage ru_maxrss) is reported and said so."""
from __future__ import annotations

import atexit
import contextlib
import json
import os
import platform
import resource
import secrets
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Set by the parent for its child processes: the (already migrated) database to use.
CHILD_DB_ENV = "OZ_BENCH_CHILD_DATABASE_URL"
# A migrated database on the same server to copy instead of migrating a new one (9 s saved
# per bench: tests/test_bench.py makes one with `python bench/_common.py make-template`).
TEMPLATE_DB_ENV = "OZ_BENCH_TEMPLATE_DB"
MiB = 1024 * 1024


def is_postgres(url: str | None) -> bool:
    return bool(url) and url.split(":", 1)[0] in ("postgres", "postgresql", "pgsql", "postgis")


def _with_dbname(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


def _libpq_url(url: str) -> str:
    # psycopg understands postgresql:// and postgres://, not Django's aliases.
    scheme, rest = url.split(":", 1)
    return ("postgresql" if scheme in ("pgsql", "postgis") else scheme) + ":" + rest


def fresh_postgres_database(url: str, name: str, *, keep: bool = False, template: str | None = None) -> str:
    """Create an empty database on the server `url` points at (a copy of `template` when
    given); returns its URL. Dropped at exit (with its connections: WITH (FORCE)) unless
    `keep`."""
    import psycopg

    dbname = f"ozbench_{name}_{os.getpid()}_{secrets.token_hex(3)}"
    with psycopg.connect(_libpq_url(url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"' + (f' TEMPLATE "{template}"' if template else ""))

    def drop():
        with contextlib.suppress(Exception):  # Django not set up yet, or already torn down
            from django.db import connections

            connections.close_all()
        try:
            drop_postgres_database(url, dbname)
        except Exception as exc:  # the server may be gone already (testenv teardown)
            print(f"bench: could not drop database {dbname}: {exc}", file=sys.stderr)

    if keep:
        print(f"bench: keeping database {dbname}", file=sys.stderr)
    else:
        atexit.register(drop)
    return _with_dbname(url, dbname)


def setup(tmp: str, *, name: str, require_postgres: bool = False, keep_db: bool = False, migrate: bool = True) -> dict:
    """Django, on a fresh database (see the module docstring). In a child process started
    by `run_child`, the parent's database is used as it is (no creation, no migration).
    Returns {"database": "postgresql"|"sqlite", "server_version": ...}."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    os.environ.setdefault("OZ_MEDIA_ROOT", f"{tmp}/media")
    os.environ.setdefault("OZ_LOG_LEVEL", "WARNING")  # no log line per request in the timings
    os.environ.setdefault("OZ_LOG_JSON", "false")
    os.environ.setdefault("OZ_THROTTLE_CLIENT", "100000000/min")
    os.environ.setdefault("OZ_THROTTLE_ANON", "100000000/min")
    child_url = os.environ.get(CHILD_DB_ENV)
    if child_url:
        os.environ["DATABASE_URL"] = child_url
        migrate = False
    else:
        url = os.environ.get("DATABASE_URL", "")
        template = os.environ.get(TEMPLATE_DB_ENV) if is_postgres(url) else None
        if is_postgres(url):
            os.environ["DATABASE_URL"] = fresh_postgres_database(url, name, keep=keep_db, template=template)
            migrate = migrate and not template
        elif require_postgres:
            sys.exit(
                f"bench/{name}.py needs PostgreSQL (SQLite serialises every writer, so concurrent reviewers "
                "and SELECT ... FOR UPDATE SKIP LOCKED cannot be measured on it). Run it as\n"
                f"    scripts/testenv.sh .venv/bin/python bench/{name}.py"
            )
        else:
            os.environ["DATABASE_URL"] = f"sqlite:///{tmp}/bench.sqlite3"
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    if migrate:
        call_command("migrate", verbosity=0)
    connection.ensure_connection()
    version = None
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            version = cursor.fetchone()[0]
    else:
        import sqlite3

        version = sqlite3.sqlite_version
    return {"database": connection.vendor, "server_version": version}


def child_env() -> dict:
    """The environment of a child process: the same settings and the same database."""
    env = dict(os.environ)
    env[CHILD_DB_ENV] = os.environ["DATABASE_URL"]
    return env


def run_child(script: str, *args: str, timeout: float = 3600) -> dict:
    """Run `python bench/<script> --child ARGS` on this bench's database; its last stdout
    line is a JSON object, returned. The child's stderr passes through."""
    from django.db import connections

    connections.close_all()  # nothing of ours holds a lock the child could wait on
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), "--child", *args],
        cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, text=True, timeout=timeout,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{script} --child {' '.join(args)} failed with exit status {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- memory -------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (field 3 onwards), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) of a process on this machine, from /proc/<pid>/stat."""
    fields = _stat_fields(pid)
    return None if fields is None else (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_with_reaped_children(pid: int) -> float:
    """A process's CPU time plus that of its children that have exited and been waited for."""
    fields = _stat_fields(pid)
    return 0.0 if fields is None else sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def process_tree_cpu_seconds(root: int) -> float:
    """CPU time of a process and all its descendants (a server's master and workers; a
    PostgreSQL postmaster and its backends), from /proc: the live ones, and those that have
    exited (a closed connection's backend, an autovacuum worker), through their parents."""
    return sum(_cpu_with_reaped_children(pid) for pid in _process_tree(root))


def worker_cpu_seconds(root: int) -> dict[int, float]:
    """CPU time of each live process below `root` that has no children of its own: a
    server's workers, however many levels below the process started (gunicorn's are its
    children; uvicorn's, under `mlflow models serve`, its grandchildren)."""
    tree = _process_tree(root)
    return {pid: _cpu_with_reaped_children(pid) for pid in tree.keys() - set(tree.values()) - {root}}


def _process_tree(root: int) -> dict[int, int]:
    """The live processes from `root` down, each with its parent's pid."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat_fields(int(entry))) is not None:
            parents[int(entry)] = int(fields[1])
    tree, frontier = {root: parents.get(root, 0)}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update((pid, parent) for pid in children)
        frontier.extend(children)
    return tree


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_bytes() -> int | None:
    kib = _status_kib("VmRSS")
    return kib * 1024 if kib is not None else None


def max_rss_bytes() -> int:
    """The process's lifetime peak resident set (getrusage)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


class PeakRSS:
    """Peak resident set over a block: {"before", "peak", "growth", "method"} in bytes.
    `peak` is the block's own when the kernel lets VmHWM be reset, else the lifetime one."""

    def __enter__(self):
        self.method = "VmHWM reset"
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            self.method = "ru_maxrss (lifetime)"
        self.before = rss_bytes() or 0
        return self

    def __exit__(self, *exc):
        hwm = _status_kib("VmHWM")
        if self.method == "VmHWM reset" and hwm is not None:
            self.peak = hwm * 1024
        else:
            self.peak = max_rss_bytes()
        self.growth = max(0, self.peak - self.before)
        return False

    def as_dict(self) -> dict:
        return {"before": self.before, "peak": self.peak, "growth": self.growth, "method": self.method}


# -- loading rows fast --------------------------------------------------------------------


def bulk_insert(model, columns: list[str], rows, *, batch: int = 5000) -> int:
    """Insert `rows` (tuples of database values, in `columns` order; JSON fields as JSON
    text) into `model`'s table. PostgreSQL: COPY. Elsewhere: executemany in batches. No
    model save(), so no signals and no history rows: for seeding only."""
    from django.db import connection, transaction

    table = model._meta.db_table
    quoted = ", ".join(connection.ops.quote_name(c) for c in columns)
    count = 0
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                raw = cursor.cursor  # psycopg's own cursor
                with raw.copy(f"COPY {connection.ops.quote_name(table)} ({quoted}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
                        count += 1
        else:
            placeholders = ", ".join(["%s"] * len(columns))
            sql = f"INSERT INTO {connection.ops.quote_name(table)} ({quoted}) VALUES ({placeholders})"  # noqa: S608
            chunk = []
            with connection.cursor() as cursor:
                for row in rows:
                    chunk.append(row)
                    if len(chunk) >= batch:
                        cursor.executemany(sql, chunk)
                        count += len(chunk)
                        chunk = []
                if chunk:
                    cursor.executemany(sql, chunk)
                    count += len(chunk)
    return count


class RawJSON(str):
    """JSON text given as it is to `insert_dicts` (serialise a value once, insert it often)."""


_PLAIN = (int, float, str, type(None))


def insert_dicts(model, rows, *, batch: int = 5000) -> int:
    """`bulk_insert` of dicts {field attname: Python value}; a field not given gets its
    default (its auto_now/auto_now_add time for dates). JSON fields take Python values, or
    RawJSON text."""
    from django.db import connection
    from django.db import models as m
    from django.utils import timezone

    fields = [f for f in model._meta.concrete_fields if not (isinstance(f, m.AutoField) or (f.primary_key and f.db_returning))]
    columns = [f.column for f in fields]
    now = timezone.now()
    defaults = {}
    for field in fields:
        if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
            defaults[field.attname] = now
        else:
            defaults[field.attname] = field.get_default()  # "" for a string field without a default, else None

    def converter(field):
        if isinstance(field, m.JSONField):
            return lambda v: v if v is None or isinstance(v, RawJSON) else json.dumps(v, separators=(",", ":"))
        return lambda v: v if type(v) in _PLAIN else field.get_db_prep_save(v, connection)

    plan = [(f.attname, defaults[f.attname], converter(f)) for f in fields]
    return bulk_insert(model, columns, (tuple(convert(row.get(name, default)) for name, default, convert in plan)
                                        for row in rows), batch=batch)


def analyze(*models) -> None:
    """Fresh planner statistics after a bulk load (PostgreSQL's autovacuum would get there
    later, in the middle of the measurement)."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        for model in models:
            cursor.execute(f"VACUUM ANALYZE {connection.ops.quote_name(model._meta.db_table)}")


# -- figures ------------------------------------------------------------------------------


def percentile(sorted_values: list[float], p: float) -> float | None:
    """The nearest-rank percentile of already sorted values (p in 0..100)."""
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * p // 100))  # ceil
    return sorted_values[int(min(rank, len(sorted_values))) - 1]


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def write_results(name: str, figures: dict, *, args=None, db: dict | None = None) -> Path:
    """bench/results/<name>.json (<name>-quick.json for a --quick run, so a smoke run never
    overwrites real figures; OZ_BENCH_RESULTS_DIR names another folder): the figures with
    when, where and how they were taken. Returns the path, relative to the repository when
    inside it."""
    folder = Path(os.environ.get("OZ_BENCH_RESULTS_DIR") or RESULTS)
    folder.mkdir(parents=True, exist_ok=True)
    if args is not None and getattr(args, "quick", False):
        name = f"{name}-quick"
    document = {
        "bench": name,
        "taken_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "git_commit": git_commit(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "database": db,
        "args": vars(args) if args is not None else None,
        **figures,
    }
    path = folder / f"{name}.json"
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def goal_line(text: str, met: bool) -> str:
    return f"goal: {text} -> {'MET' if met else 'NOT MET'}"


def mib(value: float | None) -> str:
    return "-" if value is None else f"{value / MiB:.1f}"


class Stopwatch:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
        return False


def drop_postgres_database(url: str, dbname: str) -> None:
    import psycopg

    with psycopg.connect(_libpq_url(url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def _make_template() -> None:
    """`python bench/_common.py make-template`: a migrated database on DATABASE_URL's server
    for the benches to copy (OZ_BENCH_TEMPLATE_DB); prints its name. The caller drops it."""
    url = os.environ["DATABASE_URL"]
    if not is_postgres(url):
        sys.exit("make-template needs DATABASE_URL to name a PostgreSQL server")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    os.environ["DATABASE_URL"] = fresh_postgres_database(url, "template", keep=True)
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connections

    call_command("migrate", verbosity=0)
    connections.close_all()  # a template must have no connections when it is copied
    print(urlsplit(os.environ["DATABASE_URL"]).path.lstrip("/"))


if __name__ == "__main__" and sys.argv[1:] == ["make-template"]:
    _make_template()
