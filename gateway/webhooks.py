"""Signed webhook delivery: per-client host allow-list, no redirects, bounded retries with
exponential backoff, and a log of every attempt.

Signature: `Oz-Signature: t=<unix>,v1=<hex>` where hex = HMAC-SHA256(secret, "<t>.<body>").
Receivers recompute it over the raw body and reject old timestamps to stop replays.

A delivery is sent only to a host the prediction's API client registered
(`ApiClient.webhook_hosts`): checked when /predict accepts the callback_url, and again at
every attempt, since the list may have changed in between. A 3xx answer is a failed attempt,
never followed: a redirect could otherwise lead anywhere the client did not register.

At each attempt the host name is resolved once; the attempt is refused (for good) when any
address it resolves to is not public (loopback, private, link-local, multicast, reserved,
unspecified; IPv4-mapped and 6to4/Teredo IPv6 judged by the IPv4 address inside), and the
POST then goes to one of those vetted addresses (never to a second lookup, which DNS
rebinding could point elsewhere) with the original Host header and, for https, SNI and
certificate verification against the original name. A non-public address is allowed when
OZ_WEBHOOK_ALLOW_PRIVATE is set (tests, closed networks) or when a network entry of the
client's webhook_hosts ("10.0.0.0/8", "127.0.0.1/32") contains it; a plain IP entry
("127.0.0.1") only lets callback_urls name that host."""
from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import re
import socket
import ssl
import time
import urllib.parse
from datetime import timedelta

import structlog
from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from .models import ApiClient, WebhookAttempt, WebhookDelivery

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


# --- where a webhook may go -----------------------------------------------------------------

class DestinationRefused(ValueError):
    """The callback URL may not be posted to; no retry can change that."""


class HostNotRegistered(DestinationRefused):
    """The callback URL's host is not on the API client's webhook allow-list."""


_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def _host_normalise(host: str) -> str:
    host = host.strip().lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):  # an IPv6 literal as written in a URL
        host = host[1:-1]
    return host


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def webhook_hosts_clean(hosts) -> list[str]:
    """Validate and normalise an allow-list: exact host names or IP addresses, or
    "*.example.com" (any name below example.com, not example.com itself). No schemes,
    ports or paths. Raises ValueError naming the first bad entry."""
    if isinstance(hosts, str) or not isinstance(hosts, (list, tuple)):
        raise ValueError("webhook hosts must be a list of host names")
    cleaned: list[str] = []
    for entry in hosts:
        if not isinstance(entry, str):
            raise ValueError(f"not a host name: {entry!r}")
        host = _host_normalise(entry)
        wildcard = host.startswith("*.")
        name = host[2:] if wildcard else host
        if not wildcard and _is_ip(name):
            ok = True
        elif not wildcard and "/" in name:
            # A network: permits non-public addresses inside it for this client (and IP
            # literals inside it as callback hosts). Host bits must be clear.
            try:
                host = str(ipaddress.ip_network(name, strict=True))
            except ValueError:
                raise ValueError(f"not a network (CIDR with host bits clear): {entry!r}") from None
            ok = True
        else:
            labels = name.split(".")
            # A wildcard needs at least two labels under it ("*.example.com", not "*.com").
            ok = all(_LABEL.match(label) for label in labels) and (not wildcard or len(labels) >= 2)
        if not ok:
            raise ValueError(f"not a host name or '*.domain' pattern: {entry!r}")
        if host not in cleaned:
            cleaned.append(host)
    return cleaned


def host_allowed(host: str, allowed: list[str]) -> bool:
    host = _host_normalise(host)
    if not host:
        return False
    for entry in allowed or []:
        entry = _host_normalise(entry)
        if entry.startswith("*."):
            if host.endswith(entry[1:]):
                return True
        elif host == entry:
            return True
    address = _ip_or_none(host)  # an IP literal may also fall inside a network entry
    return address is not None and any(_ip_unmapped(address) in network for network in _networks_of(allowed))


def _ip_or_none(text: str):
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _ip_unmapped(address):
    """An IPv4-mapped IPv6 address (::ffff:a.b.c.d) as the IPv4 address it stands for."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _networks_of(allowed: list[str] | None) -> list:
    """The network entries ("10.0.0.0/8") of an allow-list."""
    networks = []
    for entry in allowed or []:
        if "/" in entry:
            try:
                networks.append(ipaddress.ip_network(_host_normalise(entry), strict=False))
            except ValueError:
                continue
    return networks


def address_is_public(address) -> bool:
    """True for an address on the public internet; False for loopback, private, link-local,
    multicast, reserved, unspecified and other special-purpose addresses. IPv6 addresses
    carrying an IPv4 address (mapped, 6to4, Teredo) are judged by that address too."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address_is_public(address.ipv4_mapped)
        embedded = address.sixtofour or (address.teredo[1] if address.teredo else None)
        if embedded is not None and not address_is_public(embedded):
            return False
    return address.is_global and not (
        address.is_private or address.is_loopback or address.is_link_local or address.is_multicast
        or address.is_reserved or address.is_unspecified
    )


def callback_host_check(*, client: ApiClient | None, url: str) -> None:
    """Raise HostNotRegistered unless `url`'s host is on the client's allow-list. A
    prediction without a client (made by an operator or a demo) has no allow-list."""
    host = urllib.parse.urlsplit(url).hostname or ""
    allowed = client.webhook_hosts if client is not None else []
    if not host_allowed(host, allowed):
        raise HostNotRegistered(f"host {host!r} is not registered for this API client")


def destination_resolve(*, client: ApiClient | None, url: str) -> list:
    """Resolve `url`'s host once and return the addresses a POST may connect to. Raises
    DestinationRefused when any of them is non-public (see address_is_public) unless
    OZ_WEBHOOK_ALLOW_PRIVATE is set or a network entry of the client's webhook_hosts holds
    it, or when the URL is not http(s). A failed lookup raises OSError (retried later)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        raise DestinationRefused(f"not an http or https URL: {url!r}")
    host = _host_normalise(parts.hostname or "")
    try:
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError:
        raise DestinationRefused(f"bad port in {url!r}") from None
    if not host:
        raise DestinationRefused(f"no host in {url!r}")
    addresses = []
    for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        address = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise OSError(f"cannot resolve {host!r}")
    if settings.OZ_WEBHOOK_ALLOW_PRIVATE:
        return addresses
    networks = _networks_of(client.webhook_hosts if client is not None else [])
    for address in addresses:
        if not address_is_public(address) and not any(_ip_unmapped(address) in network for network in networks):
            raise DestinationRefused(
                f"{host!r} resolves to a non-public address ({address}); allow it with a network entry "
                "in the client's webhook hosts"
            )
    return addresses


def _connect_any(addresses: list, port: int, timeout) -> socket.socket:
    """A TCP connection to the first of the vetted `addresses` that answers."""
    error: OSError | None = None
    for address in addresses:
        try:
            return socket.create_connection((str(address), port), timeout)
        except OSError as exc:
            error = exc
    raise error or OSError("no address to connect to")


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to vetted addresses, never resolving the host again; the Host header
    still names the URL's host."""

    def __init__(self, host: str, port: int, *, addresses: list, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self.oz_addresses = addresses

    def connect(self):
        self.sock = _connect_any(self.oz_addresses, self.port, self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """As _PinnedHTTPConnection, over TLS with SNI and certificate (and name) verification
    against the URL's host, not the address."""

    def __init__(self, host: str, port: int, *, addresses: list, timeout: float):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self.oz_addresses = addresses

    def connect(self):
        sock = _connect_any(self.oz_addresses, self.port, self.timeout)
        try:
            self.sock = self._context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise


# --- sending --------------------------------------------------------------------------------

def backoff_seconds(attempts: int) -> int:
    """10 s, 20 s, 40 s … capped at one hour."""
    return min(10 * 2 ** max(attempts - 1, 0), 3600)


# Written on the attempt row before the request goes out and replaced by the outcome, so a
# worker killed mid-request leaves an honest trace.
INTERRUPTED = "no outcome recorded: the attempt was interrupted"


def _post(delivery: WebhookDelivery, client: ApiClient | None) -> tuple[int | None, str, bool]:
    """POST the delivery once. Returns (status code, error, give up now)."""
    try:
        callback_host_check(client=client, url=delivery.url)
        addresses = destination_resolve(client=client, url=delivery.url)
    except DestinationRefused as exc:
        return None, str(exc), True
    except OSError as exc:  # the name did not resolve (now): try again later
        return None, f"cannot resolve the host: {exc}"[:1000], False
    body = json.dumps(delivery.payload, separators=(",", ":"), sort_keys=True).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Oz-Webhooks/1",
        "Oz-Event": delivery.event,
        "Oz-Delivery": str(delivery.pk),
        "Oz-Signature": signature_header(client.webhook_secret, body),
    }
    parts = urllib.parse.urlsplit(delivery.url)
    connection_class = _PinnedHTTPSConnection if parts.scheme.lower() == "https" else _PinnedHTTPConnection
    connection = connection_class(
        parts.hostname, parts.port, addresses=addresses, timeout=settings.OZ_WEBHOOK_TIMEOUT_SECONDS
    )
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        connection.request("POST", target, body=body, headers=headers)
        response = connection.getresponse()
        status = response.status
        response.close()
    except (http.client.HTTPException, OSError, ValueError) as exc:
        # No usable HTTP answer: refused, timed out, TLS failure, garbage instead of HTTP.
        return None, str(exc)[:1000] or exc.__class__.__name__, False
    finally:
        connection.close()
    if 200 <= status < 300:
        return status, "", False
    if 300 <= status < 400:
        return status, f"HTTP {status}: redirects are not followed", False
    return status, f"HTTP {status}", False


def webhook_attempt(*, delivery_id: int) -> WebhookDelivery | None:
    """Try one delivery and record the try as a WebhookAttempt.

    Idempotent: a delivered or failed delivery, or one not yet due, is left alone (None).
    A short transaction claims the attempt (moving next_attempt_at past the timeout, so no
    other worker posts it meanwhile) and writes its log row; the HTTP call runs outside any
    transaction. A 2xx answer delivers; anything else is retried with backoff until
    settings.OZ_WEBHOOK_MAX_ATTEMPTS tries, then the delivery is `failed`. A host off the
    client's allow-list or a private destination fails it at once."""
    with transaction.atomic():
        delivery = (
            WebhookDelivery.objects.select_for_update(skip_locked=True)
            .filter(pk=delivery_id, status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=timezone.now())
            .first()
        )
        if delivery is None:
            return None
        started_at = timezone.now()
        # Numbers run on across redeliveries (the log is kept when the budget is reset).
        number = (delivery.attempt_log.aggregate(last=Max("number"))["last"] or 0) + 1
        attempt = WebhookAttempt.objects.create(
            delivery=delivery, number=number, started_at=started_at, duration_ms=0, error=INTERRUPTED
        )
        delivery.attempts += 1
        delivery.next_attempt_at = started_at + timedelta(
            seconds=settings.OZ_WEBHOOK_TIMEOUT_SECONDS + settings.OZ_WEBHOOK_CLAIM_MARGIN_SECONDS
        )
        delivery.save(update_fields=["attempts", "next_attempt_at"])

    client = ApiClient.objects.filter(predictions__pk=delivery.prediction_id).first()
    clock = time.monotonic()
    status_code, error, give_up = _post(delivery, client)
    attempt.duration_ms = round((time.monotonic() - clock) * 1000)
    attempt.status_code = status_code
    attempt.error = error

    delivery.last_status_code = status_code
    delivery.last_error = error
    if status_code is not None and 200 <= status_code < 300:
        delivery.status = WebhookDelivery.Status.DELIVERED
        delivery.delivered_at = timezone.now()
    elif give_up or delivery.attempts >= settings.OZ_WEBHOOK_MAX_ATTEMPTS:
        delivery.status = WebhookDelivery.Status.FAILED
    else:
        delivery.next_attempt_at = timezone.now() + timedelta(seconds=backoff_seconds(delivery.attempts))
    with transaction.atomic():
        attempt.save(update_fields=["duration_ms", "status_code", "error"])
        delivery.save(update_fields=["status", "delivered_at", "last_status_code", "last_error", "next_attempt_at"])
    # One structured line per try; in a Celery task it carries the request id of the
    # request that caused the event (config/logs.py).
    structlog.get_logger("oz.webhooks").info(
        "webhook attempt", delivery_id=delivery.pk, prediction_id=str(delivery.prediction_id), webhook_event=delivery.event,
        attempt=number, status_code=status_code, duration_ms=attempt.duration_ms, delivery_status=delivery.status,
        error=error or None,
    )
    return delivery


# --- redelivery -----------------------------------------------------------------------------

class RedeliveryRefused(Exception):
    """The delivery cannot be given another round of tries (not failed, or its host is no
    longer registered)."""


def webhook_redeliver(*, delivery: WebhookDelivery, user=None) -> WebhookDelivery:
    """Give a failed delivery a fresh round of tries: back to `pending`, due now, with the
    full budget of settings.OZ_WEBHOOK_MAX_ATTEMPTS; the attempt log is kept and its
    numbering continues. Atomic, under the delivery's row lock, so two concurrent requests
    redeliver once (the second finds it pending and is refused). The Celery message is sent
    on commit. Raises RedeliveryRefused. Callers decide who may ask: the owning API client
    (webhooks API) or a user with gateway.change_webhookdelivery (admin)."""
    from .messaging import task_send_on_commit
    from .tasks import webhook_deliver

    with transaction.atomic():
        locked = WebhookDelivery.objects.select_for_update().get(pk=delivery.pk)
        if locked.status != WebhookDelivery.Status.FAILED:
            raise RedeliveryRefused(f"only a failed delivery can be redelivered; this one is {locked.status}")
        client = ApiClient.objects.filter(predictions__pk=locked.prediction_id).first()
        try:
            callback_host_check(client=client, url=locked.url)
        except HostNotRegistered as exc:
            raise RedeliveryRefused(str(exc)) from None
        locked.status = WebhookDelivery.Status.PENDING
        locked.attempts = 0
        locked.next_attempt_at = timezone.now()
        locked.delivered_at = None
        locked.save(update_fields=["status", "attempts", "next_attempt_at", "delivered_at"])
        task_send_on_commit(webhook_deliver, locked.pk)
    logger.info("webhook delivery #%s redelivered at the request of %s", locked.pk, user or client)
    return locked


# --- reading --------------------------------------------------------------------------------

def webhook_deliveries_of(*, client: ApiClient, status: str | None = None):
    """A client's deliveries, newest first, with their attempt logs (two queries)."""
    deliveries = WebhookDelivery.objects.filter(prediction__client=client)
    if status:
        deliveries = deliveries.filter(status=status)
    return deliveries.prefetch_related("attempt_log").order_by("-pk")
