"""One error format for every 4xx/5xx: RFC 9457 problem+json with field-by-field errors.

Invalid content in well-formed requests (schema failures, bad field values, bad query
parameters) is 422; a body that is not JSON at all is 400.

A dependency that is down (PostgreSQL refusing or dropping connections, Redis unreachable)
is 503 with `Retry-After`, never a 500 or a stack trace: problem+json for the API, a short
HTML page for the admin. `dependency_unavailable` says which exceptions mean that; the DRF
handler, gateway.middleware.DependencyUnavailableMiddleware (other views) and handler500
(errors raised outside any view) all answer them the same way."""
from __future__ import annotations

import logging
import sys

from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.db import InterfaceError as DbInterfaceError
from django.db import OperationalError as DbOperationalError
from django.http import Http404, HttpResponse, HttpResponseForbidden, JsonResponse
from django.template.loader import render_to_string
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

logger = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"
TYPE_BASE = "https://oz.invalid/problems/"


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the current state."
    default_code = "conflict"


class ServiceUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "A dependency is unavailable; try again shortly."
    default_code = "unavailable"


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is larger than 1 MiB."
    default_code = "payload_too_large"


class FieldValidationError(exceptions.ValidationError):
    """A validation error already shaped as [{field, message}, …]."""

    def __init__(self, errors: list[dict]):
        self.field_errors = errors
        super().__init__(detail=errors)


_TITLES = {
    400: "Malformed request",
    401: "Authentication required",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    406: "Not acceptable",
    409: "Conflict",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Invalid request content",
    429: "Too many requests",
    500: "Internal server error",
    503: "Service unavailable",
}


def problem(status_code: int, detail: str, *, errors: list[dict] | None = None, code: str | None = None) -> dict:
    body = {
        "type": TYPE_BASE + (code or _TITLES.get(status_code, "error").lower()).replace(" ", "-").replace("_", "-"),
        "title": _TITLES.get(status_code, "Error"),
        "status": status_code,
        "detail": detail,
    }
    if errors is not None:
        body["errors"] = errors
    return body


def flatten_errors(detail, prefix: str = "") -> list[dict]:
    """DRF's nested error dict/list -> [{"field": "a.b[0]", "message": "…"}]."""
    out: list[dict] = []
    if isinstance(detail, dict):
        for key, value in detail.items():
            name = prefix if key == "non_field_errors" else (f"{prefix}.{key}" if prefix else str(key))
            out.extend(flatten_errors(value, name))
    elif isinstance(detail, list):
        if all(not isinstance(item, (dict, list)) for item in detail):
            out.extend({"field": prefix, "message": str(item)} for item in detail)
        else:
            for i, item in enumerate(detail):
                out.extend(flatten_errors(item, f"{prefix}[{i}]"))
    else:
        out.append({"field": prefix, "message": str(detail)})
    return out


def problem_response(status_code: int, detail: str, *, errors=None, code=None, headers=None) -> Response:
    return Response(
        problem(status_code, detail, errors=errors, code=code),
        status=status_code,
        content_type=PROBLEM_CONTENT_TYPE,
        headers=headers,
    )


def problem_exception_handler(exc, context):
    """DRF exception handler: every error becomes problem+json; nothing a client sends
    reaches the generic 500 page, and a dependency that is down is 503 with Retry-After."""
    response = _problem_for(exc)
    request = context.get("request")
    if response is not None and dependency_unavailable(exc):
        dependency_log(request, exc)
    if response is not None and request is not None:
        # Render the problem as JSON even on views whose renderer is something else (the
        # OpenAPI schema's YAML, the docs' HTML); DRF renders with the request's renderer.
        request.accepted_renderer = JSONRenderer()
        request.accepted_media_type = PROBLEM_CONTENT_TYPE
    return response


# --- a dependency is down ---------------------------------------------------------------------

# Seconds a client is asked to wait before retrying when a dependency is down: about the time
# a database restart or failover takes.
RETRY_AFTER_SECONDS = 5


def _unavailable_types() -> tuple[type, ...]:
    types: list[type] = [DbOperationalError, DbInterfaceError]
    try:  # raw driver errors, should one ever escape Django's wrapper
        import psycopg

        types += [psycopg.OperationalError, psycopg.InterfaceError]
    except ImportError:
        pass
    try:  # the cache (Redis), where something reads it on a request's path
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        types += [RedisConnectionError, RedisTimeoutError]
    except ImportError:
        pass
    try:  # the broker, should a message be sent without gateway.messaging's guard
        from kombu.exceptions import OperationalError as BrokerOperationalError

        types.append(BrokerOperationalError)
    except ImportError:
        pass
    return tuple(types)


UNAVAILABLE_ERRORS = _unavailable_types()


def dependency_unavailable(exc: BaseException | None) -> bool:
    """True when `exc` means a dependency is down or dropped the connection (the database's
    OperationalError/InterfaceError: refused, reset, shutting down, starting up; Redis or
    broker connection errors and timeouts), not that the request or the code is wrong."""
    return exc is not None and isinstance(exc, UNAVAILABLE_ERRORS)


def _dependency_name(exc: BaseException) -> str:
    module = type(exc).__module__
    if module.startswith(("redis", "kombu")):
        return "redis" if module.startswith("redis") else "broker"
    return "database"


def dependency_log(request, exc: BaseException) -> None:
    """One warning line per refused request (no traceback: during an outage every request
    would print the same one)."""
    logger.warning(
        "503 for %s %s: the %s is unavailable (%s: %s)",
        getattr(request, "method", "?"), getattr(request, "path", "?"), _dependency_name(exc),
        type(exc).__name__, str(exc).strip().splitlines()[0][:300] if str(exc).strip() else "",
    )


UNAVAILABLE_DETAIL = "A service this request needs is temporarily unavailable; retry after the time in Retry-After."

_UNAVAILABLE_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Service unavailable</title></head>
<body><h1>Service unavailable</h1>
<p>A service Oz needs is temporarily unavailable. Please try again in a few seconds.</p></body></html>
"""


def unavailable_response(request) -> HttpResponse:
    """503 with Retry-After outside DRF: an HTML page for the admin and browsers (pages that
    ask for text/html, like the appeal page), problem+json for everything else."""
    if request is not None and (_is_admin(request) or "text/html" in request.headers.get("Accept", "")):
        response = HttpResponse(_UNAVAILABLE_PAGE, status=503, content_type="text/html; charset=utf-8")
    else:
        response = _problem_json(503, UNAVAILABLE_DETAIL, code="unavailable")
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    response["Cache-Control"] = "no-store"
    return response


def retry_after(wait: float) -> str:
    """A Retry-After value: the wait in whole seconds, rounded up."""
    return str(int(wait) + (0 if float(wait).is_integer() else 1))


def _problem_for(exc):
    if dependency_unavailable(exc):
        return problem_response(
            503, UNAVAILABLE_DETAIL, code="unavailable",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS), "Cache-Control": "no-store"},
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, RequestDataTooBig):
        exc = PayloadTooLarge()

    if isinstance(exc, exceptions.ValidationError):
        errors = getattr(exc, "field_errors", None) or flatten_errors(exc.detail)
        return problem_response(422, "The request content is invalid; see `errors`.", errors=errors, code="validation")

    if isinstance(exc, exceptions.APIException):
        headers = {}
        if getattr(exc, "auth_header", None):
            headers["WWW-Authenticate"] = exc.auth_header
        if getattr(exc, "wait", None):
            headers["Retry-After"] = retry_after(exc.wait)
        detail = exc.detail if isinstance(exc.detail, str) else "; ".join(str(m) for m in flatten_errors(exc.detail))
        code = exc.default_code if isinstance(exc.default_code, str) else None
        return problem_response(exc.status_code, str(detail), code=code, headers=headers)
    return None


# Django-level handlers (URLs that no DRF view owns)
def _problem_json(status_code: int, detail: str, *, code: str | None = None) -> JsonResponse:
    return JsonResponse(problem(status_code, detail, code=code), status=status_code, content_type=PROBLEM_CONTENT_TYPE)


# The admin is for people: its errors stay HTML pages; everything else is the API.
def _is_admin(request) -> bool:
    return request.path.startswith("/admin/")


def handler404(request, exception=None):
    if _is_admin(request):
        return defaults.page_not_found(request, exception)
    return _problem_json(404, "No such resource.")


def handler400(request, exception=None):
    if _is_admin(request):
        return defaults.bad_request(request, exception)
    return _problem_json(400, "Malformed request.")


def handler403(request, exception=None):
    if _is_admin(request):
        return _admin_forbidden(request, exception)
    return _problem_json(403, "Forbidden.")


def _admin_forbidden(request, exception) -> HttpResponseForbidden:
    """The admin's own page, header and links included, saying why when the refusal does (a
    PermissionDenied's message is written for the person, never taken from the request)."""
    from django.contrib import admin

    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:  # refused before the user was known
        return defaults.permission_denied(request, exception)
    reason = str(exception) if isinstance(exception, PermissionDenied) and exception.args else ""
    context = {**admin.site.each_context(request), "reason": reason}
    return HttpResponseForbidden(render_to_string("admin/403.html", context, request))


def handler500(request):
    # Django calls this while handling the exception: a dependency that is down (raised
    # outside any view, e.g. by the session middleware) is a 503, not a 500.
    if dependency_unavailable(sys.exc_info()[1]):
        return unavailable_response(request)
    if _is_admin(request):
        return defaults.server_error(request)
    return _problem_json(500, "Something went wrong on our side; it has been logged.")
