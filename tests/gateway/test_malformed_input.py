"""Whatever a client sends to POST /predict/<slug>, the answer is a 4xx problem+json, never
a 500, and a rejected request stores nothing."""
from __future__ import annotations

import json

import pytest

from gateway.models import Prediction
from review.models import ReviewTask
from tests import factories

from .helpers import error_fields, problem_body

pytestmark = pytest.mark.django_db

MiB = 1024 * 1024
JSON = "application/json"


def body(**top) -> bytes:
    """A JSON body: the valid loan input, with `input`/top-level fields replaced."""
    data = {"input": factories.loan_input()}
    data.update(top)
    return json.dumps(data).encode()


def with_input(**fields) -> bytes:
    return body(input=factories.loan_input(**fields))


def raw_input(fragment: str) -> bytes:
    """A body whose input is `{"amount": <fragment>}`, for literals json.dumps cannot write."""
    return ('{"input": {"amount": ' + fragment + "}}").encode()


# (id, raw body, content type, extra WSGI headers, expected status, field paths that must be named)
CASES = [
    # Not JSON / not a JSON object
    ("not-json", b"{input: 1}", JSON, {}, 400, None),
    ("truncated", b'{"input": {"amount": 1}', JSON, {}, 400, None),
    ("trailing-garbage", b'{"input": {"amount": 1}} x', JSON, {}, 400, None),
    ("single-quotes", b"{'input': {'amount': 1}}", JSON, {}, 400, None),
    ("utf8-bom", b'\xef\xbb\xbf{"input": {"amount": 1}}', JSON, {}, 400, None),
    ("invalid-utf8", b'{"input": {"amount": 1, "note": "\xff\xfe\xc3"}}', JSON, {}, 400, None),
    ("utf16", '{"input": {"amount": 1}}'.encode("utf-16"), JSON, {}, 400, None),
    ("json-array", b"[]", JSON, {}, 422, {""}),
    ("json-array-of-body", b'[{"input": {"amount": 1}}]', JSON, {}, 422, {""}),
    ("json-string", b'"input"', JSON, {}, 422, {""}),
    ("json-number", b"42", JSON, {}, 422, {""}),
    ("json-true", b"true", JSON, {}, 422, {""}),
    ("json-null", b"null", JSON, {}, 422, {""}),
    ("empty-body", b"", JSON, {}, 422, {"input"}),
    ("empty-object", b"{}", JSON, {}, 422, {"input"}),
    # Wrong content type
    ("text-plain", body(), "text/plain", {}, 415, None),
    ("form-urlencoded", b"input=amount", "application/x-www-form-urlencoded", {}, 415, None),
    ("multipart", b"--x\r\nContent-Disposition: form-data; name=\"input\"\r\n\r\n1\r\n--x--\r\n",
     "multipart/form-data; boundary=x", {}, 415, None),
    ("xml", b"<input><amount>1</amount></input>", "application/xml", {}, 415, None),
    # The input envelope
    ("input-missing", body(input=None).replace(b'"input": null', b'"inputs": {}'), JSON, {}, 422, {"input", "inputs"}),
    ("input-null", body(input=None), JSON, {}, 422, {"input"}),
    ("input-list", body(input=[factories.loan_input()]), JSON, {}, 422, {"input"}),
    ("input-string", body(input="amount=1"), JSON, {}, 422, {"input"}),
    ("input-number", body(input=12000), JSON, {}, 422, {"input"}),
    ("unknown-top-level", body(priority="high"), JSON, {}, 422, {"priority"}),
    ("unknown-input-field", with_input(colour="red"), JSON, {}, 422, {"input.colour"}),
    ("unknown-input-field-typo", body(input={"ammount": 12000}), JSON, {}, 422, {"input.ammount", "input.amount"}),
    ("required-missing", body(input={"sector": "food"}), JSON, {}, 422, {"input.amount"}),
    ("required-null", with_input(amount=None), JSON, {}, 422, {"input.amount"}),
    # Wrong types, every field
    ("amount-string", with_input(amount="12000"), JSON, {}, 422, {"input.amount"}),
    ("amount-bool", with_input(amount=True), JSON, {}, 422, {"input.amount"}),
    ("amount-list", with_input(amount=[12000]), JSON, {}, 422, {"input.amount"}),
    ("amount-object", with_input(amount={"value": 1}), JSON, {}, 422, {"input.amount"}),
    ("years-float", with_input(years_trading=4.5), JSON, {}, 422, {"input.years_trading"}),
    ("years-string", with_input(years_trading="4"), JSON, {}, 422, {"input.years_trading"}),
    ("years-bool", with_input(years_trading=False), JSON, {}, 422, {"input.years_trading"}),
    ("sector-number", with_input(sector=3), JSON, {}, 422, {"input.sector"}),
    ("sector-unknown-choice", with_input(sector="farming"), JSON, {}, 422, {"input.sector"}),
    ("sector-list", with_input(sector=["food"]), JSON, {}, 422, {"input.sector"}),
    ("collateral-string", with_input(has_collateral="yes"), JSON, {}, 422, {"input.has_collateral"}),
    ("collateral-number", with_input(has_collateral=1), JSON, {}, 422, {"input.has_collateral"}),
    ("note-number", with_input(note=5), JSON, {}, 422, {"input.note"}),
    ("note-object", with_input(note={"text": "hi"}), JSON, {}, 422, {"input.note"}),
    ("every-field-wrong", body(input={"amount": "1", "years_trading": "1", "sector": 1, "has_collateral": "1", "note": 1}),
     JSON, {}, 422, {"input.amount", "input.years_trading", "input.sector", "input.has_collateral", "input.note"}),
    # Out of range
    ("amount-negative", with_input(amount=-0.01), JSON, {}, 422, {"input.amount"}),
    ("years-negative", with_input(years_trading=-1), JSON, {}, 422, {"input.years_trading"}),
    ("note-too-long", with_input(note="x" * 2001), JSON, {}, 422, {"input.note"}),
    ("note-nul", with_input(note="a\x00b"), JSON, {}, 422, {"input.note"}),
    # Numbers JSON can write but a float cannot hold
    ("amount-1e400", raw_input("1e400"), JSON, {}, 422, {"input.amount"}),
    ("amount-minus-1e400", raw_input("-1e400"), JSON, {}, 422, {"input.amount"}),
    ("amount-400-digit-int", raw_input("1" + "0" * 400), JSON, {}, 422, {"input.amount"}),
    ("years-400-digit-int", ('{"input": {"amount": 1, "years_trading": 1' + "0" * 400 + "}}").encode(),
     JSON, {}, 422, {"input.years_trading"}),
    ("amount-10^5-digits", raw_input("1" + "0" * 100_000), JSON, {}, 400, None),
    ("amount-10^300", raw_input("1" + "0" * 300), JSON, {}, 422, {"input.amount"}),  # a float holds it; the limit does not
    ("amount-NaN", raw_input("NaN"), JSON, {}, 400, None),
    ("amount-Infinity", raw_input("Infinity"), JSON, {}, 400, None),
    ("amount-minus-Infinity", raw_input("-Infinity"), JSON, {}, 400, None),
    # Deep nesting (Python's json recurses per level)
    ("nested-100000-arrays", b"[" * 100_000 + b"]" * 100_000, JSON, {}, 400, None),
    ("nested-100000-objects", b'{"a":' * 100_000 + b"1" + b"}" * 100_000, JSON, {}, 400, None),
    ("nested-950-in-note", ('{"input": {"amount": 1, "note": ' + "[" * 950 + "]" * 950 + "}}").encode(), JSON, {}, 400, None),
    ("nested-20-in-note", ('{"input": {"amount": 1, "note": ' + "[" * 20 + "]" * 20 + "}}").encode(),
     JSON, {}, 422, {"input.note"}),
    # Strings that are not text
    ("lone-surrogate-value", b'{"input": {"amount": 1, "note": "a\\ud800b"}}', JSON, {}, 400, None),
    ("lone-surrogate-key", b'{"input": {"amount": 1, "\\udfff": 1}}', JSON, {}, 400, None),
    # Size: 413 on Content-Length, before anything is read
    ("note-1MiB", with_input(note="x" * MiB), JSON, {}, 413, None),
    ("body-over-1MiB", body() + b" " * MiB, JSON, {}, 413, None),
    ("content-length-lies-high", body(), JSON, {"CONTENT_LENGTH": str(MiB + 1)}, 413, None),
    ("content-length-not-a-number", body(), JSON, {"CONTENT_LENGTH": "lots"}, 400, None),
    # wait / explain / callback_url
    ("wait-31", body(wait=31), JSON, {}, 422, {"wait"}),
    ("wait-negative", body(wait=-1), JSON, {}, 422, {"wait"}),
    ("wait-huge", body(wait=10**30), JSON, {}, 422, {"wait"}),
    ("wait-float", body(wait=1.5), JSON, {}, 422, {"wait"}),
    ("wait-word", body(wait="ten"), JSON, {}, 422, {"wait"}),
    ("wait-bool", body(wait=True), JSON, {}, 422, {"wait"}),
    ("wait-list", body(wait=[1]), JSON, {}, 422, {"wait"}),
    ("wait-1e400", b'{"input": {"amount": 1}, "wait": 1e400}', JSON, {}, 422, {"wait"}),
    ("explain-word", body(explain="maybe"), JSON, {}, 422, {"explain"}),
    ("explain-list", body(explain=[]), JSON, {}, 422, {"explain"}),
    ("explain-object", body(explain={}), JSON, {}, 422, {"explain"}),
    ("explain-2", body(explain=2), JSON, {}, 422, {"explain"}),
    ("callback-not-url", body(callback_url="not a url"), JSON, {}, 422, {"callback_url"}),
    ("callback-ftp", body(callback_url="ftp://client.example/x"), JSON, {}, 422, {"callback_url"}),
    ("callback-number", body(callback_url=5), JSON, {}, 422, {"callback_url"}),
    ("callback-nul", body(callback_url="https://client.example/\x00"), JSON, {}, 422, {"callback_url"}),
    # Idempotency-Key
    ("idempotency-key-256", body(), JSON, {"HTTP_IDEMPOTENCY_KEY": "k" * 256}, 422, {"Idempotency-Key"}),
    ("idempotency-key-nul", body(), JSON, {"HTTP_IDEMPOTENCY_KEY": "a\x00b"}, 422, {"Idempotency-Key"}),
    ("idempotency-key-control", body(), JSON, {"HTTP_IDEMPOTENCY_KEY": "a\x1bb"}, 422, {"Idempotency-Key"}),
]


@pytest.mark.parametrize(
    "raw, content_type, extra, status, fields",
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_malformed_requests_get_a_problem_and_store_nothing(predict, client_api, raw, content_type, extra, status, fields):
    before = Prediction.objects.count()
    response = client_api.post("/predict/loan-approval", data=raw, content_type=content_type, **extra)
    problem = problem_body(response, status)
    if fields is not None:
        assert fields <= error_fields(problem), problem
        assert all(isinstance(e["message"], str) and e["message"] for e in problem["errors"])
    assert Prediction.objects.count() == before
    assert not ReviewTask.objects.exists()


def test_a_number_too_long_to_read_is_named_as_such(predict, client_api):
    response = client_api.post("/predict/loan-approval", data=raw_input("1" * 5000), content_type=JSON)
    problem = problem_body(response, 400)
    assert "more than 4300 digits" in problem["detail"] and "sys." not in problem["detail"]


def test_the_control_case_is_accepted(predict, client_api):
    # The battery above would pass vacuously if the valid body were itself rejected.
    response = client_api.post("/predict/loan-approval", data=body(), content_type=JSON)
    assert response.status_code == 202
    assert Prediction.objects.count() == 1


@pytest.mark.parametrize(
    "raw",
    [
        with_input(note="x" * 2000),  # at max_length
        with_input(note="héllo wörld ✓ 😀"),
        body(wait=0),
        body(explain=True),
        body(explain=False),
        body(callback_url=""),
        raw_input("1e3"),
        raw_input("1" + "0" * 15),  # the largest whole number an input may be (gateway.schema.NUMBER_LIMIT)
        b'{"input": {"amount": 1, "note": "a\\ud83d\\ude00b"}}',  # a surrogate *pair* is fine
        ('{"input": {"amount": 1, "years_trading": 2}' + "}").encode(),
    ],
)
def test_unusual_but_valid_bodies_are_accepted(predict, client_api, raw):
    response = client_api.post("/predict/loan-approval", data=raw, content_type=JSON)
    assert response.status_code == 202, response.content[:300]


@pytest.mark.parametrize("value", [None, [], "x"])
def test_an_input_that_is_not_an_object_is_one_error(predict, client_api, value):
    problem = problem_body(client_api.post("/predict/loan-approval", data=body(input=value), content_type=JSON), 422)
    assert problem["errors"] == [{"field": "input", "message": "must be an object"}]


def test_envelope_errors_are_in_the_same_words_as_input_errors(predict, client_api):
    raw = json.dumps({"inputs": {}, "wait": 31, "explain": 1, "routing_key": 17, "callback_url": "nope"}).encode()
    problem = problem_body(client_api.post("/predict/loan-approval", data=raw, content_type=JSON), 422)
    assert {e["field"]: e["message"] for e in problem["errors"]} == {
        "inputs": "unknown field",
        "input": "this field is required",
        "wait": "must be at most 30",
        "explain": "must be true or false",
        "routing_key": "must be a string",
        "callback_url": "must be an http or https URL",
    }


def test_an_integral_float_for_an_integer_field_is_stored_as_the_integer(predict, client_api):
    response = client_api.post("/predict/loan-approval", data=with_input(years_trading=4.0), content_type=JSON)
    assert response.status_code == 202, response.content[:300]
    stored = Prediction.objects.get().input["years_trading"]
    assert stored == 4 and type(stored) is int


@pytest.mark.parametrize("slug", ["nope", "loan-approval-2", "LOAN-APPROVAL"])
def test_unknown_predictor_is_404(predict, client_api, slug):
    response = client_api.post(f"/predict/{slug}", data=body(), content_type=JSON)
    problem_body(response, 404)
    assert not Prediction.objects.exists()


@pytest.mark.parametrize("path", ["/predict/loan-approval/", "/predict/", "/predict/a/b"])
def test_unrouted_predict_paths_are_404_problems(predict, client_api, path):
    problem_body(client_api.post(path, data=body(), content_type=JSON), 404)


def test_get_on_predict_is_405(predict, client_api):
    response = client_api.get("/predict/loan-approval")
    problem_body(response, 405)
    assert "POST" in response["Allow"]
