"""gunicorn settings for the Oz container (Dockerfile CMD and docker-compose `web`).

Tuned from the environment; GUNICORN_CMD_ARGS still overrides anything here.
Threads matter: `POST /predict?wait=` and `GET /predictions/<id>?wait=` hold a request
up to 30 s, which would block (and, past `timeout`, kill) a plain sync worker.
"""

import os

# Web processes do not check their kept database connection before each request (Django's
# CONN_HEALTH_CHECKS: a `SELECT 1` round trip on every request, about a tenth of a /predict
# worker's time). After a database restart each kept connection answers one request with
# 503 + Retry-After, then reconnects. Celery workers keep the check: a task failing on a
# stale connection would fail a training run. DATABASE_CONN_HEALTH_CHECKS=true restores it.
os.environ.setdefault("DATABASE_CONN_HEALTH_CHECKS", "false")

workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
keepalive = 5
# Recycle workers now and then so a slow leak (e.g. model cache growth) cannot grow forever.
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "5000"))
max_requests_jitter = max_requests // 10
accesslog = "-"
errorlog = "-"
# The access log masks appeal tokens and credentials in paths, queries and headers
# (config/redaction.py), as the application's own logs do.
logger_class = "config.gunicorn_logging.RedactingLogger"
# Heartbeat files on tmpfs: a container's /tmp is overlayfs, slow enough to stall workers.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
# The runtime control socket (gunicornc) is not used in containers; it would be written
# under $HOME.
control_socket_disable = True

# Metrics (gateway/metrics.py): every worker process writes its counters and histograms to
# files in PROMETHEUS_MULTIPROC_DIR, and /metrics sums them, whichever worker answers the
# scrape. The folder must be set before a worker imports prometheus_client (it is: workers
# load the app after the fork), must be empty when the server starts (old files would count
# again), and belongs to this server alone: by default a fresh folder under
# worker_tmp_dir named after the master's pid, removed on exit.
_metrics_dir_owned = False


def on_starting(server):
    global _metrics_dir_owned
    import tempfile

    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        path = os.path.join(worker_tmp_dir or tempfile.gettempdir(), f"oz-prometheus-{os.getpid()}")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
        _metrics_dir_owned = True
    os.makedirs(path, exist_ok=True)
    for name in os.listdir(path):
        if name.endswith(".db"):
            os.remove(os.path.join(path, name))
    server.log.info("prometheus multiprocess folder: %s", path)


def on_exit(server):
    if _metrics_dir_owned:
        import shutil

        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


def child_exit(server, worker):
    # A worker that exited (recycled by max_requests, or killed) keeps its counters in the
    # sums; its live gauges are dropped.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
