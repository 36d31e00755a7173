"""Web security glue that belongs to no one app: the Permissions-Policy header and the admin
login lockout (django-axes) — its backend, the address it counts by and its 429 page.

The Content-Security-Policy itself is settings.CONTENT_SECURITY_POLICY (django-csp); the
API's own failed-authentication throttle is gateway.throttling.auth_failure_record."""
from __future__ import annotations

import math

from axes.backends import AxesStandaloneBackend
from django.conf import settings
from django.shortcuts import render


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
