"""Accepted work survives a broker outage: the database rows are written and the request
succeeds; the sweeper re-sends the lost messages once the broker is back."""
from __future__ import annotations

import json
import socket
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from django.utils import timezone

from config.celery_app import app as celery_app
from gateway.models import Prediction, WebhookDelivery
from gateway.outbox import outbox_resend
from gateway.services import routing_update
from gateway.webhooks import signature_verify
from models_registry.models import TrainingRun
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _use_broker(url: str) -> None:
    celery_app.conf.broker_url = url
    celery_app._pool = None
    celery_app.amqp._producer_pool = None


@pytest.fixture
def broker_down(monkeypatch):
    """Point Celery at a port where nothing listens (a real connection refusal).
    Celery prefers the CELERY_BROKER_URL env var over its config, so both change."""
    saved = celery_app.conf.broker_url
    dead = f"redis://127.0.0.1:{_closed_port()}/0"
    monkeypatch.setenv("CELERY_BROKER_URL", dead)
    _use_broker(dead)
    yield saved
    monkeypatch.undo()
    _use_broker(saved)


class Receiver:
    """A webhook endpoint on a local port that records what it receives."""

    def __init__(self):
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append((dict(self.headers), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def test_broker_outage_loses_nothing(broker_down, make_api, monkeypatch):
    predictor = factories.loan_predictor()
    routing_update(predictor=predictor, changes={"mode": "rule"})
    client, key = factories.api_client_with_key()
    _, operator_token = factories.operator_with_token()
    receiver = Receiver()
    started = time.monotonic()
    response = make_api(f"Bearer {key}").post(
        "/predict/loan-approval",
        {"input": factories.loan_input(), "callback_url": receiver.url},
        format="json",
    )
    assert response.status_code == 200, response.content
    assert time.monotonic() - started < 5, "a dead broker must not stall the request"
    prediction = Prediction.objects.get(pk=response.json()["id"])
    delivery = WebhookDelivery.objects.get(prediction=prediction)
    assert delivery.status == WebhookDelivery.Status.PENDING and delivery.attempts == 0

    response = make_api(f"Token {operator_token}").post("/predictors/loan-approval/train")
    assert response.status_code == 202
    run = TrainingRun.objects.get(pk=response.json()["id"])
    assert run.status == TrainingRun.Status.QUEUED

    # While the broker is still down the sweeper cannot publish either, and says so.
    later = timezone.now() + timedelta(minutes=5)
    assert outbox_resend(now=later) == {"webhooks": 0, "training_runs": 0}

    # Broker back: the sweeper re-sends, a real worker delivers.
    monkeypatch.setenv("CELERY_BROKER_URL", broker_down)
    _use_broker(broker_down)
    from celery.contrib.testing.worker import start_worker

    with start_worker(celery_app, pool="solo", perform_ping_check=False, shutdown_timeout=30):
        sent = outbox_resend(now=timezone.now() + timedelta(minutes=5))
        assert sent == {"webhooks": 1, "training_runs": 1}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            delivery.refresh_from_db()
            run.refresh_from_db()
            if delivery.status != "pending" and run.status not in ("queued", "running"):
                break
            time.sleep(0.2)
    receiver.close()

    assert delivery.status == WebhookDelivery.Status.DELIVERED
    assert run.status in (TrainingRun.Status.SUCCEEDED, TrainingRun.Status.FAILED)  # it ran
    assert "usable labels" in run.error  # no labels yet: failed for the right reason
    (headers, body), = receiver.received
    assert headers["Oz-Event"] == "prediction.answered"
    assert signature_verify(client.webhook_secret, body, headers["Oz-Signature"])
    assert not signature_verify("another-secret", body, headers["Oz-Signature"])
    payload = json.loads(body)
    assert payload["type"] == "prediction.answered"
    assert payload["data"]["id"] == str(prediction.id) and payload["data"]["source"] == "rule"

