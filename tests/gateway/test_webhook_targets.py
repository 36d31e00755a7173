"""Where a webhook may connect: the host is resolved once, every resolved address must be
public unless the client (a network entry in its webhook_hosts) or OZ_WEBHOOK_ALLOW_PRIVATE
allows it, and the POST goes to that vetted address with the original Host header (so DNS
rebinding between the check and the connection cannot reach an internal service)."""
from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from gateway import webhooks
from gateway.models import WebhookDelivery
from gateway.services import prediction_create, routing_update
from gateway.webhooks import address_is_public, webhook_attempt, webhook_hosts_clean
from tests import factories

_real_getaddrinfo = socket.getaddrinfo
_real_create_connection = socket.create_connection


class LoopbackReceiver:
    """A tiny webhook endpoint on 127.0.0.1 that records each request's headers and body."""

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
        self.port = self.server.server_port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class FakeDNS:
    """Replaces socket.getaddrinfo (the resolver webhooks use) for a few names; each name
    maps to a list of answers, one per lookup (the last one repeats). Other names resolve
    for real, so database and Redis connections are untouched."""

    def __init__(self, monkeypatch, answers: dict[str, list[list[str]]]):
        self.answers = answers
        self.lookups: list[str] = []
        monkeypatch.setattr(webhooks.socket, "getaddrinfo", self)

    def __call__(self, host, port, *args, **kwargs):
        if host not in self.answers:
            return _real_getaddrinfo(host, port, *args, **kwargs)
        self.lookups.append(host)
        rounds = self.answers[host]
        addresses = rounds[min(len(self.lookups_of(host)) - 1, len(rounds) - 1)]
        infos = []
        for address in addresses:
            if ipaddress.ip_address(address).version == 6:
                infos.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port or 0, 0, 0)))
            else:
                infos.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port or 0)))
        return infos

    def lookups_of(self, host):
        return [h for h in self.lookups if h == host]


@pytest.fixture
def rule_loan(loan):
    routing_update(predictor=loan, changes={"mode": "rule"})
    loan.routing.refresh_from_db()
    return loan


@pytest.fixture
def private_refused(settings):
    settings.OZ_WEBHOOK_ALLOW_PRIVATE = False


@pytest.fixture
def connections(monkeypatch):
    """Records every address webhooks connect to (and still connects)."""
    made = []

    def create_connection(address, *args, **kwargs):
        made.append(address)
        return _real_create_connection(address, *args, **kwargs)

    monkeypatch.setattr(webhooks.socket, "create_connection", create_connection)
    return made


def _delivery(predictor, client, url) -> WebhookDelivery:
    prediction, _ = prediction_create(
        predictor=predictor, policy=predictor.routing, client=client, clean_input=factories.loan_input(), callback_url=url
    )
    return WebhookDelivery.objects.get(prediction=prediction)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "addresses",
    [
        ["10.0.0.5"],
        ["127.0.0.1"],
        ["169.254.169.254"],          # cloud metadata
        ["::ffff:127.0.0.1"],         # IPv4-mapped loopback
        ["::ffff:169.254.169.254"],
        ["::1"],
        ["fe80::1"],
        ["0.0.0.0"],  # noqa: S104 (a target, not a bind)
        ["224.0.0.1"],
        ["93.184.216.34", "127.0.0.1"],  # one bad answer among good ones is enough
    ],
)
def test_a_name_resolving_to_a_non_public_address_is_refused_for_good(
    rule_loan, client_key, private_refused, connections, monkeypatch, addresses
):
    dns = FakeDNS(monkeypatch, {"hooks.client.example": [addresses]})
    delivery = webhook_attempt(delivery_id=_delivery(rule_loan, client_key[0], "http://hooks.client.example/hook").pk)
    assert delivery.status == "failed" and delivery.attempts == 1  # permanent: not retried
    assert "non-public address" in delivery.last_error and "hooks.client.example" in delivery.last_error
    (attempt,) = delivery.attempt_log.all()
    assert attempt.status_code is None and "non-public" in attempt.error
    assert connections == [] and dns.lookups == ["hooks.client.example"]


@pytest.mark.django_db
def test_ip_literal_urls_on_private_addresses_are_refused(rule_loan, private_refused, connections):
    receiver = LoopbackReceiver()
    client, _ = factories.api_client_with_key(name="literal", webhook_hosts=["127.0.0.1", "::ffff:127.0.0.1", "169.254.169.254"])
    try:
        urls = [f"http://127.0.0.1:{receiver.port}/hook", f"http://[::ffff:127.0.0.1]:{receiver.port}/hook",
                "http://169.254.169.254/latest/meta-data/"]
        deliveries = [webhook_attempt(delivery_id=_delivery(rule_loan, client, url).pk) for url in urls]
    finally:
        receiver.close()
    # A plain IP entry lets a callback_url name the host; it does not allow a private target.
    assert [d.status for d in deliveries] == ["failed"] * 3
    assert all("non-public" in d.last_error for d in deliveries)
    assert receiver.received == [] and connections == []


@pytest.mark.django_db
def test_dns_rebinding_cannot_reach_the_loopback_receiver(rule_loan, client_key, private_refused, monkeypatch):
    """Public when checked, loopback if asked again: the connection goes to the vetted
    public address, never to a second lookup's answer."""
    receiver = LoopbackReceiver()
    dns = FakeDNS(monkeypatch, {"rebind.client.example": [["93.184.216.34"], ["127.0.0.1"]]})
    tried = []

    def create_connection(address, *args, **kwargs):
        tried.append(address)
        if address[0] == "93.184.216.34":  # no real internet in tests: the public host is "down"
            raise ConnectionRefusedError("refused (test)")
        return _real_create_connection(address, *args, **kwargs)

    monkeypatch.setattr(webhooks.socket, "create_connection", create_connection)
    url = f"http://rebind.client.example:{receiver.port}/hook"
    try:
        delivery = webhook_attempt(delivery_id=_delivery(rule_loan, client_key[0], url).pk)
    finally:
        receiver.close()
    assert tried == [("93.184.216.34", receiver.port)]
    assert dns.lookups == ["rebind.client.example"]  # resolved once
    assert receiver.received == []
    assert delivery.status == "pending" and "refused (test)" in delivery.last_error  # an ordinary, retried failure


@pytest.mark.django_db
def test_a_client_allowed_loopback_reaches_a_real_receiver_with_the_original_host(
    rule_loan, private_refused, connections, monkeypatch
):
    FakeDNS(monkeypatch, {"hooks.internal.test": [["127.0.0.1"]]})
    allowed, _ = factories.api_client_with_key(name="inside", webhook_hosts=["hooks.internal.test", "127.0.0.0/8"])
    other, _ = factories.api_client_with_key(name="outside", webhook_hosts=["hooks.internal.test"])
    receiver = LoopbackReceiver()
    url = f"http://hooks.internal.test:{receiver.port}/hook?x=1"
    try:
        delivered = webhook_attempt(delivery_id=_delivery(rule_loan, allowed, url).pk)
        literal = webhook_attempt(delivery_id=_delivery(rule_loan, allowed, f"http://127.0.0.1:{receiver.port}/lit").pk)
        refused = webhook_attempt(delivery_id=_delivery(rule_loan, other, url).pk)
    finally:
        receiver.close()
    assert delivered.status == "delivered" and delivered.last_status_code == 204
    assert literal.status == "delivered"  # an IP literal inside the network entry is a registered host
    assert refused.status == "failed" and "non-public" in refused.last_error
    assert connections == [("127.0.0.1", receiver.port)] * 2
    (headers, body), (literal_headers, _) = receiver.received
    assert headers["Host"] == f"hooks.internal.test:{receiver.port}"
    assert literal_headers["Host"] == f"127.0.0.1:{receiver.port}"
    assert webhooks.signature_verify(allowed.webhook_secret, body, headers["Oz-Signature"])


@pytest.mark.django_db
def test_ipv4_mapped_answers_match_an_ipv4_network_entry(rule_loan, private_refused, monkeypatch):
    FakeDNS(monkeypatch, {"hooks.internal.test": [["::ffff:127.0.0.1"]]})
    client, _ = factories.api_client_with_key(name="mapped", webhook_hosts=["hooks.internal.test", "127.0.0.1/32"])
    assert webhooks.destination_resolve(client=client, url="http://hooks.internal.test/x") == [
        ipaddress.ip_address("::ffff:127.0.0.1")
    ]


@pytest.mark.django_db
def test_the_global_setting_still_allows_private_targets(rule_loan, settings, connections, monkeypatch):
    settings.OZ_WEBHOOK_ALLOW_PRIVATE = True
    dns = FakeDNS(monkeypatch, {"hooks.client.example": [["127.0.0.1"], ["10.9.9.9"]]})
    client, _ = factories.api_client_with_key(name="global")  # no network entry
    receiver = LoopbackReceiver()
    try:
        delivery = webhook_attempt(delivery_id=_delivery(rule_loan, client, f"http://hooks.client.example:{receiver.port}/h").pk)
    finally:
        receiver.close()
    assert delivery.status == "delivered"
    assert dns.lookups == ["hooks.client.example"] and connections == [("127.0.0.1", receiver.port)]
    assert receiver.received[0][0]["Host"] == f"hooks.client.example:{receiver.port}"


@pytest.mark.django_db
def test_an_unresolvable_name_is_retried_not_failed(rule_loan, client_key, private_refused, monkeypatch):
    def no_answer(host, *args, **kwargs):
        if host == "gone.client.example":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return _real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(webhooks.socket, "getaddrinfo", no_answer)
    delivery = webhook_attempt(delivery_id=_delivery(rule_loan, client_key[0], "http://gone.client.example/h").pk)
    assert delivery.status == "pending" and "cannot resolve" in delivery.last_error


def test_https_connects_to_the_vetted_address_with_sni_and_verification_for_the_name(monkeypatch):
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    connection = webhooks._PinnedHTTPSConnection(
        "hooks.client.example", port, addresses=[ipaddress.ip_address("127.0.0.1")], timeout=5
    )
    assert connection._context.check_hostname and connection._context.verify_mode == ssl.CERT_REQUIRED
    wrapped = {}

    class Context:
        def wrap_socket(self, sock, server_hostname):
            wrapped.update(peer=sock.getpeername(), server_hostname=server_hostname)
            return sock

    connection._context = Context()
    try:
        connection.connect()
    finally:
        connection.close()
        listener.close()
    assert wrapped == {"peer": ("127.0.0.1", port), "server_hostname": "hooks.client.example"}


def test_address_classification():
    public = ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"]
    private = ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",  # noqa: S104
               "224.0.0.1", "240.0.0.1", "255.255.255.255", "::1", "::", "fe80::1", "fc00::1", "ff02::1",
               "::ffff:127.0.0.1", "::ffff:10.0.0.1", "2002:7f00:1::", "2002:a00:1::"]
    assert [a for a in public if not address_is_public(ipaddress.ip_address(a))] == []
    assert [a for a in private if address_is_public(ipaddress.ip_address(a))] == []


def test_network_entries_in_webhook_hosts():
    assert webhook_hosts_clean(["10.0.0.0/8", "127.0.0.1/32", "FD00::/8"]) == ["10.0.0.0/8", "127.0.0.1/32", "fd00::/8"]
    for bad in ["10.0.0.1/8", "10.0.0.0/33", "*.10.0.0.0/8", "example.com/8"]:
        with pytest.raises(ValueError):
            webhook_hosts_clean([bad])
    assert webhooks.host_allowed("10.2.3.4", ["10.0.0.0/8"]) and not webhooks.host_allowed("11.0.0.1", ["10.0.0.0/8"])
    assert not webhooks.host_allowed("hooks.example", ["10.0.0.0/8"])
