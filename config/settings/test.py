"""The test suite: PostgreSQL and Redis from DATABASE_URL / REDIS_URL (scripts/testenv.sh
starts both). Celery is not eager: tests that need a worker start a real one on Redis."""
from .base import *  # noqa: F403
from .base import env

DEBUG = False
SECRET_KEY = "oz-test-key"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
REST_FRAMEWORK = {**REST_FRAMEWORK}
# Static files straight from the apps (no collectstatic before tests).
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
OZ_WEBHOOK_ALLOW_PRIVATE = env.bool("OZ_WEBHOOK_ALLOW_PRIVATE", default=True)
