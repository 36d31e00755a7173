"""gunicorn settings for the Oz container (Dockerfile CMD and docker-compose `web`).

Tuned from the environment; GUNICORN_CMD_ARGS still overrides anything here.
Threads matter: `POST /predict?wait=` and `GET /predictions/<id>?wait=` hold a request
up to 30 s, which would block (and, past `timeout`, kill) a plain sync worker.
"""

import os

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
# Heartbeat files on tmpfs: a container's /tmp is overlayfs, slow enough to stall workers.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
# The runtime control socket (gunicornc) is not used in containers; it would be written
# under $HOME.
control_socket_disable = True
