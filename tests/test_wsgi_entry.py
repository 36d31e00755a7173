"""The WSGI entry point gunicorn serves (config.wsgi → config.handlers.OzWSGIHandler):
`/predict/<slug>` goes through a shorter middleware chain than the rest of the site. These
tests call that entry point itself (the test client builds its own handler with the full
chain), and check that the short chain answers like the full one where clients can tell."""
from __future__ import annotations

import json

import pytest
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.test import Client, RequestFactory

from config.handlers import OzWSGIHandler, PredictHandler
from gateway.models import Prediction
from tests import factories

pytestmark = pytest.mark.django_db

SECURITY_HEADERS = ("Content-Security-Policy", "X-Content-Type-Options", "Referrer-Policy",
                    "Cross-Origin-Opener-Policy", "X-Frame-Options", "Permissions-Policy")


@pytest.fixture
def serve():
    """Calls the production entry point with a request from RequestFactory; returns
    (status, headers, body). Like Django's test client, it keeps the per-request connection
    clean-up away from the test's transaction."""
    app = OzWSGIHandler()
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)

    def call(request):
        seen = {}

        def start_response(status, headers, exc_info=None):
            seen["status"], seen["headers"] = int(status.split()[0]), headers

        chunks = app(request.environ, start_response)
        try:
            body = b"".join(chunks)
        finally:
            chunks.close()
        names = [name for name, _ in seen["headers"]]
        return seen["status"], {name: value for name, value in seen["headers"]}, names, body

    yield call
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


def predict_request(key: str | None, body: dict, **extra):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"} if key else {}
    return RequestFactory().post("/predict/loan-approval", json.dumps(body), content_type="application/json",
                                 **headers, **extra)


def test_predict_answers_through_the_entry_point_and_stores_the_prediction(serve, loan, client_key):
    status, headers, _, body = serve(predict_request(client_key[1], {"input": factories.loan_input()}))
    assert status == 202, body
    answer = json.loads(body)
    assert Prediction.objects.filter(pk=answer["id"], client=client_key[0]).exists()
    assert headers["Content-Type"] == "application/json"
    assert len(headers["X-Request-ID"]) >= 16


def test_the_short_chain_sends_the_same_security_headers_as_the_full_one(serve, loan, client_key):
    _, predict_headers, _, _ = serve(predict_request(client_key[1], {"input": factories.loan_input()}))
    _, other_headers, _, _ = serve(RequestFactory().get("/predictors", HTTP_AUTHORIZATION=f"Bearer {client_key[1]}"))
    for name in SECURITY_HEADERS:
        assert predict_headers.get(name), name
        assert predict_headers[name] == other_headers[name], name


def test_refusals_on_the_short_chain_are_problem_json_with_the_same_headers(serve, loan, client_key):
    status, headers, _, body = serve(predict_request(client_key[1], {"input": {"amount": "lots"}}))
    assert status == 422 and headers["Content-Type"] == "application/problem+json"
    assert {error["field"] for error in json.loads(body)["errors"]} >= {"input.amount"}
    oversized = predict_request(client_key[1], {"input": factories.loan_input(), "pad": "x" * 2_000_000})
    status, headers, _, body = serve(oversized)
    assert status == 413 and json.loads(body)["status"] == 413
    for name in SECURITY_HEADERS:
        assert headers.get(name), name


def test_predict_needs_an_api_key_and_never_touches_a_browser_session(serve, loan, client_key):
    staff = factories.operator_with_token()[0]
    browser = Client()
    browser.force_login(staff)
    cookie = f"sessionid={browser.cookies['sessionid'].value}"
    status, headers, names, body = serve(predict_request(None, {"input": factories.loan_input()}, HTTP_COOKIE=cookie))
    assert status == 401 and json.loads(body)["status"] == 401
    assert "Set-Cookie" not in names and "Cookie" not in headers.get("Vary", "")
    assert not Prediction.objects.exists()
    # The same session still works where sessions belong.
    status, _, _, _ = serve(RequestFactory().get("/admin/", HTTP_COOKIE=cookie))
    assert status == 200


def test_a_skip_list_naming_unknown_middleware_stops_the_start(settings):
    settings.OZ_PREDICT_SKIPS_MIDDLEWARE = [*settings.OZ_PREDICT_SKIPS_MIDDLEWARE, "project.middleware.Renamed"]
    with pytest.raises(ValueError, match=r"project\.middleware\.Renamed"):
        PredictHandler()



def test_a_web_process_keeps_what_it_loaded_out_of_the_collectors_walk():
    # A full garbage collection walks every object the collector tracks, holding the GIL:
    # with the app's ~230,000 loaded objects in sight, 40-170 ms in which no request of that
    # worker moved. The entry point freezes what loading put there (the views and what
    # they import); what requests allocate stays collectable.
    import subprocess
    import sys
    from pathlib import Path

    code = "import gc, config.wsgi; print(gc.get_freeze_count(), len(gc.get_objects()))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    frozen, tracked = done.stdout.split()
    assert int(frozen) > 100_000 and int(tracked) < int(frozen) // 20, (frozen, tracked)
