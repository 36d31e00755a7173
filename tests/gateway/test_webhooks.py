"""Webhook delivery: signed, retried with backoff, never sent into private networks
unless allowed."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from gateway.models import WebhookDelivery
from gateway.services import prediction_create, routing_update
from gateway.webhooks import backoff_seconds, signature_header, signature_verify, webhook_attempt
from tests import factories
from tests.test_outbox import Receiver


def _delivery(loan, client, url) -> WebhookDelivery:
    routing_update(predictor=loan, changes={"mode": "rule"})
    loan.routing.refresh_from_db()
    prediction, _ = prediction_create(
        predictor=loan, policy=loan.routing, client=client, clean_input=factories.loan_input(), callback_url=url
    )
    return WebhookDelivery.objects.get(prediction=prediction)


def test_signature_round_trip_and_tamper_detection():
    body = b'{"a":1}'
    header = signature_header("s3cret", body)
    assert signature_verify("s3cret", body, header)
    assert not signature_verify("s3cret", b'{"a":2}', header)
    assert not signature_verify("other", body, header)
    old = signature_header("s3cret", body, timestamp=1_000_000)
    assert not signature_verify("s3cret", body, old)  # replayed long after
    assert not signature_verify("s3cret", body, "garbage")


def test_backoff_grows_and_is_capped():
    assert [backoff_seconds(n) for n in (1, 2, 3)] == [10, 20, 40]
    assert backoff_seconds(50) == 3600


@pytest.mark.django_db
def test_failed_attempt_is_retried_later_then_gives_up(loan, client_key, settings):
    settings.OZ_WEBHOOK_MAX_ATTEMPTS = 2
    client, _ = client_key
    delivery = _delivery(loan, client, "http://127.0.0.1:9/unreachable")
    delivery = webhook_attempt(delivery_id=delivery.pk)
    assert delivery.status == "pending" and delivery.attempts == 1 and delivery.last_error
    assert delivery.next_attempt_at > timezone.now() + timedelta(seconds=5)
    assert webhook_attempt(delivery_id=delivery.pk) is None  # not due yet
    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
    delivery = webhook_attempt(delivery_id=delivery.pk)
    assert delivery.status == "failed" and delivery.attempts == 2


@pytest.mark.django_db
def test_private_destinations_are_refused_unless_allowed(loan, client_key, settings):
    settings.OZ_WEBHOOK_ALLOW_PRIVATE = False
    receiver = Receiver()
    try:
        delivery = webhook_attempt(delivery_id=_delivery(loan, client_key[0], receiver.url).pk)
    finally:
        receiver.close()
    assert delivery.status == "failed" and "non-public" in delivery.last_error
    assert receiver.received == []


@pytest.mark.django_db
def test_delivery_posts_signed_payload(loan, client_key):
    client, _ = client_key
    receiver = Receiver()
    try:
        delivery = webhook_attempt(delivery_id=_delivery(loan, client, receiver.url).pk)
    finally:
        receiver.close()
    assert delivery.status == "delivered" and delivery.last_status_code == 204
    (headers, body), = receiver.received
    assert signature_verify(client.webhook_secret, body, headers["Oz-Signature"])
    assert webhook_attempt(delivery_id=delivery.pk) is None  # delivered once, never again
