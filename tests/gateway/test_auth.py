"""Who may call what: API keys (Bearer oz_…), people's tokens (Token ozu_…), scopes,
roles, hashed secrets and throttling."""
from __future__ import annotations

import pytest
from django.core.cache import cache
from django.db import connection
from django.utils import timezone

from gateway.definitions import predictors_load
from gateway.models import ApiKey, Prediction, RoutingPolicy, UserToken
from gateway.throttling import ClientRateThrottle
from tests import factories

from .helpers import error_fields, post_json, problem_body

pytestmark = pytest.mark.django_db

CHURN = """\
slug: churn
input:
  months: {type: integer, minimum: 0, required: true}
output: {type: label, labels: [stay, leave]}
"""


@pytest.fixture
def churn(db, tmp_path):
    path = tmp_path / "churn.yaml"
    path.write_text(CHURN)
    predictors_load(path)


@pytest.fixture
def scoped_api(make_api, loan, churn):
    """A client whose key may only call `churn`."""
    _, key = factories.api_client_with_key(name="scoped", predictor_slugs=["churn"])
    return make_api(f"Bearer {key}")


def predict_loan(api):
    return post_json(api, "/predict/loan-approval", {"input": factories.loan_input()})


# ---------------------------------------------------------------------------------------
# 401: no or bad credentials
# ---------------------------------------------------------------------------------------

# (method, path, the schemes a 401 names: API clients send Bearer keys, people Token)
PROTECTED = [
    ("post", "/predict/loan-approval", "Bearer"),
    ("get", "/predictors", "Bearer, Token"),
    ("get", "/predictors/loan-approval", "Bearer, Token"),
    ("get", "/predictions/7f0e4a5e-4c39-4d53-9c3c-9a0d0e0a0b0c", "Bearer, Token"),
    ("post", "/review/claim", "Token"),
    ("patch", "/predictors/loan-approval/routing", "Token"),
    ("post", "/predictors/loan-approval/train", "Token"),
    ("get", "/predictors/loan-approval/models", "Token"),
]


@pytest.mark.parametrize("method, path, schemes", PROTECTED)
def test_missing_credentials_are_401_with_www_authenticate(loan, anon_api, method, path, schemes):
    response = getattr(anon_api, method)(path, data={}, format="json")
    problem_body(response, 401)
    assert response["WWW-Authenticate"] == schemes
    assert Prediction.objects.count() == 0


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer oz_0123456789ab_notarealkeyatall",
        "Bearer not-a-key",
        "Bearer ",
        "Bearer a b",
        "Bearer " + "x" * 10_000,
        "Token ozu_0123456789ab_notarealtoken",
        "Token oz_0123456789ab_notatoken",
        "Bearer ozu_0123456789ab_wrongkind",
        "Bearer oz_zz\x00zzzzzzzzz_nul",
        "Bearer oz_0123456789ab_\u00e9",
        "Basic dXNlcjpwYXNz",
    ],
)
def test_bad_credentials_are_401(loan, make_api, authorization):
    response = predict_loan(make_api(authorization))
    problem_body(response, 401)
    assert "WWW-Authenticate" in response
    assert Prediction.objects.count() == 0


def test_the_right_prefix_with_the_wrong_secret_is_401(loan, make_api, client_key):
    plaintext = client_key[1]
    tampered = plaintext[:-4] + ("aaaa" if not plaintext.endswith("aaaa") else "bbbb")
    problem_body(predict_loan(make_api(f"Bearer {tampered}")), 401)


def test_an_api_key_is_not_a_user_token_and_vice_versa(loan, make_api, client_key, operator):
    problem_body(predict_loan(make_api(f"Token {client_key[1]}")), 401)
    problem_body(make_api(f"Bearer {operator[1]}").get("/predictors"), 401)


def test_a_revoked_key_is_401_at_once(loan, client_api, client_key, operator):
    from gateway.services import credential_revoke

    assert predict_loan(client_api).status_code == 202  # verified, and remembered by this process
    key = ApiKey.objects.get(client=client_key[0])
    assert credential_revoke(credential=key, by=operator[0])
    problem_body(predict_loan(client_api), 401)
    assert key.history.first().history_user == operator[0]  # who revoked it is on record
    assert not credential_revoke(credential=key, by=operator[0])  # once


def test_a_key_revoked_behind_the_models_back_stops_working_within_the_cache_lifetime(loan, client_api, client_key, settings):
    import time

    # Another web process revoked it (or a bulk UPDATE did): this process finds out when its
    # memory of the key ages out (gateway.verified_keys).
    settings.OZ_AUTH_CACHE_SECONDS = 0.5
    assert predict_loan(client_api).status_code == 202
    ApiKey.objects.filter(client=client_key[0]).update(revoked_at=timezone.now())
    time.sleep(0.6)
    problem_body(predict_loan(client_api), 401)


def test_a_scoped_key_loses_a_predictor_at_once(loan, make_api):
    from gateway.services import api_client_create

    client, key = api_client_create(name="scoped", predictor_slugs=["loan-approval"])
    api = make_api(f"Bearer {key}")
    assert predict_loan(api).status_code == 202
    client.predictors.clear()
    problem_body(predict_loan(api), 403)


def test_the_key_of_an_inactive_client_is_401(loan, client_api, client_key):
    client = client_key[0]
    client.is_active = False
    client.save()
    problem_body(predict_loan(client_api), 401)
    problem_body(client_api.get("/predictors"), 401)


def test_revoked_token_and_inactive_user_are_401(loan, make_api, operator_api, operator):
    assert operator_api.get("/predictors").status_code == 200
    UserToken.objects.filter(user=operator[0]).update(revoked_at=timezone.now())
    problem_body(operator_api.get("/predictors"), 401)

    _, token = factories.operator_with_token("olga")
    assert make_api(f"Token {token}").get("/predictors").status_code == 200
    user = UserToken.objects.get(user__username="olga").user
    user.is_active = False
    user.save()
    problem_body(make_api(f"Token {token}").get("/predictors"), 401)


def test_a_second_key_of_the_same_client_works_and_is_revoked_alone(loan, make_api, client_key):
    from gateway.services import api_key_issue

    second = api_key_issue(client=client_key[0])
    ApiKey.objects.filter(client=client_key[0]).exclude(prefix=second.split("_")[1]).update(revoked_at=timezone.now())
    assert predict_loan(make_api(f"Bearer {second}")).status_code == 202
    problem_body(predict_loan(make_api(f"Bearer {client_key[1]}")), 401)


def test_a_used_key_records_when(loan, client_api, client_key):
    assert ApiKey.objects.get(client=client_key[0]).last_used_at is None
    predict_loan(client_api)
    assert ApiKey.objects.get(client=client_key[0]).last_used_at is not None


# ---------------------------------------------------------------------------------------
# 403: authenticated, but not allowed
# ---------------------------------------------------------------------------------------

def test_a_reviewer_token_on_predict_is_403(loan, reviewer_api, operator_api):
    problem_body(predict_loan(reviewer_api), 403)
    problem_body(predict_loan(operator_api), 403)
    assert Prediction.objects.count() == 0


@pytest.mark.parametrize(
    "method, path",
    [
        ("post", "/review/claim"),
        ("post", "/review/tasks/1/decision"),
        ("patch", "/predictors/loan-approval/routing"),
        ("post", "/predictors/loan-approval/train"),
        ("get", "/predictors/loan-approval/models"),
        ("post", "/predictors/loan-approval/models/1/promote"),
        ("get", "/training-runs/1"),
    ],
)
def test_an_api_client_on_people_endpoints_is_403(loan, client_api, method, path):
    response = getattr(client_api, method)(path, data={"mode": "rule", "output": "approve"}, format="json")
    problem_body(response, 403)
    assert RoutingPolicy.objects.get(predictor=loan).mode == "human"


@pytest.mark.parametrize(
    "method, path",
    [
        ("patch", "/predictors/loan-approval/routing"),
        ("post", "/predictors/loan-approval/train"),
        ("post", "/predictors/loan-approval/models/1/promote"),
    ],
)
def test_a_reviewer_on_operator_endpoints_is_403(loan, reviewer_api, method, path):
    problem_body(getattr(reviewer_api, method)(path, data={"mode": "rule"}, format="json"), 403)
    policy = RoutingPolicy.objects.get(predictor=loan)
    assert (policy.mode, policy.version) == ("human", 1)


def test_an_operator_is_not_a_reviewer(loan, operator_api):
    problem_body(operator_api.post("/review/claim"), 403)


# ---------------------------------------------------------------------------------------
# Routing changes by an operator: audited, versioned
# ---------------------------------------------------------------------------------------

def test_an_operator_changes_routing_and_it_is_audited(loan, operator_api, operator, client_api):
    response = operator_api.patch(
        "/predictors/loan-approval/routing", data={"mode": "rule", "reason": "rules are good enough"}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["mode"] == "rule"
    assert response.json()["version"] == 2
    policy = RoutingPolicy.objects.get(predictor=loan)
    assert (policy.mode, policy.version) == ("rule", 2)
    latest = policy.history.latest()
    assert latest.history_user == operator[0]
    assert latest.history_change_reason == "rules are good enough"
    assert (latest.mode, latest.version) == ("rule", 2)
    # The next prediction names the policy that routed it.
    answered = predict_loan(client_api)
    assert answered.status_code == 200
    assert answered.json()["route"] == {"mode": "rule", "reason": "mode", "policy_version": 2}


def test_a_routing_patch_that_changes_nothing_keeps_the_version(loan, operator_api):
    response = operator_api.patch("/predictors/loan-approval/routing", data={"mode": "human"}, format="json")
    assert response.status_code == 200
    assert response.json()["version"] == 1
    assert RoutingPolicy.objects.get(predictor=loan).history.count() == 1


@pytest.mark.parametrize(
    "body, field",
    [
        ({"mode": "robot"}, "mode"),
        ({"mode": None}, "mode"),
        ({"mode": ["rule"]}, "mode"),
        ({"fallback": "model"}, "fallback"),
        ({"human_sla_seconds": 0}, "human_sla_seconds"),
        ({"human_sla_seconds": "60"}, "human_sla_seconds"),
        ({"canary": 5}, "canary"),
        ({"mode": "rule", "reason": 5}, "reason"),
        ({"mode": "rule", "reason": "a\x00b"}, "reason"),
    ],
)
def test_invalid_routing_changes_are_422(loan, operator_api, body, field):
    problem = problem_body(operator_api.patch("/predictors/loan-approval/routing", data=body, format="json"), 422)
    assert field in error_fields(problem)
    policy = RoutingPolicy.objects.get(predictor=loan)
    assert (policy.mode, policy.version) == ("human", 1)


def test_rule_mode_needs_rules(churn, operator_api):
    problem = problem_body(operator_api.patch("/predictors/churn/routing", data={"mode": "rule"}, format="json"), 422)
    assert error_fields(problem) == {"mode"}


def test_routing_of_an_unknown_predictor_is_404(loan, operator_api):
    problem_body(operator_api.patch("/predictors/nope/routing", data={"mode": "rule"}, format="json"), 404)


# ---------------------------------------------------------------------------------------
# Keys scoped to some predictors
# ---------------------------------------------------------------------------------------

def test_a_scoped_key_is_403_on_other_predictors(scoped_api):
    problem_body(predict_loan(scoped_api), 403)
    assert Prediction.objects.count() == 0
    allowed = post_json(scoped_api, "/predict/churn", {"input": {"months": 3}})
    assert allowed.status_code == 202


def test_a_scoped_key_does_not_see_other_predictors(scoped_api, client_api):
    problem_body(scoped_api.get("/predictors/loan-approval"), 404)
    assert scoped_api.get("/predictors/churn").status_code == 200
    assert [p["slug"] for p in scoped_api.get("/predictors").json()["results"]] == ["churn"]
    # An unscoped client sees both.
    assert [p["slug"] for p in client_api.get("/predictors").json()["results"]] == ["churn", "loan-approval"]


# ---------------------------------------------------------------------------------------
# Secrets are stored only as hashes
# ---------------------------------------------------------------------------------------

def _every_row_as_text() -> str:
    chunks = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT t::text FROM "{table}" t')  # noqa: S608 - table names from introspection
            chunks.extend(row[0] for row in cursor.fetchall())
    return "\n".join(chunks)


def test_keys_and_tokens_are_stored_only_as_hashes(loan, client_key, reviewer, operator, client_api):
    predict_loan(client_api)  # a used key, too (last_used_at is written)
    dump = _every_row_as_text()
    assert "loan-approval" in dump  # the dump does see the data
    for plaintext in (client_key[1], reviewer[1], operator[1]):
        secret = plaintext.split("_", 2)[2]
        assert len(secret) >= 40
        assert secret not in dump
        assert plaintext not in dump
    key = ApiKey.objects.get(client=client_key[0])
    assert len(key.key_hash) == 64 and key.key_hash not in client_key[1]


# ---------------------------------------------------------------------------------------
# Throttling: per client, counted in the shared (Redis) cache
# ---------------------------------------------------------------------------------------

@pytest.fixture
def tiny_rates(monkeypatch, settings):
    assert settings.CACHES["default"]["BACKEND"].endswith("RedisCache"), "the tests run against Redis"
    monkeypatch.setattr(ClientRateThrottle, "THROTTLE_RATES", {"client": "3/min", "anon": "2/min"})


def test_the_fourth_request_in_a_minute_is_429(loan, client_api, client_key, tiny_rates):
    for _ in range(3):
        assert client_api.get("/predictors").status_code == 200
    response = client_api.get("/predictors")
    problem_body(response, 429)
    assert 1 <= int(response["Retry-After"]) <= 60
    # The budget is the client's, whatever endpoint it calls, and a throttled predict stores nothing.
    problem_body(predict_loan(client_api), 429)
    assert Prediction.objects.count() == 0
    # The count lives in the shared cache, where every worker sees it: every attempt in the
    # window counts, the refused ones too.
    assert cache.get(f"throttle_client_client:{client_key[0].pk}") == 5


def test_a_budget_window_starts_with_its_first_request_and_always_ends(loan, client_api, client_key, tiny_rates):
    from django.core.cache import cache as shared

    key = f"throttle_client_client:{client_key[0].pk}"
    redis = shared.redis_client()
    full_key = shared.make_and_validate_key(key)
    assert client_api.get("/predictors").status_code == 200
    assert 55 <= redis.ttl(full_key) <= 60  # the window is the rate's minute, from the first request
    # A window left without an expiry (a crash, an operator's SET) must not block the client
    # for good: once over the budget it gets its expiry back, and Retry-After says so.
    redis.persist(full_key)
    shared.set(key, 3, timeout=None)
    response = client_api.get("/predictors")
    problem_body(response, 429)
    assert int(response["Retry-After"]) == 60
    assert 55 <= redis.ttl(full_key) <= 60


def test_each_client_and_person_has_its_own_budget(loan, client_api, other_client_api, operator_api, tiny_rates):
    for _ in range(3):
        client_api.get("/predictors")
    assert client_api.get("/predictors").status_code == 429
    for _ in range(3):
        assert other_client_api.get("/predictors").status_code == 200
    assert other_client_api.get("/predictors").status_code == 429
    assert operator_api.get("/predictors").status_code == 200


def test_anonymous_callers_are_throttled_per_address(anon_api, make_api, tiny_rates):
    for _ in range(2):
        assert anon_api.get("/api/schema").status_code == 200
    response = anon_api.get("/api/schema")
    problem_body(response, 429)
    assert "Retry-After" in response
    other_address = make_api()
    assert other_address.get("/api/schema", REMOTE_ADDR="10.9.8.7").status_code == 200


def test_health_checks_are_never_throttled(anon_api, tiny_rates):
    for _ in range(5):
        assert anon_api.get("/healthz").status_code == 200
