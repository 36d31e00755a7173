"""`make run`: SQLite, Celery eager, local-memory cache, debug pages."""
from .base import *  # noqa: F403
from .base import DATABASES, env, logging_config, redact_logging

# Debug pages stay off by default so the API answers problem+json even locally;
# WhiteNoise serves the admin's static files straight from the apps.
DEBUG = env.bool("DJANGO_DEBUG", default=False)
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
OZ_DEMO_ALLOWED = True
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=True)
OZ_WEBHOOK_ALLOW_PRIVATE = env.bool("OZ_WEBHOOK_ALLOW_PRIVATE", default=True)
# SQLite with the server's threads and the periodic tasks' thread (config/local_beat.py)
# writing at once: a transaction takes the write lock when it begins, and a writer waits
# for it (up to 20 s) instead of failing with "database is locked" mid-transaction.
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"].setdefault("OPTIONS", {}).update(transaction_mode="IMMEDIATE", timeout=20)
# Readable console log lines (structlog's ConsoleRenderer) unless OZ_LOG_JSON=true.
LOGGING = redact_logging(
    logging_config(json=env.bool("OZ_LOG_JSON", default=False), level=env("OZ_LOG_LEVEL", default="INFO"))
)
