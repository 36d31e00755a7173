"""Settings shared by every environment. Every value comes from an env var with a safe
local default; production.py removes the defaults that must never be guessed."""
from datetime import timedelta
from pathlib import Path

import environ
from csp import constants as csp

from config.logs import logging_config, structlog_configure
from config.redaction import redact_logging

BASE_DIR = Path(__file__).resolve().parent.parent.parent
env = environ.Env()

SECRET_KEY = env("DJANGO_SECRET_KEY", default="oz-local-development-key-not-for-production")
DEBUG = env.bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "simple_history",
    "django_prometheus",
    # Content-Security-Policy header (CONTENT_SECURITY_POLICY below) and admin login lockout (AXES_*).
    "csp",
    "axes",
    "gateway",
    "review",
    "models_registry",
]

# Middleware that serves browsers and the admin only: `POST /predict/<slug>` (API key, no
# session, no cookies) skips it (config.handlers). Everything else in MIDDLEWARE still runs there.
OZ_PREDICT_SKIPS_MIDDLEWARE: list[str] = []


def _browser_only(path: str) -> str:
    OZ_PREDICT_SKIPS_MIDDLEWARE.append(path)
    return path


MIDDLEWARE = [
    # First: every log line of the request, refusals included, carries its request id.
    "config.logs.RequestIdMiddleware",
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    # A view failing because the database or Redis is down answers 503 + Retry-After.
    "gateway.middleware.DependencyUnavailableMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Content-Security-Policy on every response (pages, API answers and static files alike).
    "config.security.CSPMiddleware",  # django-csp's, building a nonce-free policy once
    "config.security.PermissionsPolicyMiddleware",
    # After the security headers, so a 413 carries them too; before anything reads the body.
    "gateway.middleware.BodySizeLimitMiddleware",
    _browser_only("whitenoise.middleware.WhiteNoiseMiddleware"),
    _browser_only("django.contrib.sessions.middleware.SessionMiddleware"),
    _browser_only("django.middleware.common.CommonMiddleware"),
    _browser_only("django.middleware.csrf.CsrfViewMiddleware"),
    _browser_only("django.contrib.auth.middleware.AuthenticationMiddleware"),
    _browser_only("django.contrib.messages.middleware.MessageMiddleware"),
    _browser_only("simple_history.middleware.HistoryRequestMiddleware"),
    "django_prometheus.middleware.PrometheusAfterMiddleware",
    # Last: turns an admin login lockout (django-axes) into the 429 page.
    _browser_only("axes.middleware.AxesMiddleware"),
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DATABASE_CONN_MAX_AGE", default=60))
# A kept connection is checked before a request reuses it, so after a database restart or
# failover the first request on each thread reconnects instead of failing.
DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", env.bool("DATABASE_CONN_HEALTH_CHECKS", default=True))
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# Claim-next and /predict's INSERT run as prepared statements on PostgreSQL (gateway.pgsession).
# Turn off behind a pooler that does not track prepared statements (PgBouncer before 1.22, or
# without max_prepared_statements, in transaction pooling mode), where a connection's next
# transaction may run in another server session.
OZ_DB_PREPARED_STATEMENTS = env.bool("DATABASE_PREPARED_STATEMENTS", default=True)


def database_prepared_statements(databases: dict) -> dict:
    """Let psycopg prepare the statements Oz asks it to (gateway.pgsession), on every
    PostgreSQL database. Django's default, no threshold, turns preparing off altogether; a
    threshold no statement reaches prepares only what asks to be (Django's own cursors bind
    on the client and never prepare)."""
    for database in databases.values():
        if OZ_DB_PREPARED_STATEMENTS and "postgresql" in database.get("ENGINE", ""):
            database.setdefault("OPTIONS", {}).setdefault("prepare_threshold", 2**31 - 1)
    return databases


database_prepared_statements(DATABASES)


REDIS_URL = env("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "config.cache.SharedClientRedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env("OZ_CACHE_PREFIX", default="oz"),
            # Redis unreachable must cost a request little: the throttles then fail open.
            "OPTIONS": {
                "socket_connect_timeout": env.float("OZ_CACHE_CONNECT_TIMEOUT", default=1.0),
                "socket_timeout": env.float("OZ_CACHE_TIMEOUT", default=2.0),
            },
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# django-axes first: it refuses a locked-out username+address before any password is checked.
# (The API's keys and tokens never go through authenticate(): gateway.auth and its throttle.)
AUTHENTICATION_BACKENDS = [
    "config.security.LoginLockoutBackend",
    "django.contrib.auth.backends.ModelBackend",
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env("OZ_STATIC_ROOT", default=str(BASE_DIR / "staticfiles"))
MEDIA_ROOT = env("OZ_MEDIA_ROOT", default=str(BASE_DIR / "var" / "media"))
MEDIA_URL = "media/"
STORAGES = {
    # Model artifacts go through Django storage so any backend can hold them.
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# The request body limit of API.md (1 MiB): larger bodies get 413.
OZ_MAX_BODY_BYTES = 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = OZ_MAX_BODY_BYTES

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "gateway.auth.ApiKeyAuthentication",
        "gateway.auth.UserTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["gateway.parsers.JSONParser"],
    # DRF's JSON and negotiation, made cheaper (gateway/renderers.py): /predict answers by the thousand.
    "DEFAULT_RENDERER_CLASSES": ["gateway.renderers.OrjsonRenderer"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "gateway.renderers.JsonFirstNegotiation",
    "EXCEPTION_HANDLER": "gateway.errors.problem_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "gateway.schema_extensions.OzAutoSchema",  # problem+json errors documented
    "DEFAULT_THROTTLE_CLASSES": ["gateway.throttling.ClientRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "client": env("OZ_THROTTLE_CLIENT", default="6000/min"),
        "anon": env("OZ_THROTTLE_ANON", default="60/min"),
    },
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    # How many reverse proxies in front of Oz append to X-Forwarded-For. 0 trusts only the
    # socket's address, so a client cannot dodge the per-address throttles with a made-up
    # header; behind one proxy (nginx, a load balancer) set OZ_NUM_PROXIES=1.
    "NUM_PROXIES": env.int("OZ_NUM_PROXIES", default=0),
}

# Failed API authentication (a wrong or malformed `Bearer`/`Token` credential), counted per
# client address in the shared cache: past this many in the window, every request from that
# address that presents credentials, valid ones included, is 429 (Retry-After) until the
# window ends (gateway.throttling). Empty: no limit. Successful requests add no cache work.
OZ_THROTTLE_AUTH_FAILURES = env("OZ_THROTTLE_AUTH_FAILURES", default="20/min")

SPECTACULAR_SETTINGS = {
    "TITLE": "Oz prediction gateway",
    "DESCRIPTION": "One stable prediction API answered by humans, rules or models.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # A typed POST /predict/<slug> per loaded predictor (gateway/schema_extensions.py).
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "gateway.schema_extensions.predict_path_per_predictor",
    ],
    # Swagger UI from the installed package: nothing is fetched from a CDN.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Fields named `status` carry different choice sets; give each its own name (values
    # as the serializers list them: gateway.models.PredictionStatus, review.models.AppealStatus).
    "ENUM_NAME_OVERRIDES": {
        "PredictionStatusEnum": ["pending", "answered", "revised", "expired"],
        "AppealStatusEnum": ["open", "upheld", "overturned"],
    },
}

# Celery: Redis in production and tests, eager (in-process) when no broker is configured.
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default=REDIS_URL or "memory://localhost/")
CELERY_RESULT_BACKEND = None
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=not REDIS_URL)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = env.int("OZ_TASK_TIME_LIMIT", default=30 * 60)
CELERY_TASK_SOFT_TIME_LIMIT = env.int("OZ_TASK_SOFT_TIME_LIMIT", default=25 * 60)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Publishing gives up fast when the broker is down (one quick retry, not kombu's default
# of several seconds): the request has already committed its rows, and the sweeper
# re-sends the message later, so blocking the client would buy nothing.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "socket_connect_timeout": 2,
    "socket_timeout": 5,
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}
# The outbox sweeper leaves rows this young to their own on_commit message (gateway.outbox).
OZ_OUTBOX_GRACE_SECONDS = env.int("OZ_OUTBOX_GRACE_SECONDS", default=30)
CELERY_BEAT_SCHEDULE = {
    "resend-unsent-work": {
        "task": "gateway.tasks.outbox_sweep",
        "schedule": timedelta(seconds=env.int("OZ_SWEEP_SECONDS", default=60)),
    },
    "answer-sla-misses": {
        "task": "gateway.tasks.sla_sweep",
        "schedule": timedelta(seconds=env.int("OZ_SLA_SWEEP_SECONDS", default=15)),
    },
    "return-expired-leases": {
        "task": "review.tasks.lease_sweep",
        "schedule": timedelta(seconds=env.int("OZ_LEASE_SWEEP_SECONDS", default=60)),
    },
    "re-evaluate-shadow-gates": {
        "task": "models_registry.tasks.shadow_gates_sweep",
        "schedule": timedelta(seconds=env.int("OZ_SHADOW_GATES_SWEEP_SECONDS", default=300)),
    },
}

# Oz's own knobs.
OZ_REVIEW_LEASE_SECONDS = env.int("OZ_REVIEW_LEASE_SECONDS", default=600)
OZ_MAX_WAIT_SECONDS = 30
OZ_WEBHOOK_TIMEOUT_SECONDS = env.int("OZ_WEBHOOK_TIMEOUT_SECONDS", default=5)
# A try whose worker died mid-POST is retried this long after its timeout would have ended it
# (gateway.webhooks): the margin keeps a slow but living try from being sent twice.
OZ_WEBHOOK_CLAIM_MARGIN_SECONDS = env.int("OZ_WEBHOOK_CLAIM_MARGIN_SECONDS", default=30)
OZ_WEBHOOK_MAX_ATTEMPTS = env.int("OZ_WEBHOOK_MAX_ATTEMPTS", default=8)
# Webhooks to loopback/private addresses are refused unless this is on (local and tests).
OZ_WEBHOOK_ALLOW_PRIVATE = env.bool("OZ_WEBHOOK_ALLOW_PRIVATE", default=False)
OZ_MIN_TRAINING_LABELS = env.int("OZ_MIN_TRAINING_LABELS", default=20)
# Fairness gaps count only groups with at least this many holdout rows (smaller ones are
# reported, not compared: a rate over a handful of rows is noise).
OZ_FAIRNESS_MIN_GROUP_SIZE = env.int("OZ_FAIRNESS_MIN_GROUP_SIZE", default=10)
# Share (0-100) of model answers whose explanation is computed off the request path (Celery)
# and kept as an ExplanationSample, chosen by prediction id; answers a client asked to have
# explained are always kept as well (models_registry.explain).
OZ_EXPLAIN_SAMPLE_PERCENT = env.float("OZ_EXPLAIN_SAMPLE_PERCENT", default=10)
# ...and about this many a minute per web process at most (0: no cap; a token bucket, so a
# burst of as many more after a quiet spell), so the explaining work (each costs far more
# than the answer) stays bounded however much traffic the share is of.
OZ_EXPLAIN_SAMPLES_PER_MINUTE = env.int("OZ_EXPLAIN_SAMPLES_PER_MINUTE", default=60)
OZ_ARTIFACT_PREFIX = "models"
OZ_PUBLIC_BASE_URL = env("OZ_PUBLIC_BASE_URL", default="")
# Secret for deriving appeal links (defaults to SECRET_KEY; set it to rotate them apart).
OZ_APPEAL_TOKEN_KEY = env("OZ_APPEAL_TOKEN_KEY", default="")
# Appeals: throttles for the public pages (per token and per client IP).
OZ_APPEAL_RATE_PER_TOKEN = env("OZ_APPEAL_RATE_PER_TOKEN", default="10/hour")
OZ_APPEAL_RATE_PER_IP = env("OZ_APPEAL_RATE_PER_IP", default="60/hour")


# Structured logs (config/logs.py): structlog and the standard library through one
# formatter; JSON lines unless OZ_LOG_JSON=false (local.py prefers readable console lines).
OZ_LOG_JSON = env.bool("OZ_LOG_JSON", default=True)
# redact_logging (config/redaction.py): appeal-link tokens, key secrets and Authorization values
# are masked in every line (tests/security/test_secrets_not_logged.py).
LOGGING = redact_logging(logging_config(json=OZ_LOG_JSON, level=env("OZ_LOG_LEVEL", default="INFO")))
structlog_configure()

# GET /metrics (gateway/metrics.py): readable with `Authorization: Bearer <OZ_METRICS_TOKEN>`
# or by a signed-in staff user; never public. Database-backed metrics are cached this long.
OZ_METRICS_TOKEN = env("OZ_METRICS_TOKEN", default="")
OZ_METRICS_CACHE_SECONDS = env.float("OZ_METRICS_CACHE_SECONDS", default=10)

# /predict keeps each predictor, its routing flag and live model versions in a per-process
# cache this long (seconds); routing and stage changes reach every web worker within it.
OZ_SERVING_CACHE_SECONDS = env.float("OZ_SERVING_CACHE_SECONDS", default=2)

# Training runs (models_registry.training): a running run beats every HEARTBEAT_SECONDS;
# the reaper (beat, every REAP_SECONDS) fails one silent for HEARTBEAT_TIMEOUT seconds, and
# one still queued after QUEUED_TIMEOUT (the outbox sweeper re-sends queued runs until then).
OZ_TRAINING_HEARTBEAT_SECONDS = env.float("OZ_TRAINING_HEARTBEAT_SECONDS", default=5.0)
OZ_TRAINING_HEARTBEAT_TIMEOUT = env.int("OZ_TRAINING_HEARTBEAT_TIMEOUT", default=120)
OZ_TRAINING_QUEUED_TIMEOUT = env.int("OZ_TRAINING_QUEUED_TIMEOUT", default=6 * 3600)
OZ_TRAINING_LABEL_CHUNK = env.int("OZ_TRAINING_LABEL_CHUNK", default=2000)
# The code version a run records; the git commit when unset and the tree is a git checkout.
OZ_CODE_VERSION = env("OZ_CODE_VERSION", default="")
CELERY_BEAT_SCHEDULE["reap-dead-training-runs"] = {
    "task": "models_registry.tasks.training_runs_reap",
    "schedule": timedelta(seconds=env.int("OZ_TRAINING_REAP_SECONDS", default=60)),
}
CELERY_BEAT_SCHEDULE["scheduled-training"] = {
    "task": "models_registry.tasks.training_schedule_sweep",
    "schedule": timedelta(seconds=env.int("OZ_TRAINING_SCHEDULE_SWEEP_SECONDS", default=300)),
}

# Drift (models_registry.drift): every DRIFT_CHECK_SECONDS (beat) each champion's inputs over
# the last DRIFT_WINDOW_HOURS (at most DRIFT_MAX_ROWS of them, a uniform sample) are compared
# with its training inputs; a field whose PSI exceeds DRIFT_PSI_ALERT, over at least
# DRIFT_MIN_ROWS live rows, raises the alert.
OZ_DRIFT_PSI_ALERT = env.float("OZ_DRIFT_PSI_ALERT", default=0.2)
OZ_DRIFT_MIN_ROWS = env.int("OZ_DRIFT_MIN_ROWS", default=100)
OZ_DRIFT_MAX_ROWS = env.int("OZ_DRIFT_MAX_ROWS", default=20000)
OZ_DRIFT_WINDOW_HOURS = env.float("OZ_DRIFT_WINDOW_HOURS", default=24)
# Reports older than this many days are deleted after each check, each predictor's newest kept (0: never).
OZ_DRIFT_REPORT_KEEP_DAYS = env.int("OZ_DRIFT_REPORT_KEEP_DAYS", default=90)
CELERY_BEAT_SCHEDULE["drift-check"] = {
    "task": "models_registry.tasks.drift_check_all",
    "schedule": timedelta(seconds=env.int("OZ_DRIFT_CHECK_SECONDS", default=3600)),
}


# --- Browser-facing security headers (SECURITY.md, tests/security/test_headers.py) -----------
# Content-Security-Policy (django-csp 4): same-origin everything; no inline script except a
# <script nonce="{{ request.csp_nonce }}">; no eval; inline <style> elements only with the
# nonce (or the one hashed block of Django's own admin change list). style attributes are
# allowed (style-src-attr): they cannot run script, and img/font/connect 'self' stop them
# from fetching anywhere else; Django's admin and some server-rendered admin cells use them.
# data: images are Swagger UI's icons. No framing at all (and X-Frame-Options: DENY).
# sha256 of the <style> block in django/contrib/admin/templates/admin/change_list.html (a
# change list without actions); tests/security/test_headers.py fails if Django changes it.
CSP_DJANGO_ADMIN_CHANGELIST_STYLE = "'sha256-blvLUW3UscWqsXGByNOqdBboM+ShWAuugp2mC/wbafU='"
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [csp.SELF],
        "script-src": [csp.SELF, csp.NONCE],
        "style-src": [csp.SELF, csp.NONCE, CSP_DJANGO_ADMIN_CHANGELIST_STYLE],
        "style-src-attr": [csp.UNSAFE_INLINE],
        "img-src": [csp.SELF, "data:"],
        "font-src": [csp.SELF],
        "connect-src": [csp.SELF],
        "object-src": [csp.NONE],
        "base-uri": [csp.NONE],
        "form-action": [csp.SELF],
        "frame-ancestors": [csp.NONE],
    },
}
# Django's SecurityMiddleware headers, stated rather than left to defaults.
SECURE_CONTENT_TYPE_NOSNIFF = True
# Appeal links carry their token in the path: never send it to another origin.
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Permissions-Policy (config.security.PermissionsPolicyMiddleware): no page of Oz needs any
# of these browser features.
OZ_PERMISSIONS_POLICY = env(
    "OZ_PERMISSIONS_POLICY",
    default="accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), microphone=(), "
    "payment=(), usb=()",
)

# --- Admin login brute-force limit (django-axes 8, database handler) ---------------------------
# A username tried from one address is locked after OZ_AXES_FAILURE_LIMIT failed logins, for
# OZ_AXES_COOLOFF_MINUTES (each further failure while locked restarts the wait); the login
# answers 429 with Retry-After and a page saying so (templates/admin/locked_out.html). Other
# usernames from that address, and that username from other addresses, are not locked. A
# successful login resets the count. Unlock early: `manage.py axes_reset_username NAME` (or
# axes_reset_ip, axes_reset). The address is the one the API throttles use (OZ_NUM_PROXIES).
AXES_ENABLED = env.bool("OZ_AXES_ENABLED", default=True)
AXES_FAILURE_LIMIT = env.int("OZ_AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.float("OZ_AXES_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "config.security.client_address"
AXES_LOCKOUT_CALLABLE = "config.security.lockout_response"
AXES_LOCKOUT_TEMPLATE = "admin/locked_out.html"
AXES_HTTP_RESPONSE_CODE = 429
# The records stay in the database (AccessAttempt, AccessLog); the admin does not list them.
AXES_ENABLE_ADMIN = False
# No start-up banner on every manage.py command; failed logins and lockouts are still logged
# (as warnings, with the username and address masked).
AXES_VERBOSE = False
