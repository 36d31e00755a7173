"""Schemathesis against the served OpenAPI schema: every operation of `GET /api/schema`, fuzzed
through a real gunicorn server on the test database, with real credentials (an API client's
Bearer key, a reviewer's and an operator's Token) and real objects to find (the demo predictor,
model versions, predictions, review tasks, webhook deliveries, training runs, appeal links).

What must hold for every request Schemathesis makes, valid or not:
- no 5xx (nothing a client sends may crash the server: `not_a_server_error`);
- the status code is one the schema documents for the operation (`status_code_conformance`);
- the body matches the schema declared for that status and media type, errors included
  (`response_schema_conformance`, `content_type_conformance`): every error is problem+json;
- and the rest of Schemathesis' default checks (invalid input refused, valid input accepted,
  authentication not ignored, ...).

Generation is derandomized (a fixed seed per operation) and bounded, so a run is the same on
every machine and takes a couple of minutes on two cores."""
from __future__ import annotations

import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request

import pytest
from django.conf import settings
from hypothesis import strategies as st

schemathesis = pytest.importorskip("schemathesis")

from tests import factories  # noqa: E402
from tests.servers import PRODUCTION_CONFIG, ROOT, Server, database_url  # noqa: E402

# A deeper or different search by hand: OZ_SCHEMATHESIS_MAX_EXAMPLES=300 OZ_SCHEMATHESIS_SEED=7
SEED = int(os.environ.get("OZ_SCHEMATHESIS_SEED", "20240611"))
MAX_EXAMPLES = int(os.environ.get("OZ_SCHEMATHESIS_MAX_EXAMPLES", "30"))


# Derandomized and bounded: examples, coverage (boundaries and invalid values, a fixed set)
# and at most MAX_EXAMPLES random cases per operation, positive and negative.
CONFIG_TOML = f"""
seed = {SEED}
suppress-health-check = ["too_slow", "filter_too_much", "data_too_large"]
request-timeout = 30

[generation]
deterministic = true
max-examples = {MAX_EXAMPLES}
database = "none"
with-security-parameters = false

[phases.stateful]
enabled = false

# An answer (an outcome, a reviewer's decision, an appeal's requested output) must be one of
# the labels, or a number within the bounds, of the predictor of the prediction named in the
# path: no schema can tie a body to the predictor behind a path's id, so a schema-valid
# answer may still be refused with 422 there. (Each predictor's own input is typed: see
# POST /predict/<slug>.)
[[operations]]
include-operation-id = ["prediction_outcome", "review_decide", "appeal_file"]
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "422", "429"]

# spreadsheet_safe=true applies to format=csv only and is refused (422) with jsonl rather than
# ignored: a rule between two query parameters that OpenAPI cannot state.
[[operations]]
include-operation-id = ["predictor_dataset"]
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "422", "429"]
"""


# --- the server ------------------------------------------------------------------------------

@pytest.fixture
def gateway(transactional_db, tmp_path):
    """A gunicorn server on the test database, and the objects and credentials to fuzz with."""
    from models_registry.services import model_version_promote

    loan = factories.loan_predictor()
    _, key = factories.api_client_with_key()
    _, operator_token = factories.operator_with_token()
    _, reviewer_token = factories.reviewer_with_token()
    champion = model_version_promote(version=factories.trained_version(loan, seed=3, n_labels=60))
    candidate = factories.trained_version(loan, seed=5, n_labels=60)

    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": database_url(),
        "DATABASE_CONN_MAX_AGE": "0",
        "OZ_MEDIA_ROOT": settings.MEDIA_ROOT,
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "PYTHONPATH": str(ROOT),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus"),
        # Throttles would answer most of the fuzzing with 429: they have tests of their own.
        "OZ_THROTTLE_CLIENT": "1000000/min",
        "OZ_THROTTLE_ANON": "1000000/min",
        "OZ_APPEAL_RATE_PER_TOKEN": "",
        "OZ_APPEAL_RATE_PER_IP": "",
        "OZ_THROTTLE_AUTH_FAILURES": "",  # the auth checks send bad credentials on purpose
        "OZ_LOG_LEVEL": "WARNING",
        "OZ_SERVING_CACHE_SECONDS": "0",  # routing changes below reach both workers at once
        "WEB_CONCURRENCY": "2",
        "GUNICORN_THREADS": "4",
    }
    server = Server("fuzz", env, tmp_path, args=[*PRODUCTION_CONFIG, "--access-logfile", "/dev/null"])
    base, call = server.base, server.call
    try:
        server.wait_ready()

        client, operator, reviewer = f"Bearer {key}", f"Token {operator_token}", f"Token {reviewer_token}"
        # Real objects for the path parameters: predictions answered by the rules (with a
        # webhook to deliver) and left to humans (review tasks), an appeal link, a training run.
        predictions, tokens = [], []
        status, _ = call("PATCH", "/predictors/loan-approval/routing", {"mode": "rule"}, auth=operator)
        assert status == 200
        for i in range(3):
            status, body = call("POST", "/predict/loan-approval",
                                 {"input": factories.loan_input(amount=1000 * (i + 1)),
                                  "callback_url": "http://127.0.0.1:9/hook"}, auth=client)
            assert status == 200, body
            predictions.append(body["id"])
            if body.get("appeal_url"):
                tokens.append(body["appeal_url"].rsplit("/", 1)[-1])
        status, _ = call("PATCH", "/predictors/loan-approval/routing", {"mode": "human"}, auth=operator)
        assert status == 200
        for i in range(3):
            status, body = call("POST", "/predict/loan-approval",
                                 {"input": factories.loan_input(sector="retail", amount=500 * (i + 1))}, auth=client)
            assert status == 202, body
            predictions.append(body["id"])
        status, run = call("POST", "/predictors/loan-approval/train", auth=operator)
        assert status == 202, run

        from gateway.models import WebhookDelivery
        from review.models import ReviewTask

        yield {
            "base": base,
            "log": server.log_path,
            "auth": {"client": client, "operator": operator, "reviewer": reviewer},
            "ids": {
                "slug": ["loan-approval"],
                "prediction_id": predictions,
                "token": tokens,
                "task_id": list(ReviewTask.objects.values_list("pk", flat=True)),
                "delivery_id": list(WebhookDelivery.objects.values_list("pk", flat=True)),
                "run_id": [run["id"]],
                "version": [champion.version, candidate.version],
            },
        }
    finally:
        server.stop()


# --- who calls what ---------------------------------------------------------------------------

# Operations for people, by path: reviewers' work, operators' everything else; API clients
# call the rest; /healthz, /readyz and the appeal pages are public.
_REVIEWER_PATHS = ("/review/claim", "/review/tasks/")
_OPERATOR_PATHS = ("/routing", "/train", "/models", "/rollback", "/drift", "/dataset", "/appeals",
                   "/training-runs/", "/review/stats")
_PUBLIC_PATHS = ("/healthz", "/readyz", "/appeal/")


def identity_for(path: str) -> str | None:
    if path.startswith(_PUBLIC_PATHS):
        return None
    if path.startswith(_REVIEWER_PATHS):
        return "reviewer"
    if path.startswith("/review/stats") or any(part in path for part in _OPERATOR_PATHS):
        return "operator"
    return "client"


# --- the schema, as served --------------------------------------------------------------------

@pytest.fixture
def api_schema(gateway):
    config = schemathesis.Config.from_str(CONFIG_TOML)
    schema = schemathesis.openapi.from_url(f"{gateway['base']}/api/schema", config=config)
    schema.config.update(base_url=gateway["base"])
    ids = gateway["ids"]

    @schema.hook
    def flatmap_path_parameters(context, path_parameters):
        # Half the time, the real objects: otherwise nearly every request would be a 404.
        # (Not the generic /predict/{slug}: each predictor has its own typed operation.)
        if not path_parameters or context.operation.path == "/predict/{slug}":
            return st.just(path_parameters)
        known = {name: ids[name] for name in path_parameters if ids.get(name)}
        if not known:
            return st.just(path_parameters)
        real = st.fixed_dictionaries({name: st.sampled_from(values) for name, values in known.items()})
        return st.one_of(st.just(path_parameters), real.map(lambda chosen: {**path_parameters, **chosen}))

    return schema


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request):
    # Schemathesis' lazy loader (4.32) reads and rewrites `Function._nodeid`, which pytest 9.2
    # no longer has (the node id lives in `_id`): give it the attribute it reads. Its writes
    # then only set that attribute, so reports keep pytest's own node id.
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


def _short_wait(value):
    # A pending prediction holds the request `wait` seconds (up to 30): valid waits are cut to
    # one second so the run stays short; invalid ones (31, -1, "x") still go out as they are.
    if isinstance(value, str) and value.isdigit():
        return "1" if 1 < int(value) <= 30 else value
    if isinstance(value, int) and not isinstance(value, bool) and 1 < value <= 30:
        return 1
    return value


def _registered_host(url: str) -> str:
    # A callback_url must name one of the client's registered webhook hosts, which no schema
    # can know: a generated http(s) URL gets a registered host, the rest of it unchanged.
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return url
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=factories.TEST_WEBHOOK_HOSTS[0]))


def _adjust(case) -> None:
    """Edits to a generated case (every phase: hooks reach only the fuzzing phase). Assigning
    the containers anew makes Schemathesis re-check whether the case is still (in)valid."""
    if isinstance(case.body, dict):
        body = dict(case.body)
        if "wait" in body:
            body["wait"] = _short_wait(body["wait"])
        if isinstance(body.get("callback_url"), str):
            body["callback_url"] = _registered_host(body["callback_url"])
        if body != case.body:
            case.body = body
    if case.query and "wait" in case.query:
        case.query = {**case.query, "wait": _short_wait(case.query["wait"])}


@pytest.mark.skipif(sys.platform == "win32", reason="gunicorn is POSIX only")
@pytest.mark.django_db(transaction=True)
@schema.parametrize()
def test_every_operation_conforms_to_the_served_schema(case, gateway):
    _adjust(case)
    identity = identity_for(case.operation.path)
    headers = {"Authorization": gateway["auth"][identity]} if identity else {}
    try:
        case.call_and_validate(headers=headers)
    except Exception:
        # A 5xx's traceback is in the server's log, not in the response: show its end.
        print(f"--- end of {gateway['log']} ---\n{gateway['log'].read_text(errors='replace')[-4000:]}")
        raise


# --- regressions: what the fuzzing found, one request each (in-process, through WSGI) -------------

@pytest.fixture
def wsgi(db, loan):
    """The schema as served, and a way to send one request and validate its answer with
    Schemathesis' checks (status documented, media type documented, body as documented)."""
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    from config.handlers import OzWSGIHandler  # what gunicorn serves (config.wsgi)

    # As Django's test client does: a request must not close the test's connection (it
    # holds the test's transaction).
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    app = OzWSGIHandler()
    loaded = schemathesis.openapi.from_wsgi("/api/schema", app)

    def check(method: str, path: str, *, auth: str = "", path_parameters=None, **parts):
        case = loaded[path][method].Case(path_parameters=path_parameters or {}, **parts)
        response = case.call(headers={"Authorization": auth} if auth else {})
        case.validate_response(response, checks=CONFORMANCE)
        return response

    try:
        yield loaded, check
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


def _content_type(response) -> str:
    return (response.headers.get("content-type") or [""])[0].split(";")[0].strip()


def _conformance_checks():
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    return [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


CONFORMANCE = _conformance_checks()


def test_the_predictor_list_is_documented_as_the_object_it_is(wsgi, loan, client_key):
    # Was: documented as a bare array; the answer is {"results": [...]}.
    _, check = wsgi
    response = check("GET", "/predictors", auth=f"Bearer {client_key[1]}")
    assert response.status_code == 200 and [p["slug"] for p in response.json()["results"]] == ["loan-approval"]


@pytest.mark.parametrize("auth, status", [("", 401), ("Bearer oz_not-a-key", 401), ("client", 403)])
def test_refusals_are_documented_problem_json(wsgi, client_key, auth, status):
    # Was: 401/403 undocumented on most operations, and every error documented as
    # application/json although it is served as application/problem+json.
    _, check = wsgi
    auth = f"Bearer {client_key[1]}" if auth == "client" else auth
    response = check("POST", "/review/claim", auth=auth)
    assert response.status_code == status
    assert _content_type(response) == "application/problem+json"


def test_a_malformed_body_is_a_documented_400(wsgi, loan, operator):
    _, check = wsgi
    response = check("PATCH", "/predictors/{slug}/routing", auth=f"Token {operator[1]}",
                     path_parameters={"slug": "loan-approval"}, body=b"{not json", media_type="application/json")
    assert response.status_code == 400


def test_errors_of_the_appeal_pages_are_documented_for_browsers_too(wsgi):
    # Was: a browser's 404 is an HTML page, and a form post without its CSRF token a 403
    # page; the schema knew neither.
    _, check = wsgi
    page = check("GET", "/appeal/{token}", path_parameters={"token": "no-such-link"}, headers={"Accept": "text/html"})
    assert page.status_code == 404 and _content_type(page) == "text/html"
    form = check("POST", "/appeal/{token}", path_parameters={"token": "no-such-link"},
                 body={"reason": "wrong"}, media_type="application/x-www-form-urlencoded")
    assert form.status_code == 403


def test_health_outcome_and_decision_bodies_are_documented(wsgi, loan, client_key, reviewer):
    # Was: documented without a body.
    from review.models import ReviewTask

    _, check = wsgi
    assert check("GET", "/healthz").json() == {"status": "ok"}
    assert check("GET", "/readyz").json()["status"] == "ok"
    client = f"Bearer {client_key[1]}"
    created = check("POST", "/predict/loan-approval", auth=client, body={"input": factories.loan_input()})
    assert created.status_code == 202, created.text  # the demo routes to humans
    prediction = created.json()["id"]
    outcome = check("POST", "/predictions/{prediction_id}/outcome", auth=client,
                    path_parameters={"prediction_id": prediction}, body={"output": "approve"})
    assert outcome.status_code == 201, outcome.text
    reviewer_auth = f"Token {reviewer[1]}"
    task = check("POST", "/review/claim", auth=reviewer_auth).json()
    assert task["prediction"] == prediction and ReviewTask.objects.filter(pk=task["id"]).exists()
    decided = check("POST", "/review/tasks/{task_id}/decision", auth=reviewer_auth,
                    path_parameters={"task_id": task["id"]}, body={"output": "refer", "note": ""})
    assert decided.status_code == 201, decided.text


def test_request_bodies_are_documented_as_refusing_unknown_fields(wsgi, loan, client_key):
    # Was: the schema allowed any extra field; every view refuses them (422).
    loaded, check = wsgi
    bodies = [
        operation.definition.raw["requestBody"]["content"]["application/json"]["schema"]
        for operation in (r.ok() for r in loaded.get_all_operations())
        if "application/json" in operation.definition.raw.get("requestBody", {}).get("content", {})
    ]
    components = loaded.raw_schema["components"]["schemas"]
    resolved = [components[b["$ref"].rsplit("/", 1)[1]] if "$ref" in b else b for b in bodies]
    assert resolved and all(body["additionalProperties"] is False for body in resolved)
    response = check("POST", "/predict/loan-approval", auth=f"Bearer {client_key[1]}",
                     body={"input": factories.loan_input(), "colour": "blue"})
    assert response.status_code == 422 and response.json()["errors"] == [{"field": "colour", "message": "unknown field"}]


@pytest.mark.parametrize("field, value", [("explain", 0), ("explain", "true"), ("wait", "10"), ("wait", True)])
def test_explain_and_wait_take_json_booleans_and_integers_only(wsgi, loan, client_key, field, value):
    # Was: DRF's coercion took 0 / "true" for explain and "10" / true for wait.
    _, check = wsgi
    response = check("POST", "/predict/loan-approval", auth=f"Bearer {client_key[1]}",
                     body={"input": factories.loan_input(), field: value})
    assert response.status_code == 422 and [e["field"] for e in response.json()["errors"]] == [field]


@pytest.mark.parametrize("who, path, name", [
    ("client", "/webhooks/deliveries", "limit"),
    ("client", "/webhooks/deliveries", "cursor"),
    ("client", "/webhooks/deliveries", "status"),
    ("operator", "/review/stats", "days"),
    ("operator", "/predictors/{slug}/drift", "limit"),
    ("client", "/predictions/{prediction_id}", "wait"),
])
def test_an_empty_query_value_is_refused_not_taken_for_the_default(wsgi, loan, client_key, operator, who, path, name):
    # Was: `?days=` (and the like) answered as if absent, though the schema says integer.
    _, check = wsgi
    auth = f"Bearer {client_key[1]}" if who == "client" else f"Token {operator[1]}"
    parameters = {"slug": "loan-approval"} if "{slug}" in path else {}
    if "{prediction_id}" in path:
        created = check("POST", "/predict/loan-approval", auth=auth, body={"input": factories.loan_input()})
        parameters = {"prediction_id": created.json()["id"]}
    response = check("GET", path, auth=auth, path_parameters=parameters, query={name: ""})
    assert response.status_code == 422 and [e["field"] for e in response.json()["errors"]] == [name]


@pytest.mark.parametrize("key, status", [("caf\u00e9 \u200b key", 200), ("tab\there", 422), ("c1\x85", 422)])
def test_routing_and_idempotency_keys_refuse_control_characters_only(wsgi, loan, client_key, key, status):
    # Was: any character str.isprintable() refuses (a zero-width space, say) was a 422 the
    # schema did not describe; now the rule is "no control characters", as its pattern says.
    loaded, check = wsgi
    pattern = loaded.raw_schema["components"]["schemas"]["PredictRequestRequest"]["properties"]["routing_key"]["pattern"]
    assert (re.fullmatch(pattern, key) is not None) is (status == 200)
    routing_key = check("POST", "/predict/loan-approval", auth=f"Bearer {client_key[1]}",
                        body={"input": factories.loan_input(), "routing_key": key})
    assert routing_key.status_code == (202 if status == 200 else 422), routing_key.text
    from gateway.serializers import has_control_characters

    assert has_control_characters(key) is (status == 422)  # the Idempotency-Key's rule (a header cannot carry these)


def test_each_predictor_has_a_typed_predict_operation(wsgi, loan):
    # Was: `input` was any JSON, so no schema-valid body was known to be valid.
    loaded, _ = wsgi
    operation = loaded.raw_schema["paths"]["/predict/loan-approval"]["post"]
    typed = operation["requestBody"]["content"]["application/json"]["schema"]["properties"]["input"]
    assert typed["required"] == ["amount"] and typed["additionalProperties"] is False
    assert typed["properties"]["amount"] == {"type": "number", "minimum": 0, "maximum": 1e15,
                                             "description": "Amount requested"}
    assert typed["properties"]["sector"]["enum"] == ["retail", "food", "services", "other", None]
    assert typed["properties"]["note"]["maxLength"] == 2000
    assert not any(p["in"] == "path" for p in operation.get("parameters", []))


@pytest.mark.parametrize("years, status", [(10**15, 202), (10**15 + 1, 422), (-(10**15) - 1, 422), (10**308, 422)])
def test_numbers_beyond_the_documented_limit_are_refused(wsgi, loan, client_key, years, status):
    # Was: an integer up to about 1.8e308 was taken although the schema's bound was 1e308.
    _, check = wsgi
    response = check("POST", "/predict/loan-approval", auth=f"Bearer {client_key[1]}",
                     body={"input": factories.loan_input(years_trading=years)})
    assert response.status_code == (422 if years < 0 else status), response.text


@pytest.mark.parametrize("path, body", [
    ("/predictors/{slug}/rollback", {"reason": ""}),
    ("/predictors/{slug}/models/{version}/promote", {"reason": ""}),
])
def test_a_blank_reason_is_documented_as_valid(wsgi, loan, operator, path, body):
    # Was: the schema said minLength 1; the views take "" (nothing to roll back: 409; no such version: 404).
    _, check = wsgi
    parameters = {"slug": "loan-approval", "version": 1} if "{version}" in path else {"slug": "loan-approval"}
    response = check("POST", path, auth=f"Token {operator[1]}", path_parameters=parameters, body=body)
    assert response.status_code in (404, 409), response.text


def test_rollback_documents_the_range_of_expected_version(wsgi, loan, operator):
    loaded, check = wsgi
    schema = loaded.raw_schema["components"]["schemas"]["RollbackRequestRequest"]["properties"]["expected_version"]
    assert (schema["minimum"], schema["maximum"]) == (1, 2_147_483_647)
    response = check("POST", "/predictors/{slug}/rollback", auth=f"Token {operator[1]}",
                     path_parameters={"slug": "loan-approval"}, body={"expected_version": 0})
    assert response.status_code == 422


def test_request_strings_are_documented_as_refusing_nul(wsgi, operator):
    # Was: a schema-valid reason (or note, or text input) holding NUL was refused with 422.
    from gateway.schema_extensions import NO_NUL

    loaded, check = wsgi
    components = loaded.raw_schema["components"]["schemas"]
    assert components["RollbackRequestRequest"]["properties"]["reason"]["pattern"] == NO_NUL
    assert components["DecisionRequestRequest"]["properties"]["note"]["pattern"] == NO_NUL
    typed = loaded.raw_schema["paths"]["/predict/loan-approval"]["post"]["requestBody"]["content"]["application/json"]
    assert typed["schema"]["properties"]["input"]["properties"]["note"]["pattern"] == NO_NUL
    response = check("POST", "/predictors/{slug}/rollback", auth=f"Token {operator[1]}",
                     path_parameters={"slug": "loan-approval"}, body={"reason": "a\x00b"})
    assert response.status_code == 422


def test_forcing_a_promotion_without_a_reason_is_documented_as_invalid(wsgi, operator):
    # Was: `{"force": true}` was schema-valid, and refused with 422.
    import jsonschema_rs

    loaded, check = wsgi
    component = loaded.raw_schema["components"]["schemas"]["PromoteRequestRequest"]
    validator = jsonschema_rs.validator_for(component)
    assert not validator.is_valid({"force": True}) and not validator.is_valid({"force": True, "reason": " "})
    assert validator.is_valid({"force": True, "reason": "hotfix"}) and validator.is_valid({"force": False})
    response = check("POST", "/predictors/{slug}/models/{version}/promote", auth=f"Token {operator[1]}",
                     path_parameters={"slug": "loan-approval", "version": 1}, body={"force": True})
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "reason"


def test_routing_bounds_are_documented(wsgi, operator):
    # Was: human_sla_seconds and max_queue_depth had no documented maximum.
    from gateway.schema import MAX_QUEUE_DEPTH, MAX_SLA_SECONDS

    loaded, check = wsgi
    properties = loaded.raw_schema["components"]["schemas"]["PatchedRoutingRequestRequest"]["properties"]
    assert properties["human_sla_seconds"]["maximum"] == MAX_SLA_SECONDS
    assert properties["max_queue_depth"]["maximum"] == MAX_QUEUE_DEPTH
    response = check("PATCH", "/predictors/{slug}/routing", auth=f"Token {operator[1]}",
                     path_parameters={"slug": "loan-approval"}, body={"human_sla_seconds": MAX_SLA_SECONDS + 1})
    assert response.status_code == 422


@pytest.mark.parametrize("identity", [None, "client", "reviewer", "operator"])
def test_every_operation_answers_every_caller_as_documented(wsgi, client_key, reviewer, operator, identity):
    """Each operation, called by each kind of caller (nobody, an API client, a reviewer, an
    operator) with real path parameters and no body: never a 5xx, always a documented status
    and body; and 401 for nobody wherever credentials are needed."""
    loaded, _ = wsgi
    auth = {None: "", "client": f"Bearer {client_key[1]}", "reviewer": f"Token {reviewer[1]}",
            "operator": f"Token {operator[1]}"}[identity]
    values = {"slug": "loan-approval", "prediction_id": "00000000-0000-4000-8000-000000000000", "task_id": 1,
              "run_id": 1, "version": 1, "delivery_id": 1, "token": "no-such-link"}
    answered = {}
    for result in loaded.get_all_operations():
        operation = result.ok()
        case = operation.Case(path_parameters={name: values[name] for name in re.findall(r"{(\w+)}", operation.path)})
        response = case.call(headers={"Authorization": auth} if auth else {})
        case.validate_response(response, checks=CONFORMANCE)
        answered[operation.label] = response.status_code
        public = {} in operation.definition.raw.get("security", [{}])
        if identity is None and not public:
            assert response.status_code == 401, (operation.label, response.status_code)
    assert len(answered) >= 28, sorted(answered)  # 27 operations and one typed /predict/<slug>
