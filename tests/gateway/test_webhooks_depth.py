"""Webhooks at full depth, against real local HTTP servers: a receiver that checks the
signature itself, retries with backoff, give-up with every attempt logged, redirects never
followed, the per-client host allow-list (at /predict and again at send time), the clients'
deliveries API, redelivery, and the admin's view and action."""
from __future__ import annotations

import json
import re
import socket
import threading
from html import escape
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import urlsplit

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from gateway.models import ApiClient, Prediction, WebhookAttempt, WebhookDelivery
from gateway.services import prediction_create, routing_update
from gateway.webhooks import (
    RedeliveryRefused,
    backoff_seconds,
    host_allowed,
    signature_verify,
    webhook_attempt,
    webhook_hosts_clean,
    webhook_redeliver,
)
from review.models import ReviewTask
from tests import factories

from .helpers import error_fields, post_json, problem_body

pytestmark = pytest.mark.django_db


class ScriptedReceiver:
    """A webhook endpoint on a local port that answers from a script of status codes (the
    last one repeats) and verifies each request's Oz-Signature with the client's secret,
    answering 401 to a bad one, as a real receiver would."""

    def __init__(self, secret: str, statuses=(204,), location: str | None = None):
        self.received: list[dict] = []
        script = list(statuses)
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                verified = signature_verify(secret, body, self.headers.get("Oz-Signature", ""))
                status = (script.pop(0) if len(script) > 1 else script[0]) if verified else 401
                received.append({"headers": dict(self.headers), "body": body, "verified": verified, "answered": status})
                self.send_response(status)
                if location and 300 <= status < 400:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            # A followed 301/302/303 would arrive as a GET: record every method.
            do_GET = do_HEAD = do_PUT = do_PATCH = do_DELETE = do_POST

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def rule_loan(loan):
    routing_update(predictor=loan, changes={"mode": "rule"})
    loan.routing.refresh_from_db()
    return loan


def _delivery(predictor, client, url) -> WebhookDelivery:
    prediction, _ = prediction_create(
        predictor=predictor, policy=predictor.routing, client=client, clean_input=factories.loan_input(), callback_url=url
    )
    return WebhookDelivery.objects.get(prediction=prediction)


def _make_due(delivery) -> None:
    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())


def _log(delivery) -> list[WebhookAttempt]:
    return list(WebhookAttempt.objects.filter(delivery=delivery).order_by("number"))


# --- signing, retry with backoff, give-up ----------------------------------------------------

def test_two_failures_then_success_with_backoff_and_every_attempt_logged(rule_loan, client_key, settings):
    settings.OZ_WEBHOOK_MAX_ATTEMPTS = 5
    client, _ = client_key
    receiver = ScriptedReceiver(client.webhook_secret, statuses=(500, 500, 204))
    try:
        delivery = _delivery(rule_loan, client, receiver.url)

        first = webhook_attempt(delivery_id=delivery.pk)
        assert first.status == "pending" and first.attempts == 1 and first.last_status_code == 500
        assert first.last_error == "HTTP 500"
        started = _log(delivery)[0].started_at
        assert abs((first.next_attempt_at - started).total_seconds() - backoff_seconds(1)) < 2  # ~10 s
        assert webhook_attempt(delivery_id=delivery.pk) is None  # not due yet: nothing sent
        assert len(receiver.received) == 1

        _make_due(delivery)
        second = webhook_attempt(delivery_id=delivery.pk)
        assert second.status == "pending" and second.attempts == 2
        started = _log(delivery)[1].started_at
        assert abs((second.next_attempt_at - started).total_seconds() - backoff_seconds(2)) < 2  # ~20 s

        _make_due(delivery)
        third = webhook_attempt(delivery_id=delivery.pk)
        assert third.status == "delivered" and third.attempts == 3 and third.last_status_code == 204
        assert third.last_error == "" and third.delivered_at is not None
        _make_due(delivery)
        assert webhook_attempt(delivery_id=delivery.pk) is None  # delivered: never again
    finally:
        receiver.close()

    assert [r["verified"] for r in receiver.received] == [True, True, True]
    assert [r["answered"] for r in receiver.received] == [500, 500, 204]
    bodies = {r["body"] for r in receiver.received}
    assert len(bodies) == 1  # the same event each time
    payload = json.loads(bodies.pop())
    assert payload["type"] == "prediction.answered" and payload["data"]["id"] == str(delivery.prediction_id)
    for request in receiver.received:
        assert request["headers"]["Oz-Delivery"] == str(delivery.pk)
        assert request["headers"]["Oz-Event"] == "prediction.answered"
        assert not signature_verify("another-secret", request["body"], request["headers"]["Oz-Signature"])

    log = _log(delivery)
    assert [(a.number, a.status_code, a.error) for a in log] == [(1, 500, "HTTP 500"), (2, 500, "HTTP 500"), (3, 204, "")]
    assert log[0].started_at < log[1].started_at < log[2].started_at
    assert all(0 <= a.duration_ms < 5000 for a in log)


def test_gives_up_after_the_maximum_tries_with_every_attempt_recorded(rule_loan, client_key, settings):
    settings.OZ_WEBHOOK_MAX_ATTEMPTS = 3
    client, _ = client_key
    receiver = ScriptedReceiver(client.webhook_secret, statuses=(503,))
    try:
        delivery = _delivery(rule_loan, client, receiver.url)
        for _ in range(3):
            result = webhook_attempt(delivery_id=delivery.pk)
            _make_due(delivery)
        assert result.status == "failed" and result.attempts == 3 and result.last_status_code == 503
        assert webhook_attempt(delivery_id=delivery.pk) is None  # failed: no fourth try even when "due"
    finally:
        receiver.close()
    assert len(receiver.received) == 3 and all(r["verified"] for r in receiver.received)
    assert [(a.number, a.status_code) for a in _log(delivery)] == [(1, 503), (2, 503), (3, 503)]


def test_a_wrong_secret_is_refused_by_the_receiver_and_recorded(rule_loan, client_key, settings):
    settings.OZ_WEBHOOK_MAX_ATTEMPTS = 1
    client, _ = client_key
    receiver = ScriptedReceiver("not-the-clients-secret")
    try:
        delivery = webhook_attempt(delivery_id=_delivery(rule_loan, client, receiver.url).pk)
    finally:
        receiver.close()
    assert receiver.received[0]["verified"] is False
    assert delivery.status == "failed" and delivery.last_status_code == 401


def test_a_connection_failure_is_an_attempt_without_a_status_code(rule_loan, client_key):
    client, _ = client_key
    delivery = webhook_attempt(delivery_id=_delivery(rule_loan, client, "http://127.0.0.1:9/hook").pk)
    assert delivery.status == "pending" and delivery.last_status_code is None
    (attempt,) = _log(delivery)
    assert attempt.status_code is None and attempt.error and "interrupted" not in attempt.error


class RawServer:
    """A TCP server on a local port that reads the request and answers `reply` bytes (or
    nothing at all when None, holding the connection until closed)."""

    def __init__(self, reply: bytes | None):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        self.connections = []

        def serve():
            while True:
                try:
                    conn, _ = self.sock.accept()
                except OSError:
                    return
                self.connections.append(conn)
                conn.recv(65536)
                if reply is not None:
                    conn.sendall(reply)
                    conn.close()

        threading.Thread(target=serve, daemon=True).start()

    def close(self):
        self.sock.close()
        for conn in self.connections:
            conn.close()


@pytest.mark.parametrize("reply, expected", [(b"garbage\r\n\r\n", "garbage"), (None, "timed out")])
def test_a_non_http_answer_or_a_timeout_is_a_failed_attempt(rule_loan, client_key, settings, reply, expected):
    settings.OZ_WEBHOOK_TIMEOUT_SECONDS = 1
    client, _ = client_key
    server = RawServer(reply)
    try:
        delivery = webhook_attempt(delivery_id=_delivery(rule_loan, client, server.url).pk)
    finally:
        server.close()
    assert delivery.status == "pending" and delivery.attempts == 1 and delivery.last_status_code is None
    assert expected in delivery.last_error.lower()
    (attempt,) = _log(delivery)
    assert attempt.status_code is None and attempt.error == delivery.last_error
    if reply is None:
        assert attempt.duration_ms >= 900  # it waited for the timeout


# --- redirects --------------------------------------------------------------------------------

@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_a_redirect_is_a_failed_attempt_and_is_never_followed(rule_loan, client_key, settings, code):
    settings.OZ_WEBHOOK_MAX_ATTEMPTS = 2
    client, _ = client_key
    behind = ScriptedReceiver("")  # records any request that reaches it, whatever the method
    redirector = ScriptedReceiver(client.webhook_secret, statuses=(code,), location=behind.url)
    try:
        delivery = _delivery(rule_loan, client, redirector.url)
        delivery = webhook_attempt(delivery_id=delivery.pk)
        assert delivery.status == "pending" and delivery.last_status_code == code
        _make_due(delivery)
        delivery = webhook_attempt(delivery_id=delivery.pk)
    finally:
        redirector.close()
        behind.close()
    assert len(redirector.received) == 2
    assert behind.received == []
    assert delivery.status == "failed" and delivery.last_status_code == code
    assert "redirects are not followed" in delivery.last_error
    assert [a.status_code for a in _log(delivery)] == [code, code]


# --- the host allow-list ----------------------------------------------------------------------

def test_host_patterns():
    hosts = webhook_hosts_clean(["Hooks.Acme.Example.", "*.acme.test", "127.0.0.1", "[::1]"])
    assert hosts == ["hooks.acme.example", "*.acme.test", "127.0.0.1", "::1"]
    assert host_allowed("hooks.acme.example", hosts)
    assert host_allowed("HOOKS.acme.example.", hosts)
    assert host_allowed("a.acme.test", hosts) and host_allowed("a.b.acme.test", hosts)
    assert not host_allowed("acme.test", hosts)  # the wildcard is for names below it
    assert not host_allowed("evilacme.test", hosts)
    assert not host_allowed("hooks.acme.example.evil.com", hosts)
    assert not host_allowed("x.hooks.acme.example", hosts)  # exact means exact
    assert host_allowed("::1", hosts) and host_allowed("127.0.0.1", hosts)
    assert not host_allowed("127.0.0.2", hosts) and not host_allowed("", hosts)
    assert not host_allowed("anything.example", [])


@pytest.mark.parametrize("bad", ["*", "*.com", "https://a.example", "a.example:8080", "a.example/path", "a..example",
                                 "-a.example", "a b.example", "", 5, None])
def test_malformed_host_patterns_are_refused(bad):
    with pytest.raises(ValueError):
        webhook_hosts_clean([bad])


def test_hosts_must_be_a_list():
    with pytest.raises(ValueError):
        webhook_hosts_clean("a.example")


@pytest.fixture
def acme(make_api, rule_loan):
    """An API client that registered hooks.acme.example and *.acme.test only."""
    client, key = factories.api_client_with_key(name="acme-hosts", webhook_hosts=["hooks.acme.example", "*.acme.test"])
    return client, make_api(f"Bearer {key}")


@pytest.mark.parametrize("url", [
    "https://evil.example/hook",
    "https://acme.test/hook",                      # the wildcard's own domain is not below it
    "https://hooks.acme.example.evil.com/hook",    # a suffix trick
    "https://evil.com/?next=https://hooks.acme.example/",
    "https://hooks.acme.example@evil.com/hook",    # userinfo trick: the host is evil.com
    "http://127.0.0.1:8000/hook",                  # the test suite's default hosts are not acme's
])
def test_predict_refuses_a_callback_host_the_client_did_not_register(acme, url):
    _, api = acme
    response = post_json(api, "/predict/loan-approval", {"input": factories.loan_input(), "callback_url": url})
    body = problem_body(response, 422)
    assert error_fields(body) == {"callback_url"}
    (error,) = body["errors"]
    assert re.fullmatch(r"host '[^']+' is not registered for this API client", error["message"]), error
    assert not Prediction.objects.exists()
    assert not WebhookDelivery.objects.exists() and not ReviewTask.objects.exists()


@pytest.mark.parametrize("url", ["https://hooks.acme.example/oz", "https://HOOKS.acme.example:8443/oz",
                                 "https://a.acme.test/oz", "https://x.y.acme.test/oz"])
def test_predict_accepts_a_registered_callback_host(acme, url):
    _, api = acme
    response = post_json(api, "/predict/loan-approval", {"input": factories.loan_input(), "callback_url": url})
    assert response.status_code == 200, response.content
    assert WebhookDelivery.objects.get().url == url


def test_a_client_without_hosts_cannot_name_a_callback_but_may_call_without_one(rule_loan, make_api):
    _, key = factories.api_client_with_key(name="no-hooks", webhook_hosts=[])
    api = make_api(f"Bearer {key}")
    body = {"input": factories.loan_input(), "callback_url": "https://client.example/hook"}
    problem_body(post_json(api, "/predict/loan-approval", body), 422)
    assert not Prediction.objects.exists()
    assert post_json(api, "/predict/loan-approval", {"input": factories.loan_input()}).status_code == 200


def test_the_host_is_checked_again_at_send_time(rule_loan, client_key):
    client, _ = client_key
    receiver = ScriptedReceiver(client.webhook_secret)
    try:
        delivery = _delivery(rule_loan, client, receiver.url)
        # The client's allow-list changes after the prediction was accepted.
        ApiClient.objects.filter(pk=client.pk).update(webhook_hosts=["hooks.elsewhere.example"])
        delivery = webhook_attempt(delivery_id=delivery.pk)
    finally:
        receiver.close()
    assert receiver.received == []  # nothing left Oz
    assert delivery.status == "failed" and delivery.attempts == 1  # no retry can fix it
    assert "is not registered for this API client" in delivery.last_error
    (attempt,) = _log(delivery)
    assert attempt.status_code is None and "is not registered" in attempt.error


def test_a_prediction_without_a_client_gets_no_webhook(rule_loan):
    delivery = webhook_attempt(delivery_id=_delivery(rule_loan, None, "http://127.0.0.1:9/hook").pk)
    assert delivery.status == "failed" and "not registered" in delivery.last_error


def test_create_api_client_sets_the_webhook_hosts(db):
    from io import StringIO

    out = StringIO()
    call_command("create_api_client", "hooked", "--webhook-hosts", "a.example.com, *.b.example", stdout=out)
    assert ApiClient.objects.get(name="hooked").webhook_hosts == ["a.example.com", "*.b.example"]
    assert "a.example.com, *.b.example" in out.getvalue()
    call_command("create_api_client", "plain", stdout=StringIO())
    assert ApiClient.objects.get(name="plain").webhook_hosts == []
    with pytest.raises(CommandError, match="webhook-hosts"):
        call_command("create_api_client", "bad", "--webhook-hosts", "https://a.example/x", stdout=StringIO())
    assert not ApiClient.objects.filter(name="bad").exists()


# --- the clients' deliveries API -------------------------------------------------------------

@pytest.fixture
def failing_delivery(rule_loan, client_key, settings):
    """A delivery of the default client that failed (one try allowed, nothing listening)."""
    settings.OZ_WEBHOOK_MAX_ATTEMPTS = 1
    delivery = webhook_attempt(delivery_id=_delivery(rule_loan, client_key[0], "http://127.0.0.1:9/hook").pk)
    assert delivery.status == "failed"
    return delivery


def test_a_client_lists_only_its_own_deliveries_and_filters_by_status(rule_loan, client_key, client_api, make_api,
                                                                      failing_delivery):
    client, _ = client_key
    pending = _delivery(rule_loan, client, "https://client.example/hook")
    other_client, other_key = factories.api_client_with_key(name="globex")
    theirs = _delivery(rule_loan, other_client, "https://client.example/theirs")

    body = client_api.get("/webhooks/deliveries").json()
    assert [d["id"] for d in body["results"]] == [pending.pk, failing_delivery.pk]  # newest first
    assert body["next"] is None
    failed = client_api.get("/webhooks/deliveries", {"status": "failed"}).json()["results"]
    assert [d["id"] for d in failed] == [failing_delivery.pk]
    (shown,) = failed
    assert shown["event"] == "prediction.answered"
    assert shown["prediction"] == str(failing_delivery.prediction_id)
    assert shown["url"] == "http://127.0.0.1:9/hook"
    assert shown["status"] == "failed" and shown["attempts"] == 1 and shown["max_attempts"] == 1
    assert shown["last_status_code"] is None and shown["last_error"]
    assert shown["next_attempt_at"] is None  # settled: no next attempt
    (attempt,) = shown["attempt_log"]
    assert attempt["number"] == 1 and attempt["status_code"] is None and attempt["error"] == shown["last_error"]
    assert shown["links"]["redeliver"] == f"/webhooks/deliveries/{failing_delivery.pk}/redeliver"
    (waiting,) = client_api.get("/webhooks/deliveries", {"status": "pending"}).json()["results"]
    assert waiting["id"] == pending.pk and waiting["next_attempt_at"] and waiting["attempt_log"] == []
    assert client_api.get("/webhooks/deliveries", {"status": "delivered"}).json()["results"] == []

    # The other client sees its own only; neither can reach the other's by id.
    other_api = make_api(f"Bearer {other_key}")
    assert [d["id"] for d in other_api.get("/webhooks/deliveries").json()["results"]] == [theirs.pk]
    problem_body(client_api.get(f"/webhooks/deliveries/{theirs.pk}"), 404)
    problem_body(other_api.post(f"/webhooks/deliveries/{failing_delivery.pk}/redeliver"), 404)
    assert client_api.get(f"/webhooks/deliveries/{pending.pk}").json()["id"] == pending.pk


def test_the_deliveries_list_pages_with_a_next_link(rule_loan, client_key, client_api):
    client, _ = client_key
    made = [_delivery(rule_loan, client, f"https://client.example/hook/{i}").pk for i in range(5)]
    seen, url, pages = [], "/webhooks/deliveries?limit=2", 0
    while url:
        body = client_api.get(url).json()
        assert len(body["results"]) <= 2
        seen += [d["id"] for d in body["results"]]
        url, pages = body["next"], pages + 1
    assert seen == sorted(made, reverse=True) and pages == 3


def test_the_deliveries_list_with_few_queries(rule_loan, client_key, client_api, django_assert_max_num_queries, settings):
    settings.OZ_WEBHOOK_MAX_ATTEMPTS = 1
    client, _ = client_key
    for i in range(6):
        webhook_attempt(delivery_id=_delivery(rule_loan, client, f"http://127.0.0.1:9/{i}").pk)
    with django_assert_max_num_queries(6):  # auth, key touch, deliveries, attempts: no N+1
        assert len(client_api.get("/webhooks/deliveries").json()["results"]) == 6


@pytest.mark.parametrize("query, field", [({"status": "lost"}, "status"), ({"limit": "0"}, "limit"),
                                          ({"limit": "x"}, "limit"), ({"limit": "1000"}, "limit"),
                                          ({"cursor": "abc"}, "cursor")])
def test_bad_list_parameters_are_422(client_api, query, field):
    assert error_fields(problem_body(client_api.get("/webhooks/deliveries", query), 422)) == {field}


def test_the_deliveries_api_is_for_api_clients(anon_api, reviewer_api, operator_api, failing_delivery):
    problem_body(anon_api.get("/webhooks/deliveries"), 401)
    problem_body(reviewer_api.get("/webhooks/deliveries"), 403)
    problem_body(operator_api.get("/webhooks/deliveries"), 403)
    problem_body(operator_api.post(f"/webhooks/deliveries/{failing_delivery.pk}/redeliver"), 403)


# --- redelivery ------------------------------------------------------------------------------

def test_redelivery_resets_a_failed_delivery_and_keeps_the_log(client_key, client_api, failing_delivery, settings,
                                                               django_capture_on_commit_callbacks):
    client, _ = client_key
    with django_capture_on_commit_callbacks() as nudges:
        response = client_api.post(f"/webhooks/deliveries/{failing_delivery.pk}/redeliver")
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "pending" and body["attempts"] == 0 and body["next_attempt_at"]
    assert len(body["attempt_log"]) == 1  # the earlier round stays on record
    assert len(nudges) == 1  # a Celery message goes out once the transaction commits

    # Again while pending: refused, nothing changes.
    problem_body(client_api.post(f"/webhooks/deliveries/{failing_delivery.pk}/redeliver"), 409)

    # The receiver is up now: the next try delivers, numbered after the earlier one.
    receiver = ScriptedReceiver(client.webhook_secret)
    WebhookDelivery.objects.filter(pk=failing_delivery.pk).update(url=receiver.url)
    try:
        delivery = webhook_attempt(delivery_id=failing_delivery.pk)
    finally:
        receiver.close()
    assert delivery.status == "delivered" and delivery.attempts == 1
    assert [(a.number, a.status_code) for a in _log(delivery)] == [(1, None), (2, 204)]
    problem_body(client_api.post(f"/webhooks/deliveries/{failing_delivery.pk}/redeliver"), 409)  # delivered


def test_redelivery_is_refused_when_the_host_is_no_longer_registered(client_key, client_api, failing_delivery):
    client, _ = client_key
    ApiClient.objects.filter(pk=client.pk).update(webhook_hosts=["client.example"])
    body = problem_body(client_api.post(f"/webhooks/deliveries/{failing_delivery.pk}/redeliver"), 409)
    assert "not registered" in body["detail"]
    failing_delivery.refresh_from_db()
    assert failing_delivery.status == "failed"
    with pytest.raises(RedeliveryRefused):
        webhook_redeliver(delivery=failing_delivery)


def test_the_schema_documents_the_webhook_endpoints(anon_api):
    schema = json.loads(anon_api.get("/api/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json").content)
    assert set(schema["paths"]["/webhooks/deliveries"]) >= {"get"}
    assert set(schema["paths"]["/webhooks/deliveries/{delivery_id}/redeliver"]) >= {"post"}
    parameters = {p["name"] for p in schema["paths"]["/webhooks/deliveries"]["get"]["parameters"]}
    assert {"status", "limit", "cursor"} <= parameters


# --- admin -----------------------------------------------------------------------------------

def _admin_change(delivery) -> str:
    return reverse("admin:gateway_webhookdelivery_change", args=[delivery.pk])


def test_the_admin_shows_the_attempt_log_and_redelivers(client, operator, failing_delivery):
    client.force_login(operator[0])
    page = client.get(_admin_change(failing_delivery))
    assert page.status_code == 200
    html = page.content.decode()
    attempt = failing_delivery.attempt_log.get()
    assert "attempt log" in html.lower() and escape(attempt.error) in html
    assert 'name="attempt_log-0-error"' not in html  # read-only: no form inputs

    changelist = reverse("admin:gateway_webhookdelivery_changelist")
    assert "redeliver" in client.get(changelist).content.decode()
    response = client.post(changelist, {"action": "redeliver", "_selected_action": [failing_delivery.pk]}, follow=True)
    assert response.status_code == 200
    assert any("queued for a new round" in str(m) for m in response.context["messages"])
    failing_delivery.refresh_from_db()
    assert failing_delivery.status == "pending" and failing_delivery.attempts == 0
    assert failing_delivery.attempt_log.count() == 1

    # A pending one is not redelivered again; the operator is told why.
    response = client.post(changelist, {"action": "redeliver", "_selected_action": [failing_delivery.pk]}, follow=True)
    assert any("not redelivered" in str(m) for m in response.context["messages"])


def test_the_redeliver_action_needs_the_change_permission(client, failing_delivery):
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission

    viewer = get_user_model().objects.create_user("vic", password="pw-vic-123", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_webhookdelivery"))
    client.force_login(viewer)
    changelist = reverse("admin:gateway_webhookdelivery_changelist")
    page = client.get(changelist)
    assert page.status_code == 200 and 'value="redeliver"' not in page.content.decode()
    client.post(changelist, {"action": "redeliver", "_selected_action": [failing_delivery.pk]})
    failing_delivery.refresh_from_db()
    assert failing_delivery.status == "failed"


def test_the_admin_change_page_has_no_edit_form(client, operator, failing_delivery):
    client.force_login(operator[0])
    html = client.get(_admin_change(failing_delivery)).content.decode()
    assert 'name="url"' not in html and 'name="_save"' not in html
    assert urlsplit(failing_delivery.url).netloc in html
