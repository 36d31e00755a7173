import os

from celery import Celery, signals

from config.logs import celery_setup_logging, celery_signals_connect

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

app = Celery("oz")
# All Celery settings live in Django settings, prefixed CELERY_.
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Workers log through settings.LOGGING (JSON in production), not Celery's own format; and
# a task's log lines carry the request id of the request that sent it (config/logs.py).
signals.setup_logging.connect(celery_setup_logging, weak=False)
celery_signals_connect()
