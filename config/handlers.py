"""The WSGI entry point: `/predict/<slug>` through a shorter middleware chain.

`/predict` is the hot path and is called with an API key, never a browser session, so the
middleware that only browsers and the admin use (static files, sessions, CSRF, the session
user, messages, the history user, the admin login lockout) does nothing for it but cost
time: about a quarter of a prediction's CPU (bench/predict_http.py). Requests under
`/predict/` go through settings.MIDDLEWARE without settings.OZ_PREDICT_SKIPS_MIDDLEWARE;
every other request goes through all of it. Both chains are built once, from the same list
in the same order, so request ids, metrics, body limits, 503 handling and the security
headers (CSP, HSTS, nosniff, frame and permissions policies) are the same on both.
"""
from __future__ import annotations

from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler

PREDICT_PREFIX = "/predict/"


class PredictHandler(WSGIHandler):
    """A WSGIHandler whose chain leaves out OZ_PREDICT_SKIPS_MIDDLEWARE."""

    def load_middleware(self, is_async=False):
        skipped = set(settings.OZ_PREDICT_SKIPS_MIDDLEWARE)
        unknown = skipped - set(settings.MIDDLEWARE)
        if unknown:  # a renamed middleware would otherwise silently run on /predict again
            raise ValueError(f"OZ_PREDICT_SKIPS_MIDDLEWARE names middleware not in MIDDLEWARE: {sorted(unknown)}")
        full = settings.MIDDLEWARE
        # BaseHandler.load_middleware reads settings.MIDDLEWARE; this runs once, while the
        # process starts and before it serves anything.
        settings.MIDDLEWARE = [path for path in full if path not in skipped]
        try:
            super().load_middleware(is_async)
        finally:
            settings.MIDDLEWARE = full


class OzWSGIHandler:
    """Sends `/predict/...` to the short chain and everything else to Django's usual one."""

    def __init__(self):
        self.everything = WSGIHandler()
        self.predict = PredictHandler()

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO", "").startswith(PREDICT_PREFIX):
            return self.predict(environ, start_response)
        return self.everything(environ, start_response)
