"""`make run`: SQLite, Celery eager, local-memory cache, debug pages."""
from .base import *  # noqa: F403
from .base import env

# Debug pages stay off by default so the API answers problem+json even locally;
# WhiteNoise serves the admin's static files straight from the apps.
DEBUG = env.bool("DJANGO_DEBUG", default=False)
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
OZ_DEMO_ALLOWED = True
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=True)
OZ_WEBHOOK_ALLOW_PRIVATE = env.bool("OZ_WEBHOOK_ALLOW_PRIVATE", default=True)
