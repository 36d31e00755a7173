"""/healthz, /readyz, the OpenAPI schema, and 404s for unknown URLs."""
from __future__ import annotations

import json

import pytest
import yaml

from .helpers import problem_body

pytestmark = pytest.mark.django_db

OPENAPI_JSON = "application/vnd.oai.openapi+json"

# Every path of config/urls.py that API.md documents, with its methods.
API_PATHS = {
    "/predict/{slug}": {"post"},
    "/predictions/{prediction_id}": {"get"},
    "/predictions/{prediction_id}/outcome": {"post"},
    "/predictors": {"get"},
    "/predictors/{slug}": {"get"},
    "/predictors/{slug}/routing": {"patch"},
    "/predictors/{slug}/train": {"post"},
    "/predictors/{slug}/models": {"get"},
    "/predictors/{slug}/models/{version}/promote": {"post"},
    "/predictors/{slug}/rollback": {"post"},
    "/training-runs/{run_id}": {"get"},
    "/review/claim": {"post"},
    "/review/tasks/{task_id}/decision": {"post"},
    "/review/tasks/{task_id}/release": {"post"},
    "/review/tasks/{task_id}/extend": {"post"},
    "/healthz": {"get"},
    "/readyz": {"get"},
}
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def test_healthz(anon_api):
    response = anon_api.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_checks_the_database_and_redis(anon_api, settings):
    assert settings.REDIS_URL, "the suite runs with Redis (scripts/testenv.sh)"
    response = anon_api.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "redis": "ok"}}


def test_readyz_is_503_problem_when_redis_is_unreachable(anon_api, settings):
    from django.core.cache import caches

    # A Redis nobody listens on (port 9 is "discard"; nothing answers RESP there).
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:9/0",
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
    }
    try:
        response = anon_api.get("/readyz")
    finally:
        caches["default"].close()
    body = problem_body(response, 503)
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"].startswith("error")


@pytest.fixture(scope="module")
def openapi(django_db_blocker):
    from rest_framework.test import APIClient

    with django_db_blocker.unblock():
        response = APIClient().get("/api/schema", HTTP_ACCEPT=OPENAPI_JSON)
    assert response.status_code == 200
    assert response["Content-Type"].startswith(OPENAPI_JSON)
    return json.loads(response.content)


def test_the_schema_is_openapi_3(openapi):
    assert openapi["openapi"].startswith("3.")
    assert openapi["info"]["title"]


def test_the_schema_is_served_as_yaml_by_default(anon_api):
    response = anon_api.get("/api/schema")
    assert response.status_code == 200
    assert yaml.safe_load(response.content)["openapi"].startswith("3.")


@pytest.mark.parametrize("path, methods", sorted(API_PATHS.items()))
def test_the_schema_documents_every_api_path_with_its_methods(openapi, path, methods):
    assert path in openapi["paths"], sorted(openapi["paths"])
    assert set(openapi["paths"][path]) & HTTP_METHODS == methods


def test_the_predict_operation_documents_its_responses_and_idempotency_key(openapi):
    operation = openapi["paths"]["/predict/{slug}"]["post"]
    assert {"200", "202", "401", "404", "409", "413", "422", "429"} <= set(operation["responses"])
    assert any(p["in"] == "header" and p["name"] == "Idempotency-Key" for p in operation["parameters"])
    request_schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert request_schema["$ref"].startswith("#/components/schemas/")
    component = openapi["components"]["schemas"][request_schema["$ref"].rsplit("/", 1)[1]]
    assert {"input", "callback_url", "wait", "explain"} <= set(component["properties"])


def test_the_schema_documents_both_authentication_schemes(openapi):
    schemes = openapi["components"]["securitySchemes"]
    assert schemes["ApiKey"]["scheme"] == "bearer"
    assert schemes["UserToken"]["in"] == "header"


def test_the_docs_page_is_served(anon_api):
    response = anon_api.get("/api/docs")
    assert response.status_code == 200
    assert b"swagger" in response.content.lower()


@pytest.mark.parametrize("path", ["/nope", "/predict", "/predictors/", "/healthz/", "/predictions/x/y/z", "/api/schema/extra"])
def test_an_unknown_url_is_a_404_problem(anon_api, client_api, path):
    problem_body(anon_api.get(path), 404)
    problem_body(client_api.post(path, data={}, format="json"), 404)
