"""gunicorn serving the test database, for the tests that need real server processes (two
web processes, multiprocess metrics, fuzzing over HTTP). The fault tests run a whole stack
of their own (tests/faults/harness.py)."""
from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote

from django.db import connection

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = ROOT / ".venv" / "bin" / "gunicorn"
# One worker, four threads: what the tests of several processes start each server with.
SINGLE_WORKER = ["--workers", "1", "--threads", "4", "--timeout", "60"]
# The production configuration (scripts/gunicorn.conf.py), sized by WEB_CONCURRENCY and
# GUNICORN_THREADS in the environment.
PRODUCTION_CONFIG = ["--config", "scripts/gunicorn.conf.py"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def database_url() -> str:
    """The URL of the test database (test_<name>) while a test runs."""
    db = connection.settings_dict
    user = quote(db["USER"] or "", safe="")
    password = quote(db["PASSWORD"] or "", safe="")
    auth = f"{user}:{password}@" if password else f"{user}@"
    return f"postgres://{auth}{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


class Server:
    """`gunicorn config.wsgi:application` on a free port with `env`, its output in
    `log_dir/server-<name>.log`."""

    def __init__(self, name: str, env: dict, log_dir: Path, args: list[str] = SINGLE_WORKER):
        self.name = name
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        command = [str(GUNICORN) if GUNICORN.exists() else "gunicorn", "config.wsgi:application",
                   "--bind", f"127.0.0.1:{self.port}", *args]
        self.log_path = log_dir / f"server-{name}.log"
        self.log = open(self.log_path, "wb")
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server {self.name} exited: {self.log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.base}/healthz", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"server {self.name} did not come up: {self.log_path.read_text()[-3000:]}")

    def fetch(self, method: str, path: str, data: bytes | None = None, auth: str = "") -> tuple[int, bytes]:
        """(status, raw body) of one request."""
        request = urllib.request.Request(f"{self.base}{path}", data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if auth:
            request.add_header("Authorization", auth)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def call(self, method: str, path: str, body=None, auth: str = "") -> tuple[int, dict]:
        """(status, JSON body) of one request with a JSON body."""
        status, raw = self.fetch(method, path, json.dumps(body).encode() if body is not None else None, auth)
        return status, json.loads(raw or b"{}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
