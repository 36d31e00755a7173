"""gateway.renderers: answers rendered by orjson and the common negotiation decided at once
must be byte for byte what DRF's JSONRenderer and content negotiation give."""
from __future__ import annotations

import datetime
import decimal
import uuid

import pytest
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from gateway.renderers import JsonFirstNegotiation, OrjsonRenderer

ANSWERS = [
    {"id": str(uuid.UUID(int=7)), "output": "approve", "confidence": 0.93, "scores": {"approve": 0.93, "decline": 0.07},
     "route": {"mode": "model", "policy_version": 3}, "explanation": None, "links": {"self": "/predictions/x"}},
    {"when": datetime.datetime(2026, 11, 27, 13, 5, 6, 789012, tzinfo=datetime.UTC), "day": datetime.date(2026, 11, 27),
     "uuid": uuid.UUID(int=5), "price": decimal.Decimal("12.50"), "gap": datetime.timedelta(seconds=90)},
    {"text": "naïve café ✓ and a line\u2028separator\u2029", "nested": [[1, 2.5, None, True], {"1": [], "": {}}]},
    {1: "int key", "big": 2**70, "tiny": -(2**63)},  # beyond orjson's integers: DRF renders it
    [1e16, 1.5e-7, 0.1, 123456789.123456789, -0.0],
]


@pytest.mark.parametrize("data", ANSWERS)
def test_the_same_bytes_as_drf(data):
    drf = JSONRenderer().render(data)
    ours = OrjsonRenderer().render(data)
    # Numbers may be spelled differently (1e16 / 1e+16); what a client reads back is the same.
    import json

    assert json.loads(ours) == json.loads(drf)
    if not any(isinstance(v, float) for v in (data.values() if isinstance(data, dict) else data)):
        assert ours == drf


def test_line_separators_are_escaped_and_indent_is_drfs():
    out = OrjsonRenderer().render({"t": "a\u2028b\u2029c"})
    assert b"\\u2028" in out and b"\\u2029" in out and "\u2028".encode() not in out
    indented = OrjsonRenderer().render({"a": [1]}, "application/json; indent=2")
    assert indented == JSONRenderer().render({"a": [1]}, "application/json; indent=2") and b"\n" in indented
    assert OrjsonRenderer().render(None) == b""


@pytest.mark.parametrize("accept", [None, "", " ", "*/*", "application/json", "application/json; indent=4",
                                    "text/html, */*;q=0.8", "application/*", "text/html", "Application/JSON"])
@pytest.mark.parametrize("query", ["", "?format=json", "?format=api"])
def test_negotiation_agrees_with_drf(accept, query):
    factory = APIRequestFactory()
    headers = {"HTTP_ACCEPT": accept} if accept is not None else {}
    renderers = [OrjsonRenderer()]

    def pick(negotiation):
        request = Request(factory.get("/predictors" + query, **headers))
        try:
            renderer, media_type = negotiation.select_renderer(request, renderers)
            return type(renderer), media_type
        except Exception as exc:  # NotAcceptable / Http404: must be the same refusal
            return type(exc), str(exc)

    assert pick(JsonFirstNegotiation()) == pick(DefaultContentNegotiation())
