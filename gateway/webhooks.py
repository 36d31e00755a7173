"""Signed webhook delivery with exponential backoff.

Signature: `Oz-Signature: t=<unix>,v1=<hex>` where hex = HMAC-SHA256(secret, "<t>.<body>").
Receivers recompute it over the raw body and reject old timestamps to stop replays."""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from .models import WebhookDelivery

logger = logging.getLogger(__name__)


def signature_header(secret: str, body: bytes, timestamp: int | None = None) -> str:
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def signature_verify(secret: str, body: bytes, header: str, *, tolerance_seconds: int = 300) -> bool:
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        t = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs(time.time() - t) > tolerance_seconds:
        return False
    expected = signature_header(secret, body, t).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


class DestinationRefused(ValueError):
    """The callback URL points into a private network and the settings do not allow that."""


def destination_check(url: str) -> None:
    """Refuse callback URLs that resolve to loopback, private, link-local or reserved
    addresses (a client could otherwise make Oz probe its internal network), unless
    OZ_WEBHOOK_ALLOW_PRIVATE is set (local development and tests)."""
    if settings.OZ_WEBHOOK_ALLOW_PRIVATE:
        return
    host = urllib.parse.urlsplit(url).hostname or ""
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror as exc:
        raise DestinationRefused(f"cannot resolve {host!r}: {exc}") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise DestinationRefused(f"{host!r} resolves to a non-public address ({address})")


def backoff_seconds(attempts: int) -> int:
    """10 s, 20 s, 40 s … capped at one hour."""
    return min(10 * 2 ** max(attempts - 1, 0), 3600)


def webhook_attempt(*, delivery_id: int) -> WebhookDelivery | None:
    """Try one delivery. Idempotent: a delivered or failed delivery, or one not yet due, is
    left alone. A short transaction claims the attempt (moving next_attempt_at past the
    timeout, so no other worker posts it meanwhile); the HTTP call runs outside it."""
    with transaction.atomic():
        delivery = (
            WebhookDelivery.objects.select_for_update(skip_locked=True)
            .filter(pk=delivery_id, status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=timezone.now())
            .first()
        )
        if delivery is None:
            return None
        delivery.attempts += 1
        delivery.next_attempt_at = timezone.now() + timedelta(seconds=settings.OZ_WEBHOOK_TIMEOUT_SECONDS + 30)
        delivery.save(update_fields=["attempts", "next_attempt_at"])

    client = delivery.prediction.client
    secret = client.webhook_secret if client else ""
    body = json.dumps(delivery.payload, separators=(",", ":"), sort_keys=True).encode()
    request = urllib.request.Request(
        delivery.url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "Oz-Webhooks/1",
            "Oz-Event": delivery.event,
            "Oz-Delivery": str(delivery.pk),
            "Oz-Signature": signature_header(secret, body),
        },
    )
    try:
        destination_check(delivery.url)
        with urllib.request.urlopen(request, timeout=settings.OZ_WEBHOOK_TIMEOUT_SECONDS) as response:
            delivery.last_status_code = response.status
        delivery.status = WebhookDelivery.Status.DELIVERED
        delivery.delivered_at = timezone.now()
        delivery.last_error = ""
    except DestinationRefused as exc:
        delivery.last_error = str(exc)
        delivery.attempts = settings.OZ_WEBHOOK_MAX_ATTEMPTS  # no retry can fix it
    except urllib.error.HTTPError as exc:
        delivery.last_status_code = exc.code
        delivery.last_error = f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        delivery.last_error = str(exc)[:1000]
    if delivery.status != WebhookDelivery.Status.DELIVERED:
        if delivery.attempts >= settings.OZ_WEBHOOK_MAX_ATTEMPTS:
            delivery.status = WebhookDelivery.Status.FAILED
        else:
            delivery.next_attempt_at = timezone.now() + timedelta(seconds=backoff_seconds(delivery.attempts))
    delivery.save(update_fields=["status", "attempts", "delivered_at", "last_status_code", "last_error", "next_attempt_at"])
    return delivery
