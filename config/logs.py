"""Structured logs: structlog over the standard library, one request id per request.

- `logging_config` builds settings.LOGGING: every log line (structlog's and the standard
  library's alike, Django's and Celery's included) goes through structlog's
  ProcessorFormatter, so it carries the context bound in `structlog.contextvars` (the
  request id) and comes out as one JSON object per line, or readable console lines in
  local development.
- `RequestIdMiddleware` binds `request_id` for the whole request: the incoming
  `X-Request-ID` when it is well formed, else a fresh one; the response echoes it.
- The Celery signal handlers carry the request id from the request that sent a task into
  the task (`before_task_publish` writes it into the message headers, `task_prerun` binds
  it in the worker, `task_postrun` unbinds it), so a task's log lines name the request
  that caused them. config/celery_app.py connects them.
"""
from __future__ import annotations

import logging
import re
import uuid

import orjson
import structlog
from structlog.contextvars import bind_contextvars, clear_contextvars, get_contextvars, reset_contextvars

from config import jsonfast

REQUEST_ID_HEADER = "X-Request-ID"
# What a client may send as its own request id: short, printable, no spaces or quotes
# (it goes into every log line and back into a response header).
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
# The Celery message header that carries it.
CELERY_HEADER = "oz_request_id"


def _shared_processors() -> list:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def _json_dumps(event: dict, default=None, **_) -> str:
    """One JSON line (config.jsonfast: the `prediction` event holds a request's whole input);
    what neither library knows goes through structlog's `default`."""
    return jsonfast.dumps(event, default=default, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def logging_config(*, json: bool, level: str = "INFO") -> dict:
    """settings.LOGGING: JSON lines (`json`) or readable console lines, both with the
    context bound in structlog.contextvars."""
    # The console's tracebacks without local variables (its default with `rich` installed):
    # they would print request inputs, fields marked `log: false` included, and secrets.
    renderer = (structlog.processors.JSONRenderer(_json_dumps) if json
                else structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback))
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "structured": {
                "()": structlog.stdlib.ProcessorFormatter,
                "processors": [
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    # JSON wants the traceback as a string; the console renders it itself.
                    *([structlog.processors.format_exc_info] if json else []),
                    renderer,
                ],
                # Log records from the standard library (Django, Celery, Oz's own modules).
                "foreign_pre_chain": _shared_processors(),
            },
        },
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "structured"}},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {"django.request": {"level": "ERROR"}},
    }


def structlog_configure() -> None:
    """structlog hands its events to the standard library, whose handlers (LOGGING) render
    them; so there is one output, one format and one level setting for both."""
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def caller_lookup_off() -> None:
    """No production line names the source file and line that logged it, so the standard
    library need not look them up for every record (`logging._srcfile = None`, its own
    documented switch: Logging HOWTO, "Optimization"). Development and test output keep
    them, for whoever reads a failure."""
    logging._srcfile = None


def request_id_get() -> str | None:
    """The request id bound for this request (or task), if any."""
    return get_contextvars().get("request_id")


def request_id_clean(raw: str | None) -> str:
    """The client's request id when it is well formed, else a new one."""
    if raw and REQUEST_ID_RE.match(raw):
        return raw
    return uuid.uuid4().hex


class RequestIdMiddleware:
    """First in MIDDLEWARE: every log line of the request carries `request_id`, and the
    response says which one it was (`X-Request-ID`), also for errors raised further in."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        clear_contextvars()  # a worker thread serves many requests; start clean
        request_id = request_id_clean(request.headers.get(REQUEST_ID_HEADER))
        request.request_id = request_id
        bind_contextvars(request_id=request_id)
        try:
            response = self.get_response(request)
        finally:
            clear_contextvars()
        response[REQUEST_ID_HEADER] = request_id
        return response


# --- Celery ---------------------------------------------------------------------------------

def celery_before_task_publish(headers=None, **_) -> None:
    """Put the current request id into the outgoing message's headers (web or task)."""
    request_id = request_id_get()
    if request_id and headers is not None and CELERY_HEADER not in headers:
        headers[CELERY_HEADER] = request_id


def celery_task_prerun(task=None, task_id=None, **_) -> None:
    """Bind the sender's request id, the task's name and id for the task's log lines.
    An eager task (local development) runs inside the request and keeps its context."""
    if task is None:
        return
    request_id = getattr(task.request, CELERY_HEADER, None)
    context = {"task": task.name, "task_id": task_id}
    if request_id and REQUEST_ID_RE.match(str(request_id)):
        context["request_id"] = request_id
    task.request._oz_log_tokens = bind_contextvars(**context)


def celery_task_postrun(task=None, **_) -> None:
    tokens = getattr(task.request, "_oz_log_tokens", None) if task is not None else None
    if tokens:
        try:
            reset_contextvars(**tokens)
        except ValueError:  # bound in another context (should not happen); start clean instead
            clear_contextvars()
        task.request._oz_log_tokens = None


def celery_signals_connect() -> None:
    from celery import signals

    signals.before_task_publish.connect(celery_before_task_publish, weak=False, dispatch_uid="oz_request_id_publish")
    signals.task_prerun.connect(celery_task_prerun, weak=False, dispatch_uid="oz_request_id_prerun")
    signals.task_postrun.connect(celery_task_postrun, weak=False, dispatch_uid="oz_request_id_postrun")


def celery_setup_logging(**_) -> None:
    """Connected to Celery's setup_logging: a worker logs through settings.LOGGING (JSON in
    production) instead of replacing the root logger's handlers with its own format."""
    from logging.config import dictConfig

    from django.conf import settings

    dictConfig(settings.LOGGING)


def get_logger(name: str):
    return structlog.get_logger(name)

