"""Secrets never reach the logs. A realistic flow — an API client created with its key, a
prediction with `Bearer <key>`, reviewers and operators with `Token <token>`, the end user's
appeal link visited and used, a signed webhook delivered, wrong keys and tokens, a failed
admin login, and error answers (404, 409, 422, 429) — runs while every log line is captured
(every logger at DEBUG, django.request included) through the configured root handler, whose
production JSON output is what ships. None of the plaintext key, token, appeal token, webhook
secret, password or Authorization header value may appear in it.

Plus: keys are compared in constant time (hmac.compare_digest), and a key with the right
prefix and a wrong secret is refused."""
from __future__ import annotations

import hmac
import io
import json
import logging
import re

import pytest
from django.core.management import call_command

from config.logs import logging_config
from gateway import keys
from gateway.appeal_tokens import appeal_token
from gateway.models import WebhookDelivery
from gateway.services import routing_update
from gateway.webhooks import signature_verify, webhook_attempt
from tests import factories
from tests.gateway.helpers import problem_body
from tests.test_outbox import Receiver

pytestmark = pytest.mark.django_db


@pytest.fixture
def every_log_line(settings):
    """All log output, as the configured root handler writes it (production JSON), plus a
    JSON handler of our own on django.request; every logger lowered to DEBUG meanwhile."""
    root = logging.getLogger()
    configured = [h for h in root.handlers if isinstance(h, logging.StreamHandler) and type(h) is logging.StreamHandler]
    assert configured, "the root logger has the handler settings.LOGGING configured"
    shipped = io.StringIO()
    old_streams = [h.setStream(shipped) for h in configured]
    old_formatters = [h.formatter for h in configured]
    production = logging_config(json=True)["formatters"]["structured"].copy()
    factory = production.pop("()")
    for handler in configured:
        handler.setFormatter(factory(**production))

    own = io.StringIO()
    own_handler = logging.StreamHandler(own)
    own_handler.setFormatter(factory(**production))
    request_logger = logging.getLogger("django.request")
    request_logger.addHandler(own_handler)

    loggers = [root, request_logger, *(logging.getLogger(name) for name in list(logging.root.manager.loggerDict))]
    levels = [(lg, lg.level) for lg in loggers if isinstance(lg, logging.Logger)]
    for lg, _ in levels:
        lg.setLevel(logging.DEBUG)
    try:
        yield lambda: shipped.getvalue() + own.getvalue()
    finally:
        for lg, level in levels:
            lg.setLevel(level)
        request_logger.removeHandler(own_handler)
        for handler, stream, formatter in zip(configured, old_streams, old_formatters, strict=True):
            handler.setStream(stream)
            handler.setFormatter(formatter)


def _created_client() -> tuple[str, str]:
    out = io.StringIO()
    call_command("create_api_client", "acme", "--webhook-hosts", "127.0.0.1,client.example", stdout=out)
    text = out.getvalue()
    key = re.search(r"API key \(store it now, it is not shown again\): (\S+)", text).group(1)
    secret = re.search(r"Webhook signing secret: (\S+)", text).group(1)
    return key, secret


def test_no_secret_reaches_any_log_line(loan, make_api, client, every_log_line, settings):
    settings.OZ_THROTTLE_AUTH_FAILURES = "4/min"
    settings.OZ_METRICS_TOKEN = "metrics-token-" + "m" * 32
    settings.AXES_FAILURE_LIMIT = 2
    key, webhook_secret = _created_client()
    _, reviewer_token = factories.reviewer_with_token("rita", password="pw-rita-secret-123")
    _, operator_token = factories.operator_with_token("otto", password="pw-otto-secret-123")
    api = make_api(f"Bearer {key}")
    reviewer_api = make_api(f"Token {reviewer_token}")
    operator_api = make_api(f"Token {operator_token}")
    receiver = Receiver()
    try:
        # A prediction a human answers, with a webhook.
        pending = api.post("/predict/loan-approval", {"input": factories.loan_input(), "callback_url": receiver.url},
                           format="json", HTTP_IDEMPOTENCY_KEY="idem-1")
        assert pending.status_code == 202
        prediction_id = pending.json()["id"]
        claimed = reviewer_api.post("/review/claim")
        assert claimed.status_code == 200
        decided = reviewer_api.post(f"/review/tasks/{claimed.json()['id']}/decision", {"output": "refer", "note": "n"}, format="json")
        assert decided.status_code in (200, 201), decided.content
        assert reviewer_api.post("/review/claim").status_code == 204

        # The webhook, signed with the client's secret, delivered in this process.
        delivery = WebhookDelivery.objects.get(prediction_id=prediction_id)
        assert webhook_attempt(delivery_id=delivery.pk).status == "delivered"
        headers, body = receiver.received[0]
        assert signature_verify(webhook_secret, body, headers["Oz-Signature"])

        # The client reads it; an operator reads it and changes routing.
        answered = api.get(f"/predictions/{prediction_id}")
        assert answered.status_code == 200
        appeal_path = answered.json()["appeal_url"]
        token = appeal_path.rsplit("/", 1)[1]
        assert token == appeal_token(prediction_id)
        assert operator_api.get(f"/predictions/{prediction_id}").status_code == 200
        assert operator_api.patch("/predictors/loan-approval/routing", {"mode": "rule", "reason": "r"}, format="json").status_code == 200
        assert api.post("/predict/loan-approval", {"input": factories.loan_input()}, format="json").status_code == 200

        # The end user: the page, an appeal, a second one (409), the status.
        assert client.get(appeal_path, HTTP_ACCEPT="text/html").status_code == 200
        first = client.post(appeal_path, json.dumps({"reason": "I have traded 12 years"}), content_type="application/json",
                            HTTP_ACCEPT="application/json")
        assert first.status_code == 201, first.content
        again = client.post(appeal_path, json.dumps({"reason": "again"}), content_type="application/json",
                            HTTP_ACCEPT="application/json")
        assert again.status_code == 409
        assert client.get(f"{appeal_path}/status").status_code == 200
        assert client.post(appeal_path, json.dumps({"nope": 1}), content_type="application/json",
                           HTTP_ACCEPT="application/json").status_code == 422

        # Error answers that are not 500s.
        problem_body(api.post("/predict/nope", {"input": {}}, format="json"), 404)
        problem_body(api.post("/predict/loan-approval", {"input": {"amount": "lots"}}, format="json"), 422)
        problem_body(api.post("/predict/loan-approval", {"input": factories.loan_input(amount=1)}, format="json",
                              HTTP_IDEMPOTENCY_KEY="idem-1"), 409)
        problem_body(reviewer_api.post("/predict/loan-approval", {"input": factories.loan_input()}, format="json"), 403)

        # Wrong credentials: a tampered key, a key as a token, a token as a key, garbage;
        # then the address is over its failure limit (429).
        tampered = key[:-4] + ("aaaa" if not key.endswith("aaaa") else "bbbb")
        for authorization in (f"Bearer {tampered}", f"Token {key}", f"Bearer {operator_token}", f"Bearer {key} extra"):
            assert make_api(authorization).get("/predictors").status_code == 401
        assert make_api(f"Bearer {tampered}").get("/predictors").status_code == 429
        # The address is over the failed-authentication limit by now: a wrong metrics token is refused too.
        assert make_api(f"Bearer {settings.OZ_METRICS_TOKEN}x").get("/metrics").status_code == 429

        # A failed admin login, to the lockout.
        for _ in range(2):
            client.post("/admin/login/", {"username": "otto", "password": "pw-otto-WRONG-secret", "next": "/admin/"})
    finally:
        receiver.close()

    captured = every_log_line()
    # The capture does see the flow: the prediction events, the webhook, the refusals.
    events = [json.loads(line).get("event") for line in captured.splitlines() if line.startswith("{")]
    assert "prediction" in events and "webhook attempt" in captured
    assert "Unauthorized" in captured and "Conflict" in captured and "AXES" in captured
    secrets = {
        "API key": key,
        "API key secret part": key.split("_", 2)[2],
        "tampered key": tampered,
        "reviewer token": reviewer_token,
        "reviewer token secret part": reviewer_token.split("_", 2)[2],
        "operator token": operator_token,
        "appeal token": token,
        "webhook secret": webhook_secret,
        "webhook signature": headers["Oz-Signature"].split("v1=", 1)[1],
        "metrics token": settings.OZ_METRICS_TOKEN,
        "reviewer password": "pw-rita-secret-123",
        "failed admin password": "pw-otto-WRONG-secret",
    }
    leaked = {name: value for name, value in secrets.items() if value in captured}
    assert not leaked, {name: [line for line in captured.splitlines() if value in line][:3] for name, value in leaked.items()}
    for header_value in (f"Bearer {key}", f"Token {reviewer_token}", f"Token {operator_token}"):
        assert header_value not in captured


def test_a_500_on_an_appeal_link_logs_the_path_without_its_token(loan, client_key, make_api, client, every_log_line, monkeypatch):
    from review import appeal_views

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(appeal_views, "appeal_status_as_dict", boom)
    routing_update(predictor=loan, changes={"mode": "rule"})
    api_key = client_key[1]
    api = make_api(f"Bearer {api_key}")
    prediction = api.post("/predict/loan-approval", {"input": factories.loan_input()}, format="json").json()
    token = prediction["appeal_url"].rsplit("/", 1)[1]
    client.raise_request_exception = False
    response = client.get(f"/appeal/{token}/status")
    assert response.status_code == 500
    captured = every_log_line()
    assert "Internal Server Error: /appeal/" in captured and "RuntimeError: boom" in captured
    assert token not in captured
    assert api_key not in captured


# --- keys are compared in constant time -------------------------------------------------------

def test_key_matches_uses_compare_digest(monkeypatch):
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(keys.hmac, "compare_digest", spy)
    new = keys.key_generate("oz")
    assert keys.key_matches(new.plaintext, new.key_hash)
    assert not keys.key_matches(new.plaintext[:-1] + ("x" if new.plaintext[-1] != "x" else "y"), new.key_hash)
    assert len(calls) == 2
    assert all(isinstance(a, str) and len(a) == 64 for a, _ in calls)  # hashes compared, never the secrets


def test_the_right_prefix_with_a_wrong_secret_is_refused_through_compare_digest(loan, client_key, make_api, monkeypatch):
    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(keys.hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
    plaintext = client_key[1]
    prefix = keys.key_prefix("oz", plaintext)
    wrong = f"oz_{prefix}_{'A' * len(plaintext.split('_', 2)[2])}"
    problem_body(make_api(f"Bearer {wrong}").get("/predictors"), 401)
    assert calls == [1]  # the row was found by its prefix and the hash compared in constant time
    assert make_api(f"Bearer {plaintext}").get("/predictors").status_code == 200


# --- the access log in front of Django --------------------------------------------------------

@pytest.mark.parametrize("access_log_format", [None, '%(r)s %(U)s?%(q)s "%({Referer}i)s" %({Authorization}i)s'],
                         ids=["default format", "format naming the credential header"])
def test_the_gunicorn_access_log_masks_appeal_tokens_and_credentials(access_log_format):
    from datetime import timedelta
    from types import SimpleNamespace

    from gunicorn.config import Config
    from gunicorn.glogging import SafeAtoms

    from config.gunicorn_logging import RedactingLogger

    token = appeal_token("7f0e4a5e-4c39-4d53-9c3c-9a0d0e0a0b0c")
    config = Config()
    if access_log_format:
        config.set("access_log_format", access_log_format)
    logger = RedactingLogger(config)
    environ = {
        "REQUEST_METHOD": "POST", "RAW_URI": f"/appeal/{token}", "PATH_INFO": f"/appeal/{token}", "QUERY_STRING": "",
        "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "203.0.113.9",
        "HTTP_REFERER": f"https://oz.example.com/appeal/{token}",
    }
    request = SimpleNamespace(headers=[("REFERER", environ["HTTP_REFERER"]), ("AUTHORIZATION", "Bearer oz_0123456789ab_" + "s" * 43)])
    response = SimpleNamespace(status="303 See Other", response_length=0, sent=0, headers=[])
    atoms = logger.atoms(response, request, environ, timedelta(seconds=0.01))
    line = config.access_log_format % SafeAtoms(atoms)  # the line as gunicorn writes it
    assert "/appeal/[redacted]" in line
    assert token not in line and "s" * 43 not in line
    if access_log_format:
        assert "Bearer [redacted]" in line


# --- structured events ------------------------------------------------------------------------

def test_a_secret_anywhere_in_a_structured_event_is_masked_and_a_clean_event_is_left_alone():
    from config.redaction import RedactSecrets

    key = "oz_0123456789ab_" + "k" * 40
    token = appeal_token("0b8e2c1e-1d2f-4c3b-9a8e-7f6d5c4b3a21")
    event = {
        "event": "webhook attempt", "attempt": 2, "ok": False,
        "nested": {"url": f"https://oz.example.com/appeal/{token}", "scores": [0.1, 0.9], "headers": [("Authorization", f"Bearer {key}")]},
    }
    record = logging.LogRecord("oz", logging.INFO, __file__, 1, event, (), None)
    assert RedactSecrets().filter(record)
    text = json.dumps(record.msg)
    assert token not in text and key not in text and "k" * 40 not in text
    assert record.msg["nested"]["url"].endswith("/appeal/[redacted]") and record.msg["nested"]["scores"] == [0.1, 0.9]
    assert record.msg["nested"]["headers"][0][1] == "Bearer [redacted]"

    clean = {"event": "prediction", "input": {f"x{i}": i * 0.5 for i in range(30)}, "route": {"mode": "model"}, "client": "acme"}
    record = logging.LogRecord("oz", logging.INFO, __file__, 1, clean, (), None)
    assert RedactSecrets().filter(record) and record.msg is clean
