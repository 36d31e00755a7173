"""Small assertions shared by the gateway tests."""
from __future__ import annotations

import json

PROBLEM_CONTENT_TYPE = "application/problem+json"


def problem_body(response, status: int | None = None) -> dict:
    """Assert `response` is an RFC 9457 problem (of `status`, when given) and return its body."""
    if status is not None:
        assert response.status_code == status, (response.status_code, response.content[:500])
    assert 400 <= response.status_code < 500 or response.status_code == 503, response.status_code
    assert response["Content-Type"].split(";")[0].strip() == PROBLEM_CONTENT_TYPE, response["Content-Type"]
    body = json.loads(response.content)
    assert {"type", "title", "status", "detail"} <= body.keys(), body
    assert body["status"] == response.status_code
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    return body


def error_fields(body: dict) -> set[str]:
    return {e["field"] for e in body.get("errors", [])}


def post_json(api, path: str, body, **extra):
    return api.post(path, data=json.dumps(body), content_type="application/json", **extra)
