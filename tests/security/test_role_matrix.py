"""Who may call what, for EVERY URL of the root URLconf.

The URLconf is walked (nested resolvers included) and every (route, HTTP method) a view
allows must be classified in MATRIX below, or listed as public by design (with the reason)
in PUBLIC, or fall under an explicitly skipped prefix: a new URL that nobody classified
fails `test_every_url_is_classified`. Each classified pair is then called by every kind of
caller — anonymous, an API client (Bearer key), a reviewer and an operator (Token) — and
each must get what the table says: 401 without credentials, 403 for the wrong role, and
through the permission check for the right one.

The admin (session logins) is skipped here and checked as a whole by
`test_every_admin_url_sends_strangers_to_the_login_page`."""
from __future__ import annotations

import re
from uuid import uuid4

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from gateway.appeal_tokens import appeal_token
from gateway.models import Prediction, WebhookDelivery
from gateway.services import routing_update
from tests import factories
from tests.gateway.helpers import problem_body

pytestmark = pytest.mark.django_db

ROLES = ("anon", "client", "reviewer", "operator")
ALLOW = "allow"  # passes authentication and the permission check (any status but 401/403)


def only(*allowed: str, **exact: int) -> dict:
    """Allowed roles pass; anonymous callers get 401 and every other role 403. `exact` pins
    a role to one status (for a refusal that hides existence with a 404)."""
    table = {role: (ALLOW if role in allowed else 401 if role == "anon" else 403) for role in ROLES}
    table.update(exact)
    return table


CLIENT = only("client")
REVIEWER = only("reviewer")
OPERATOR = only("operator")
# Predictors are read by clients (the ones their key may use) and by both groups of people.
CLIENT_OR_PERSON = only("client", "reviewer", "operator")
# A prediction: the client that made it, or an operator (gateway.view_prediction). A reviewer
# holds no view_prediction: 403 for any id, existing or not (so it confirms nothing); another
# client's prediction is 404, exactly like a missing one (tested below).
PREDICTION_READ = only("client", "operator")

# (route, method) -> who may call it. Routes as the URLconf spells them.
MATRIX: dict[tuple[str, str], dict] = {
    ("predict/<slug:slug>", "POST"): CLIENT,
    ("predictions/<str:prediction_id>", "GET"): PREDICTION_READ,
    ("predictions/<str:prediction_id>/outcome", "POST"): CLIENT,
    ("predictors", "GET"): CLIENT_OR_PERSON,
    ("predictors/<slug:slug>", "GET"): CLIENT_OR_PERSON,
    ("predictors/<slug:slug>/routing", "PATCH"): OPERATOR,
    ("predictors/<slug:slug>/train", "POST"): OPERATOR,
    ("predictors/<slug:slug>/models", "GET"): OPERATOR,
    ("predictors/<slug:slug>/models/<int:version>/promote", "POST"): OPERATOR,
    ("predictors/<slug:slug>/rollback", "POST"): OPERATOR,
    ("predictors/<slug:slug>/drift", "GET"): OPERATOR,
    ("predictors/<slug:slug>/appeals", "GET"): OPERATOR,
    ("predictors/<slug:slug>/dataset", "GET"): OPERATOR,
    ("training-runs/<int:run_id>", "GET"): OPERATOR,
    ("review/claim", "POST"): REVIEWER,
    ("review/tasks/<int:task_id>/decision", "POST"): REVIEWER,
    ("review/tasks/<int:task_id>/release", "POST"): REVIEWER,
    ("review/tasks/<int:task_id>/extend", "POST"): REVIEWER,
    ("review/stats", "GET"): OPERATOR,
    ("webhooks/deliveries", "GET"): CLIENT,
    ("webhooks/deliveries/<int:delivery_id>", "GET"): CLIENT,
    ("webhooks/deliveries/<int:delivery_id>/redeliver", "POST"): CLIENT,
    # Its own credential: OZ_METRICS_TOKEN as a Bearer token, or a staff admin session. No
    # API key or person's API token opens it (tests/test_metrics.py covers the token).
    ("metrics", "GET"): {role: 401 for role in ROLES},
}

# Public by design, each with its reason. Still called by every role below: each must pass.
PUBLIC: dict[tuple[str, str], str] = {
    ("appeal/<str:token>", "GET"): "the end user's page: the HMAC token in the link is the credential",
    ("appeal/<str:token>", "POST"): "the end user files an appeal: the token is the credential (throttled per token and address)",
    ("appeal/<str:token>/status", "GET"): "the end user's appeal status: the token is the credential",
    ("^appeal(?:/(?P<rest>.*))?$", "GET"): "any other /appeal/… URL: the same 'link does not work' page",
    ("^appeal(?:/(?P<rest>.*))?$", "POST"): "any other /appeal/… URL: the same 'link does not work' page",
    ("healthz", "GET"): "liveness probe: says only that the process is up",
    ("readyz", "GET"): "readiness probe: says whether the database and Redis answer, nothing else",
    ("api/schema", "GET"): "the OpenAPI contract is public documentation (API.md)",
    ("api/docs", "GET"): "Swagger UI over the public schema, served from static files",
}

# Whole subtrees left out of MATRIX, with the reason.
SKIPPED_PREFIXES = {
    "admin/": "the Django admin: session logins and Django permissions; every admin URL is checked by "
    "test_every_admin_url_sends_strangers_to_the_login_page, and its pages by tests/test_admin.py",
}

# Plain Django view functions declare no methods a test can read: list them here.
FUNCTION_VIEW_METHODS = {
    "metrics": ["GET"],  # @require_GET
    "^appeal(?:/(?P<rest>.*))?$": ["GET", "POST"],
}


# --- the URLconf, walked ---------------------------------------------------------------------

def _walk(patterns, prefix: str = ""):
    for entry in patterns:
        if isinstance(entry, URLResolver):
            yield from _walk(entry.url_patterns, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern):
            yield prefix + str(entry.pattern), entry


def _methods(route: str, pattern: URLPattern) -> list[str]:
    view_class = getattr(pattern.callback, "cls", None) or getattr(pattern.callback, "view_class", None)
    if view_class is None:
        assert route in FUNCTION_VIEW_METHODS, f"function view {route!r}: list its methods in FUNCTION_VIEW_METHODS"
        return FUNCTION_VIEW_METHODS[route]
    return sorted(m.upper() for m in view_class.http_method_names if m not in ("options", "head") and hasattr(view_class, m))


def _endpoints() -> dict[tuple[str, str], URLPattern]:
    found = {}
    for route, pattern in _walk(get_resolver().url_patterns):
        if any(route.startswith(prefix) for prefix in SKIPPED_PREFIXES):
            continue
        for method in _methods(route, pattern):
            found[(route, method)] = pattern
    return found


ENDPOINTS = _endpoints()


def test_every_url_is_classified():
    """Adding a URL (or a method to a view) without saying here who may call it fails."""
    classified = set(MATRIX) | set(PUBLIC)
    unclassified = sorted(set(ENDPOINTS) - classified)
    assert not unclassified, f"classify these in MATRIX or PUBLIC (with a reason): {unclassified}"
    stale = sorted(classified - set(ENDPOINTS))
    assert not stale, f"no longer in the URLconf; remove them from the table: {stale}"
    assert not set(MATRIX) & set(PUBLIC)
    assert all(reason.strip() for reason in [*PUBLIC.values(), *SKIPPED_PREFIXES.values()])


def test_the_walk_sees_nested_resolvers_and_the_skipped_prefix():
    routes = [route for route, _ in _walk(get_resolver().url_patterns)]
    assert any(route.startswith("admin/") and route != "admin/" for route in routes)  # inside admin.site.urls
    assert len(ENDPOINTS) == len(MATRIX) + len(PUBLIC) >= 30


# --- every classified pair, called by every role ---------------------------------------------

@pytest.fixture
def world(loan, client_key, make_api, reviewer, operator):
    """One prediction of the client's, pending with a review task, and a caller per role."""
    client_api = make_api(f"Bearer {client_key[1]}")
    response = client_api.post("/predict/loan-approval", {"input": factories.loan_input()}, format="json")
    assert response.status_code == 202, response.content
    body = response.json()
    from review.models import ReviewTask

    return {
        "apis": {
            "anon": make_api(),
            "client": client_api,
            "reviewer": make_api(f"Token {reviewer[1]}"),
            "operator": make_api(f"Token {operator[1]}"),
        },
        "kwargs": {
            "slug": "loan-approval",
            "prediction_id": body["id"],
            "token": appeal_token(body["id"]),  # appeal_url is null while pending; the link is the same
            "task_id": ReviewTask.objects.get(prediction_id=body["id"]).pk,
            "version": 1,
            "run_id": 2_000_000_000,
            "delivery_id": 2_000_000_000,
        },
    }


def _path(route: str, pattern: URLPattern, kwargs: dict) -> str:
    if route == "^appeal(?:/(?P<rest>.*))?$":
        return "/appeal/not/a/link"
    wanted = {name: kwargs[name] for name in pattern.pattern.converters}
    return reverse(pattern.name, kwargs=wanted)


def _call(api, method: str, path: str):
    data = None if method == "GET" else {}
    return getattr(api, method.lower())(path, data=data, format="json")


@pytest.mark.parametrize("route, method", sorted(ENDPOINTS), ids=[f"{m} {r}" for r, m in sorted(ENDPOINTS)])
def test_each_role_gets_what_the_table_says(world, route, method):
    expected = MATRIX.get((route, method)) or {role: ALLOW for role in ROLES}
    path = _path(route, ENDPOINTS[(route, method)], world["kwargs"])
    seen = {}
    for role in ROLES:
        response = _call(world["apis"][role], method, path)
        seen[role] = response.status_code
        want = expected[role]
        if want == ALLOW:
            assert response.status_code not in (401, 403), (role, method, path, response.status_code, response.content[:300])
            assert response.status_code < 500, (role, method, path, response.status_code)
        else:
            assert response.status_code == want, (role, method, path, response.status_code, response.content[:300])
            if want in (401, 403):
                problem_body(response, want)
    assert seen  # every role was tried


def test_a_reviewer_is_refused_every_prediction_alike(world):
    # 403 whether the prediction exists or not: the refusal says nothing about the id.
    reviewer = world["apis"]["reviewer"]
    existing = problem_body(reviewer.get(f"/predictions/{world['kwargs']['prediction_id']}"), 403)
    missing = problem_body(reviewer.get(f"/predictions/{uuid4()}?wait=1"), 403)
    assert (existing["title"], existing["detail"]) == (missing["title"], missing["detail"])


def test_a_scoped_key_is_refused_on_predictors_outside_its_scope(loan, make_api, tmp_path):
    from gateway.definitions import predictors_load

    churn = tmp_path / "churn.yaml"
    churn.write_text("slug: churn\ninput:\n  months: {type: integer}\noutput: {type: label, labels: [stay, leave]}\n")
    predictors_load(churn)
    _, key = factories.api_client_with_key(name="scoped", predictor_slugs=["churn"])
    scoped = make_api(f"Bearer {key}")
    problem_body(scoped.post("/predict/loan-approval", {"input": factories.loan_input()}, format="json"), 403)
    problem_body(scoped.get("/predictors/loan-approval"), 404)
    assert [p["slug"] for p in scoped.get("/predictors").json()["results"]] == ["churn"]


# --- one client never sees another's data, in lists and filters too ---------------------------

def test_one_client_cannot_read_or_list_another_clients_predictions_or_webhooks(loan, client_key, make_api):
    routing_update(predictor=loan, changes={"mode": "rule"})
    acme = make_api(f"Bearer {client_key[1]}")
    _, other_key = factories.api_client_with_key(name="globex")
    globex = make_api(f"Bearer {other_key}")

    made = acme.post("/predict/loan-approval", {"input": factories.loan_input(), "callback_url": "https://client.example/hooks/oz"},
                     format="json")
    assert made.status_code == 200, made.content
    prediction_id = made.json()["id"]
    delivery = WebhookDelivery.objects.get(prediction_id=prediction_id)
    # globex has one prediction and delivery of its own, so its lists are not empty anyway.
    own = globex.post("/predict/loan-approval", {"input": factories.loan_input(), "callback_url": "https://client.example/hooks/g"},
                      format="json")
    assert own.status_code == 200
    own_delivery = WebhookDelivery.objects.get(prediction_id=own.json()["id"])

    # The prediction: 404 (as if missing), with or without waiting; no outcome can be reported.
    for path in (f"/predictions/{prediction_id}", f"/predictions/{prediction_id}?wait=1"):
        problem_body(globex.get(path), 404)
    problem_body(globex.post(f"/predictions/{prediction_id}/outcome", {"output": "refer"}, format="json"), 404)
    assert problem_body(globex.get(f"/predictions/{uuid4()}"), 404)["detail"] == problem_body(
        globex.get(f"/predictions/{prediction_id}"), 404)["detail"]

    # Webhook deliveries: the list, every filter and page, the detail and redelivery.
    queries = ["", "?status=pending", "?status=delivered", "?status=failed", "?limit=200",
               f"?cursor={delivery.pk + 1}", f"?cursor={delivery.pk + 1}&limit=1", f"?prediction={prediction_id}"]
    for query in queries:
        response = globex.get(f"/webhooks/deliveries{query}")
        if response.status_code == 422:
            continue
        assert response.status_code == 200, (query, response.content)
        ids = {d["id"] for d in response.json()["results"]}
        predictions = {d["prediction"] for d in response.json()["results"]}
        assert delivery.pk not in ids and prediction_id not in predictions, query
    assert {d["id"] for d in globex.get("/webhooks/deliveries").json()["results"]} == {own_delivery.pk}
    problem_body(globex.get(f"/webhooks/deliveries/{delivery.pk}"), 404)
    problem_body(globex.post(f"/webhooks/deliveries/{delivery.pk}/redeliver"), 404)

    # The owner sees both.
    assert acme.get(f"/predictions/{prediction_id}").status_code == 200
    assert {d["id"] for d in acme.get("/webhooks/deliveries").json()["results"]} == {delivery.pk}
    assert acme.get(f"/webhooks/deliveries/{delivery.pk}").status_code == 200
    assert Prediction.objects.filter(client__name="globex").count() == 1


# --- the admin: every URL sends a stranger to the login page ------------------------------------

ADMIN_KWARG_VALUES = {"app_label": "gateway", "slug": "loan-approval", "url": "nothing-here/"}
ADMIN_PUBLIC = {
    "login": "the login form itself",
}


def _admin_paths() -> list[tuple[str, str]]:
    paths = []
    for route, pattern in _walk(get_resolver().url_patterns):
        if not route.startswith("admin/"):
            continue
        regex = pattern.pattern.regex
        named = list(regex.groupindex)
        positional = regex.groups - len(named)
        if pattern.name is None:  # the admin's catch-all
            paths.append((route, "/admin/nothing-here/"))
            continue
        if positional:
            path = reverse(f"admin:{pattern.name}", args=["1"] * positional)
        else:
            path = reverse(f"admin:{pattern.name}", kwargs={n: ADMIN_KWARG_VALUES.get(n, "1") for n in named})
        paths.append((route, path))
    return paths


def test_every_admin_url_sends_strangers_to_the_login_page(loan, client_key, make_api):
    """Anonymous callers, and API keys (the admin knows only sessions), are redirected to the
    login page from every admin URL — custom views (queue, decide, dashboards, promote…)
    included, so a view added without admin_site.admin_view fails here."""
    paths = _admin_paths()
    assert len(paths) > 100
    callers = {"anonymous": make_api(), "api key": make_api(f"Bearer {client_key[1]}")}
    for route, path in paths:
        name = next((p.name for r, p in _walk(get_resolver().url_patterns) if r == route), None)
        for who, api in callers.items():
            response = api.get(path)
            if name in ADMIN_PUBLIC:
                assert response.status_code == 200, (who, path)
                continue
            assert response.status_code == 302, (who, route, path, response.status_code)
            location = response["Location"]
            if name == "logout":
                assert location == reverse("admin:index"), (who, path, location)
            else:
                assert re.match(r"^/admin/login/\?next=", location), (who, path, location)
