"""The real processes the fault tests break, and the tools to watch them.

`Stack` runs gunicorn (scripts/gunicorn.conf.py: gthread, two worker processes), a Celery
worker (prefork, one child: the process that runs tasks, as in production) and Celery beat
(the sweepers), all on the test database and the test Redis, with production-like settings
(persistent database connections, acks_late) and short sweeper periods so that recovery
fits in a test. `service_ctl` stops and starts PostgreSQL or Redis (scripts/testenv-ctl.sh).
`Receiver` is a webhook endpoint on loopback that counts deliveries per delivery id.
`report` appends a row to test-artifacts/faults.json."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.client import HTTPException
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import pytest

ROOT = Path(__file__).resolve().parents[2]
REPORT_PATH = ROOT / "test-artifacts" / "faults.json"
LOGS_PATH = ROOT / "test-artifacts" / "faults-logs"  # gunicorn, worker and beat output of the last run
BIN = ROOT / ".venv" / "bin"
METRICS_TOKEN = "faults-metrics-token"
SESSION_ROWS: list[dict] = []  # this session's rows, for the terminal summary
RUN = datetime.now(UTC).isoformat(timespec="seconds")  # groups the rows of one test session

# Sweeper and reaper periods for the processes under test (production: a minute or more).
SWEEP_SECONDS = 2
OUTBOX_GRACE_SECONDS = 1
WEBHOOK_TIMEOUT_SECONDS = 2
WEBHOOK_CLAIM_MARGIN_SECONDS = 3  # production: 30
HEARTBEAT_SECONDS = 0.5
HEARTBEAT_TIMEOUT_SECONDS = 4


def executable(name: str) -> str:
    path = BIN / name
    return str(path) if path.exists() else name


def require_testenv() -> None:
    missing = [name for name in ("OZ_TESTENV_CTL", "OZ_TESTENV_REDIS_PORT", "OZ_TESTENV_PGDATA", "REDIS_URL")
               if not os.environ.get(name)]
    if missing:
        pytest.fail(f"the fault tests run under scripts/testenv.sh (missing {', '.join(missing)})", pytrace=False)


def service_ctl(service: str, action: str) -> float:
    """Stop or start PostgreSQL or Redis (blocks until done); the seconds it took."""
    started = time.monotonic()
    result = subprocess.run([os.environ["OZ_TESTENV_CTL"], service, action], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise AssertionError(f"testenv-ctl {service} {action} failed: {result.stderr[-2000:]}")
    return time.monotonic() - started


def database_url() -> str:
    from django.db import connection

    db = connection.settings_dict  # the test database once pytest-django has set it up
    user = quote(db["USER"] or "", safe="")
    password = quote(db["PASSWORD"] or "", safe="")
    auth = f"{user}:{password}@" if password else f"{user}@"
    return f"postgres://{auth}{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, what: str, timeout: float, interval: float = 0.2):
    """Poll `check` until it returns something true; that value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


# --- HTTP ------------------------------------------------------------------------------------

@dataclass
class Reply:
    status: int | None  # None: no HTTP answer at all (refused, reset, timed out)
    headers: dict = field(default_factory=dict)
    body: bytes = b""
    error: str = ""
    seconds: float = 0.0

    def json(self):
        return json.loads(self.body or b"{}")

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


def http(base: str, method: str, path: str, body=None, *, auth: str = "", headers: dict | None = None,
         timeout: float = 30) -> Reply:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if auth:
        request.add_header("Authorization", auth)
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            reply = Reply(response.status, {k.lower(): v for k, v in response.headers.items()}, response.read())
    except urllib.error.HTTPError as exc:
        reply = Reply(exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read())
    except (OSError, HTTPException) as exc:
        reply = Reply(None, error=f"{type(exc).__name__}: {exc}")
    reply.seconds = time.monotonic() - started
    return reply


def metric(text: str, name: str, **labels) -> float | None:
    """The sum of the samples called `name` whose labels include `labels` (None: none)."""
    from prometheus_client.parser import text_string_to_metric_families

    found = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    ]
    return sum(found) if found else None


# --- processes -------------------------------------------------------------------------------

def children_of(pid: int) -> list[int]:
    """Process ids whose parent is `pid` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses.
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not alive
        return (Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]) != "Z"
    except (OSError, IndexError):
        return False


class Proc:
    """One started process (in its own process group), its output in a log file."""

    def __init__(self, name: str, command: list[str], env: dict, log_dir: Path):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self.started_at_char = len(self.log_path.read_text(errors="replace")) if self.log_path.exists() else 0
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        self.pid = self.process.pid

    def tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def log_text(self, since: int = 0) -> str:
        """The output so far (from character `since`: see `log_mark`)."""
        return self.log_path.read_text(errors="replace")[since:]

    def log_mark(self) -> int:
        return len(self.log_text())

    def running(self) -> bool:
        return self.process.poll() is None

    def terminate(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def stop(self, timeout: float = 20) -> None:
        if self.process.poll() is None:
            self.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        try:  # whatever it left behind in its group (pool children)
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.process.poll() is None:
            self.process.wait(timeout=10)
        self._log.close()


class Stack:
    """gunicorn + Celery worker + Celery beat on the test database and Redis."""

    def __init__(self, workdir: Path):
        self.dir = workdir
        self.media = workdir / "media"
        self.media.mkdir(exist_ok=True)
        metrics_dir = workdir / "prometheus"
        metrics_dir.mkdir(exist_ok=True)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "DATABASE_URL": database_url(),
            # Production's persistent connections (with health checks) — what a restart hurts.
            "DATABASE_CONN_MAX_AGE": "60",
            "OZ_MEDIA_ROOT": str(self.media),
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "PYTHONPATH": str(ROOT),
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            "OZ_METRICS_TOKEN": METRICS_TOKEN,
            "OZ_METRICS_CACHE_SECONDS": "0",
            "OZ_SERVING_CACHE_SECONDS": "1",
            "OZ_THROTTLE_CLIENT": "100000/min",
            # Loopback webhooks only through a network entry of the client's webhook_hosts.
            "OZ_WEBHOOK_ALLOW_PRIVATE": "false",
            "OZ_WEBHOOK_TIMEOUT_SECONDS": str(WEBHOOK_TIMEOUT_SECONDS),
            "OZ_WEBHOOK_CLAIM_MARGIN_SECONDS": str(WEBHOOK_CLAIM_MARGIN_SECONDS),
            "OZ_SWEEP_SECONDS": str(SWEEP_SECONDS),
            "OZ_OUTBOX_GRACE_SECONDS": str(OUTBOX_GRACE_SECONDS),
            "OZ_TRAINING_HEARTBEAT_SECONDS": str(HEARTBEAT_SECONDS),
            "OZ_TRAINING_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT_SECONDS),
            "OZ_TRAINING_REAP_SECONDS": str(SWEEP_SECONDS),
            "OZ_MIN_TRAINING_LABELS": "8",
            "OZ_EXPLAIN_SAMPLE_PERCENT": "0",
            "CELERY_TASK_ALWAYS_EAGER": "false",
            "OZ_LOG_JSON": "true",  # production's log format
            "WEB_CONCURRENCY": "2",
            "GUNICORN_THREADS": "4",
        }
        self.web: Proc | None = None
        self.worker: Proc | None = None
        self.beat: Proc | None = None

    # -- lifecycle --
    def start(self) -> None:
        self.web = Proc("gunicorn", [
            executable("gunicorn"), "--config", "scripts/gunicorn.conf.py", "--bind", f"127.0.0.1:{self.port}",
            "--workers", "2", "--threads", "4", "config.wsgi:application",
        ], self.env, self.dir)
        self.worker = self._worker()
        self.beat = Proc("beat", [
            executable("celery"), "-A", "config.celery_app", "beat", "-l", "info",
            "--schedule", str(self.dir / "celerybeat-schedule"),
        ], self.env, self.dir)
        self.wait_web()
        self.wait_worker()

    def _worker(self) -> Proc:
        return Proc("worker", [
            executable("celery"), "-A", "config.celery_app", "worker", "-l", "info", "--pool", "prefork",
            "--concurrency", "1", "-n", "faults@%h", "--without-gossip", "--without-mingle",
        ], self.env, self.dir)

    def stop(self) -> None:
        procs = [proc for proc in (self.beat, self.worker, self.web) if proc is not None]
        for proc in procs:  # all at once: each shuts down gracefully in parallel
            proc.terminate()
        for proc in procs:
            proc.stop()
        # The servers' logs, for CI to keep beside the report.
        LOGS_PATH.mkdir(parents=True, exist_ok=True)
        for proc in (self.beat, self.worker, self.web):
            if proc is not None and proc.log_path.exists():
                shutil.copyfile(proc.log_path, LOGS_PATH / proc.log_path.name)

    def wait_web(self, timeout: float = 60) -> None:
        def up():
            if not self.web.running():
                raise AssertionError(f"gunicorn exited: {self.web.tail()}")
            return http(self.base, "GET", "/healthz", timeout=2).status == 200

        wait_until(up, "gunicorn to answer /healthz", timeout)

    def wait_worker(self, timeout: float = 60) -> None:
        mark = self.worker.started_at_char

        def ready():
            if not self.worker.running():
                raise AssertionError(f"the Celery worker exited: {self.worker.tail()}")
            return " ready." in self.worker.log_text(mark) and self.worker_child() is not None

        wait_until(ready, "the Celery worker to be ready", timeout)

    def kill_worker(self) -> list[int]:
        """SIGKILL the whole Celery worker (its main process and its pool), as when its host or
        container dies. Returns the pids killed."""
        pids = [self.worker.pid, *children_of(self.worker.pid)]
        os.killpg(self.worker.pid, signal.SIGKILL)
        self.worker.process.wait(timeout=10)
        wait_until(lambda: not any(alive(pid) for pid in pids), "the worker's processes to die", timeout=10, interval=0.05)
        self.worker.stop()
        return pids

    def start_worker(self) -> None:
        self.worker = self._worker()

    def worker_child(self) -> int | None:
        """The pool process that runs tasks (one: --concurrency 1)."""
        children = [pid for pid in children_of(self.worker.pid) if alive(pid)]
        return children[0] if children else None

    def web_workers(self) -> list[int]:
        return [pid for pid in children_of(self.web.pid) if alive(pid)]

    def reload_web(self, timeout: float = 60) -> list[int]:
        """SIGHUP to gunicorn: new worker processes replace the old ones (as on a deploy, or
        when a worker is recycled). Returns the new workers' pids."""
        old = set(self.web_workers())
        os.kill(self.web.pid, signal.SIGHUP)

        def replaced():
            now = set(self.web_workers())
            return sorted(now) if len(now) == 2 and not now & old else None

        clock = time.monotonic()
        pids = wait_until(replaced, "gunicorn to replace its workers", timeout, interval=0.1)
        self.wait_web()
        self.reload_seconds = round(time.monotonic() - clock, 1)
        return pids

    # -- calls --
    def call(self, method: str, path: str, body=None, **kwargs) -> Reply:
        return http(self.base, method, path, body, **kwargs)

    def scrape(self) -> str:
        reply = self.call("GET", "/metrics", auth=f"Bearer {METRICS_TOKEN}")
        assert reply.status == 200, (reply.status, reply.body[:500])
        return reply.body.decode()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.tail(3000)}" for p in (self.web, self.worker, self.beat) if p)


def broker_bind() -> None:
    """Declare the Celery queue and its binding in Redis. The suite's per-test cache.clear()
    (tests/conftest.py) flushes the Redis database that is also the broker; the long-running
    processes, which declared them once at start, would otherwise publish into the void."""
    from config.celery_app import app

    with app.connection_for_write() as conn:
        app.amqp.queues[app.conf.task_default_queue].bind(conn).declare()


# --- webhooks --------------------------------------------------------------------------------

class Receiver:
    """A webhook endpoint on 127.0.0.1 that records every delivery it is sent, by delivery id
    (the Oz-Delivery header), with its event and whether the signature verified. `hold_next()`
    makes the next request wait (the worker stays inside its HTTP call) until `release()`."""

    def __init__(self):
        self.secret = ""
        self._lock = threading.Lock()
        self.received: dict[str, list[dict]] = {}
        self._hold = False
        self.held = threading.Event()  # a request is being held
        self._released = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                hold = receiver._record(self.headers, body)
                if hold:
                    receiver.held.set()
                    receiver._released.wait(60)
                try:
                    self.send_response(204)
                    self.end_headers()
                except OSError:  # the sender is gone (killed while waiting)
                    pass

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/oz"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _record(self, headers, body: bytes) -> bool:
        from gateway.webhooks import signature_verify

        try:
            payload = json.loads(body)
        except ValueError:
            payload = {}
        entry = {
            "event": headers.get("Oz-Event"),
            "prediction": (payload.get("data") or payload).get("id") if isinstance(payload, dict) else None,
            "signed": bool(self.secret) and signature_verify(self.secret, body, headers.get("Oz-Signature", "")),
            "at": time.monotonic(),
        }
        with self._lock:
            self.received.setdefault(headers.get("Oz-Delivery", ""), []).append(entry)
            hold, self._hold = self._hold, False
        return hold

    def hold_next(self) -> None:
        with self._lock:
            self._hold = True
        self.held.clear()
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {delivery: len(entries) for delivery, entries in self.received.items()}

    def all_signed(self) -> bool:
        with self._lock:
            return all(e["signed"] for entries in self.received.values() for e in entries)

    def close(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()


# --- the report ------------------------------------------------------------------------------

def report(fault: str, *, sent: int, errors: int, lost: int, **details) -> dict:
    """Append this fault's figures to test-artifacts/faults.json (a JSON list) and print them."""
    row = {"fault": fault, "sent": sent, "errors": errors, "lost": lost, **details,
           "run": RUN, "at": datetime.now(UTC).isoformat(timespec="seconds")}
    REPORT_PATH.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    if REPORT_PATH.exists():
        try:
            rows = json.loads(REPORT_PATH.read_text())
        except ValueError:
            rows = []
    if not isinstance(rows, list):
        rows = [rows]
    rows.append(row)
    REPORT_PATH.write_text(json.dumps(rows, indent=2, default=str) + "\n")
    SESSION_ROWS.append(row)
    print(f"faults.json row: {json.dumps(row, default=str)}")
    return row
