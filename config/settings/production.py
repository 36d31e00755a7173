"""Production: every secret from the environment, HTTPS everywhere, Redis and PostgreSQL."""
from config.logs import caller_lookup_off

from .base import *  # noqa: F403
from .base import database_prepared_statements, env, logging_config, redact_logging

# No default: without DJANGO_SECRET_KEY the process refuses to start.
SECRET_KEY = env("DJANGO_SECRET_KEY")
DEBUG = False
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS")
CELERY_TASK_ALWAYS_EAGER = False

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
# /metrics too: Prometheus scrapes the container directly, inside the network, with its token.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
# Secure cookies need HTTPS in front; DJANGO_SECURE_COOKIES=false only for a local
# plain-HTTP trial of the production stack (docker-compose on localhost).
SESSION_COOKIE_SECURE = env.bool("DJANGO_SECURE_COOKIES", default=True)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=60 * 60 * 24 * 365)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SECURE_CONTENT_TYPE_NOSNIFF = True
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

# One JSON object per log line, whatever OZ_LOG_JSON says (log shippers parse it).
LOGGING = redact_logging(logging_config(json=True, level=env("OZ_LOG_LEVEL", default="INFO")))
caller_lookup_off()

DATABASES = {"default": env.db("DATABASE_URL")}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = env.bool("DATABASE_CONN_HEALTH_CHECKS", default=True)
database_prepared_statements(DATABASES)
