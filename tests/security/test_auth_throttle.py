"""Failed API authentication is throttled per client address (gateway.throttling): a wrong or
malformed `Bearer`/`Token` credential counts; past OZ_THROTTLE_AUTH_FAILURES in the window
the address gets 429 with Retry-After — for every credential it presents, valid ones too —
until the window ends. Other addresses are not affected, and a successful request costs no
extra cache call."""
from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from django.core.cache import caches

from gateway import throttling
from gateway.models import Prediction
from tests import factories
from tests.gateway.helpers import problem_body

pytestmark = pytest.mark.django_db

WRONG_KEY = "Bearer oz_0123456789ab_notarealkeyatall"


@pytest.fixture
def three_per_minute(settings):
    settings.OZ_THROTTLE_AUTH_FAILURES = "3/min"
    # Failures count in fixed windows aligned to the minute (gateway.throttling): a test
    # that began in a window's last seconds would see its count start again mid-test.
    left = 60 - time.time() % 60
    if left < 10:
        time.sleep(left + 0.05)


def _predict(api, **extra):
    return api.post("/predict/loan-approval", {"input": factories.loan_input()}, format="json", **extra)


def test_failures_past_the_limit_are_429_with_retry_after(loan, make_api, three_per_minute):
    wrong = make_api(WRONG_KEY)
    for _ in range(3):
        problem_body(_predict(wrong), 401)
    refused = _predict(wrong)
    body = problem_body(refused, 429)
    assert "failed authentication" in body["detail"]
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert Prediction.objects.count() == 0


def test_once_over_the_limit_even_a_valid_key_from_that_address_is_refused(
    loan, make_api, client_api, reviewer_api, three_per_minute
):
    assert client_api.get("/predictors").status_code == 200
    wrong = make_api(WRONG_KEY)
    for _ in range(3):
        problem_body(wrong.get("/predictors"), 401)
    # The address has used its budget of failures: whatever it presents now waits.
    response = _predict(client_api)
    problem_body(response, 429)
    assert int(response["Retry-After"]) >= 1
    problem_body(reviewer_api.get("/predictors"), 429)
    assert Prediction.objects.count() == 0


def test_other_addresses_are_not_blocked_by_one_address_failures(loan, make_api, client_key, three_per_minute):
    wrong = make_api(WRONG_KEY)
    for _ in range(4):
        wrong.get("/predictors")
    problem_body(wrong.get("/predictors"), 429)
    elsewhere = make_api(f"Bearer {client_key[1]}")
    assert _predict(elsewhere, REMOTE_ADDR="10.20.30.40").status_code == 202
    # ... and a wrong key from there is a plain 401, counted for that address alone.
    problem_body(make_api(WRONG_KEY).get("/predictors", REMOTE_ADDR="10.20.30.40"), 401)


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer oz_0123456789ab_wrongsecret",  # the shape of a key, matching nothing
        "Bearer not-a-key",
        "Bearer a b",  # malformed
        "Token ozu_0123456789ab_wrongtoken",
        "Token oz_0123456789ab_akeyasatoken",
    ],
)
def test_every_kind_of_bad_credential_counts(loan, make_api, three_per_minute, authorization):
    api = make_api(authorization)
    for _ in range(3):
        problem_body(api.get("/predictors"), 401)
    problem_body(api.get("/predictors"), 429)


def test_the_right_prefix_with_a_wrong_secret_counts(loan, make_api, client_key, three_per_minute):
    plaintext = client_key[1]
    tampered = make_api(f"Bearer {plaintext[:-4]}{'aaaa' if not plaintext.endswith('aaaa') else 'bbbb'}")
    for _ in range(3):
        problem_body(tampered.get("/predictors"), 401)
    problem_body(tampered.get("/predictors"), 429)
    problem_body(make_api(f"Bearer {plaintext}").get("/predictors"), 429)


def test_requests_without_credentials_are_not_counted(loan, anon_api, client_api, three_per_minute):
    for _ in range(5):
        problem_body(anon_api.get("/predictors"), 401)
    assert client_api.get("/predictors").status_code == 200


def test_a_made_up_forwarded_for_header_does_not_dodge_the_limit(loan, make_api, three_per_minute):
    # OZ_NUM_PROXIES is 0 here: the socket's address counts, not the header.
    wrong = make_api(WRONG_KEY)
    for n in range(3):
        problem_body(wrong.get("/predictors", HTTP_X_FORWARDED_FOR=f"198.51.100.{n}"), 401)
    problem_body(wrong.get("/predictors", HTTP_X_FORWARDED_FOR="198.51.100.99"), 429)


def test_the_block_ends_with_the_window(loan, make_api, client_api, monkeypatch, three_per_minute):
    wrong = make_api(WRONG_KEY)
    for _ in range(4):
        wrong.get("/predictors")
    problem_body(client_api.get("/predictors"), 429)
    later = time.time() + 61
    monkeypatch.setattr(throttling, "time", SimpleNamespace(time=lambda: later, monotonic=time.monotonic))
    assert client_api.get("/predictors").status_code == 200
    problem_body(wrong.get("/predictors"), 401)


def test_the_count_is_in_the_shared_cache_keyed_by_address(loan, make_api, settings, three_per_minute):
    assert settings.CACHES["default"]["BACKEND"].endswith("RedisCache"), "the tests run against Redis"
    make_api(WRONG_KEY).get("/predictors")
    make_api(WRONG_KEY).get("/predictors")
    key, _ = throttling._auth_failure_key("127.0.0.1", 60, time.time())
    assert caches["default"].get(key) == 2


def test_no_limit_when_the_setting_is_empty(loan, make_api, settings):
    settings.OZ_THROTTLE_AUTH_FAILURES = ""
    wrong = make_api(WRONG_KEY)
    for _ in range(30):
        problem_body(wrong.get("/predictors"), 401)


def test_an_unreachable_cache_leaves_a_failed_credential_a_401(loan, make_api, monkeypatch, three_per_minute):
    def down(*args, **kwargs):
        raise ConnectionError("cache down")

    monkeypatch.setattr(caches["default"], "incr", down)
    monkeypatch.setattr(caches["default"], "add", down)
    problem_body(make_api(WRONG_KEY).get("/predictors"), 401)


class _RedisRoundTrips:
    """Counts round trips to Redis: single commands and pipelines (one trip each)."""

    def __init__(self, monkeypatch):
        import redis.client

        self.calls: list[str] = []
        command, execute = redis.client.Redis.execute_command, redis.client.Pipeline.execute

        def spy_command(client, *args, **kwargs):
            self.calls.append(" ".join(str(a) for a in args))
            return command(client, *args, **kwargs)

        def spy_pipeline(pipe, *args, **kwargs):
            self.calls.append("pipeline:" + ",".join(str(c[0][0]) for c in pipe.command_stack))
            return execute(pipe, *args, **kwargs)

        monkeypatch.setattr(redis.client.Redis, "execute_command", spy_command)
        monkeypatch.setattr(redis.client.Pipeline, "execute", spy_pipeline)


def test_a_successful_request_costs_one_cache_round_trip(loan, client_api, monkeypatch, settings):
    spy = _RedisRoundTrips(monkeypatch)
    settings.OZ_THROTTLE_AUTH_FAILURES = ""
    assert _predict(client_api).status_code == 202
    without_limit = list(spy.calls)
    spy.calls.clear()
    settings.OZ_THROTTLE_AUTH_FAILURES = "20/min"
    assert _predict(client_api).status_code == 202
    with_limit = list(spy.calls)
    # The client's budget, and with the failure limit on, the address's failure count too:
    # one command either way (the budget script), and nothing counted for a credential that
    # worked. The script reads the failure count only when asked to (its last argument).
    assert len(without_limit) == len(with_limit) == 1, (without_limit, with_limit)
    assert with_limit[0].startswith("EVALSHA") and without_limit[0].startswith("EVALSHA")
    assert "throttle_auth_failures_" in with_limit[0] and with_limit[0].endswith(" 1")
    assert "throttle_auth_failures_" not in without_limit[0] and without_limit[0].endswith(" 0")


def test_wrong_metrics_tokens_count_like_wrong_keys(loan, make_api, anon_api, settings, three_per_minute):
    settings.OZ_METRICS_TOKEN = "metrics-" + "t" * 40
    wrong = make_api("Bearer metrics-wrong-token-xxxxxxxxxxxx")
    for _ in range(3):
        problem_body(wrong.get("/metrics"), 401)
    refused = wrong.get("/metrics")
    problem_body(refused, 429)
    assert 1 <= int(refused["Retry-After"]) <= 60
    # Over the limit, the address is refused whatever it presents: the right token, or an API key...
    assert make_api(f"Bearer {settings.OZ_METRICS_TOKEN}").get("/metrics").status_code == 429
    assert make_api(WRONG_KEY).get("/predictors").status_code == 429
    # ...while another address still reads the metrics with the token.
    assert make_api(f"Bearer {settings.OZ_METRICS_TOKEN}").get("/metrics", REMOTE_ADDR="203.0.113.50").status_code == 200
