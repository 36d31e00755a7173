"""Web security glue that belongs to no one app: the Content-Security-Policy middleware
(django-csp's, with nonce-free policies built once), the Permissions-Policy header and the
admin login lockout (django-axes) — its backend, the address it counts by and its 429 page.

The Content-Security-Policy itself is settings.CONTENT_SECURITY_POLICY (django-csp); the
API's own failed-authentication throttle is gateway.throttling.auth_failure_record."""
from __future__ import annotations

import http
import math

from axes.backends import AxesStandaloneBackend
from csp.constants import HEADER, HEADER_REPORT_ONLY
from csp.middleware import CheckableLazyObject
from csp.middleware import CSPMiddleware as BaseCSPMiddleware
from csp.utils import build_policy
from django.conf import settings
from django.shortcuts import render

_PER_RESPONSE_POLICY = ("_csp_config", "_csp_update", "_csp_replace", "_csp_config_ro", "_csp_update_ro", "_csp_replace_ro")


class CSPMiddleware(BaseCSPMiddleware):
    """django-csp's middleware, with the policy of a response that used no nonce and has no
    per-view change (every API answer: JSON has no inline script) built once per process and
    configuration instead of once per response: django-csp deep-copies the whole
    configuration to build it, twice per response (the policy and the report-only one),
    a tenth of the CPU of a /predict answer in-process. Pages that use their nonce, views
    with csp_update/csp_replace and exemptions go through django-csp as before."""

    # (config, report-only config, the headers to write): for each of the two headers, its
    # policy, the response attribute that exempts a response from it, and its URL prefixes
    # left without it. All derived from settings, so built once per configuration.
    _built: tuple = (None, None, ())

    def _fixed_policies(self) -> tuple:
        config = getattr(settings, "CONTENT_SECURITY_POLICY", None)
        report_only = getattr(settings, "CONTENT_SECURITY_POLICY_REPORT_ONLY", None)
        built = self._built
        if built[0] is not config or built[1] is not report_only:  # first use, or settings changed
            headers = (
                (HEADER, build_policy(), "_csp_exempt", tuple((config or {}).get("EXCLUDE_URL_PREFIXES") or ())),
                (HEADER_REPORT_ONLY, build_policy(report_only=True), "_csp_exempt_ro",
                 tuple((report_only or {}).get("EXCLUDE_URL_PREFIXES") or ())),
            )
            built = self._built = (config, report_only, headers)
        return built[2]

    def process_response(self, request, response):
        if getattr(request, "_csp_nonce", None) is not None or any(hasattr(response, a) for a in _PER_RESPONSE_POLICY):
            return super().process_response(request, response)
        if response.status_code in (http.HTTPStatus.INTERNAL_SERVER_ERROR, http.HTTPStatus.NOT_FOUND) and settings.DEBUG:
            return response  # Django's debug pages, as django-csp leaves them
        for header, value, exempt, excluded in self._fixed_policies():
            if value and header not in response and not getattr(response, exempt, False) \
                    and not request.path_info.startswith(excluded):
                response[header] = value
        # As django-csp does: a nonce asked for after the header is written is an error.
        request.csp_nonce = CheckableLazyObject(self._csp_nonce_post_response)
        return response


class PermissionsPolicyMiddleware:
    """Adds `Permissions-Policy: <settings.OZ_PERMISSIONS_POLICY>` to every response that has
    none (Django has no setting for it)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        policy = getattr(settings, "OZ_PERMISSIONS_POLICY", "")
        if policy and "Permissions-Policy" not in response:
            response["Permissions-Policy"] = policy
        return response


def client_address(request) -> str:
    """The caller's address, exactly as the API's throttles see it (REST_FRAMEWORK
    NUM_PROXIES): the socket's address unless Oz is told how many proxies append to
    X-Forwarded-For, so a made-up header cannot dodge a lockout."""
    from gateway.throttling import client_address as address

    return address(request)


class LoginLockoutBackend(AxesStandaloneBackend):
    """django-axes' backend (first in AUTHENTICATION_BACKENDS): refuses a locked-out
    username+address before any password is checked.

    authenticate() without a request is a call from code, not from a browser — Django's test
    client `login()`, a shell — so there is no address to count or lock, and axes' own
    backend would raise instead. Every login form (the admin's) passes the request."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)


def lockout_response(request, original_response=None, credentials=None):
    """The admin login's answer once a username+address is locked: 429, Retry-After, and a
    page that says what happened and when to try again (no password form to keep trying)."""
    from django.contrib import admin

    cooloff = settings.AXES_COOLOFF_TIME
    seconds = math.ceil(cooloff.total_seconds()) if cooloff else None
    context = {
        **admin.site.each_context(request),
        "minutes": math.ceil(seconds / 60) if seconds else None,
        "failure_limit": settings.AXES_FAILURE_LIMIT,
    }
    response = render(request, settings.AXES_LOCKOUT_TEMPLATE, context, status=settings.AXES_HTTP_RESPONSE_CODE)
    if seconds:
        response["Retry-After"] = str(seconds)
    response["Cache-Control"] = "no-store"
    return response
