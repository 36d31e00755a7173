"""gateway.schema: predictor definitions (load time) and request inputs (every /predict)."""
from __future__ import annotations

import copy
import datetime
import math

import pytest
import yaml

from gateway.schema import definition_validate, input_validate, output_error
from tests.factories import DEMO_PREDICTORS


def demo_definition() -> dict:
    return yaml.safe_load((DEMO_PREDICTORS / "loan-approval.yaml").read_text())


def short(value) -> str:
    text = repr(value)
    return text if len(text) <= 30 else text[:25] + "..."


def errors_of(definition) -> dict[str, str]:
    return {e.field: e.message for e in definition_validate(definition)}


def mutated(change) -> dict:
    definition = copy.deepcopy(demo_definition())
    change(definition)
    return definition


# ---------------------------------------------------------------------------------------
# definition_validate
# ---------------------------------------------------------------------------------------

def test_the_demo_definition_is_valid():
    assert definition_validate(demo_definition()) == []


def test_a_definition_must_be_a_mapping():
    assert [e.field for e in definition_validate(["slug", "x"])] == [""]
    assert [e.field for e in definition_validate(None)] == [""]


def _set(path: list, value):
    def change(d):
        target = d
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return change


def _delete(path: list):
    def change(d):
        target = d
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
    return change


def _rules(rules: list):
    return _set(["rules"], rules)


@pytest.mark.parametrize(
    "change, field",
    [
        # unknown keys, at every level
        (_set(["colour"], "blue"), "colour"),
        (_set(["input", "amount", "format"], "money"), "input.amount.format"),
        (_set(["input", "sector", "minimum"], 1), "input.sector.minimum"),
        (_set(["input", "has_collateral", "choices"], ["a"]), "input.has_collateral.choices"),
        (_set(["output", "minimum"], 0), "output.minimum"),
        (_set(["output", "agree_within"], 1), "output.agree_within"),  # numbers only
        (_set(["routing", "fallback"], "model"), "routing.fallback"),
        (_set(["routing", "human_sla_seconds"], -5), "routing.human_sla_seconds"),
        (_set(["routing", "canary_percent"], 150), "routing.canary_percent"),
        (_set(["routing", "confidence_threshold"], 1.5), "routing.confidence_threshold"),
        (_set(["routing", "max_queue_depth"], "deep"), "routing.max_queue_depth"),
        (_set(["routing", "mirror"], True), "routing.mirror"),
        (_set(["reviews_required"], 0), "reviews_required"),
        (_set(["appeal_window_days"], "30"), "appeal_window_days"),
        # slug
        (_delete(["slug"]), "slug"),
        (_set(["slug"], "Loan Approval"), "slug"),
        (_set(["slug"], 42), "slug"),
        # bad types
        (_set(["description"], ["not", "a", "string"]), "description"),
        (_set(["input"], ["amount"]), "input"),
        (_set(["input"], {}), "input"),
        (_set(["input", "amount"], "number"), "input.amount"),
        (_set(["input", "amount", "type"], "float"), "input.amount.type"),
        (_set(["input", "amount", "required"], "yes"), "input.amount.required"),
        (_set(["input", "amount", "minimum"], "0"), "input.amount.minimum"),
        (_set(["input", "amount", "maximum"], math.inf), "input.amount.maximum"),
        (_set(["input", "amount", "maximum"], -1), "input.amount.maximum"),  # below minimum 0
        (_set(["input", "amount", "maximum"], 1e18), "input.amount.maximum"),  # beyond what any input may be
        (_set(["input", "years_trading", "minimum"], -(10**16)), "input.years_trading.minimum"),
        (_set(["input", "amount", "unit"], 3), "input.amount.unit"),
        (_set(["input", "amount", "description"], datetime.date(2024, 1, 1)), "input.amount.description"),
        (_set(["input", "years_trading", "minimum"], 0.5), "input.years_trading.minimum"),
        (_set(["input", "note", "max_length"], 0), "input.note.max_length"),
        (_set(["input", "note", "max_length"], "long"), "input.note.max_length"),
        (_set(["input", "bad-name"], {"type": "number"}), "input.bad-name"),
        (_set(["output"], "label"), "output"),
        (_delete(["output"]), "output"),
        (_set(["output", "type"], "class"), "output.type"),
        (_set(["output", "labels"], ["approve"]), "output.labels"),
        (_set(["output", "labels"], ["approve", "approve"]), "output.labels"),
        (_set(["output", "labels"], ["approve", 3]), "output.labels"),
        (_set(["output", "description"], {"x": 1}), "output.description"),
        (_set(["routing"], "human"), "routing"),
        (_set(["routing", "mode"], "robot"), "routing.mode"),
        (_set(["rules"], {"default": "refer"}), "rules"),
        # a category needs choices
        (_delete(["input", "sector", "choices"]), "input.sector.choices"),
        (_set(["input", "sector", "choices"], []), "input.sector.choices"),
        (_set(["input", "sector", "choices"], ["food", "food"]), "input.sector.choices"),
        (_set(["input", "sector", "choices"], ["food", 1]), "input.sector.choices"),
        # sensitive_attribute must be a category/boolean field of the input
        (_set(["sensitive_attribute"], "postcode"), "sensitive_attribute"),
        (_set(["sensitive_attribute"], "amount"), "sensitive_attribute"),
        (_set(["sensitive_attribute"], ["sector"]), "sensitive_attribute"),
        # rules: unknown field, operator not valid for the type, bad operands, bad answers
        (_rules([{"when": {"postcode": {"eq": "N1"}}, "then": "approve"}, {"default": "refer"}]),
         "rules[0].when.postcode"),
        (_rules([{"when": {"sector": {"lt": 3}}, "then": "approve"}, {"default": "refer"}]),
         "rules[0].when.sector.lt"),
        (_rules([{"when": {"amount": {"contains": "1"}}, "then": "approve"}, {"default": "refer"}]),
         "rules[0].when.amount.contains"),
        (_rules([{"when": {"has_collateral": {"ge": 1}}, "then": "approve"}, {"default": "refer"}]),
         "rules[0].when.has_collateral.ge"),
        (_rules([{"when": {"amount": {"lt": "5000"}}, "then": "approve"}, {"default": "refer"}]),
         "rules[0].when.amount.lt"),
        (_rules([{"when": {"amount": {"lt": 10**400}}, "then": "approve"}, {"default": "refer"}]),
         "rules[0].when.amount.lt"),
        (_rules([{"when": {"sector": {"eq": "farming"}}, "then": "approve"}, {"default": "refer"}]),
         "rules[0].when.sector.eq"),
        (_rules([{"when": {"sector": {"in": ["food", "farming"]}}, "then": "approve"}, {"default": "refer"}]),
         "rules[0].when.sector.in"),
        (_rules([{"when": {"sector": {"not_in": []}}, "then": "approve"}, {"default": "refer"}]),
         "rules[0].when.sector.not_in"),
        (_rules([{"when": {"note": {"is_null": "yes"}}, "then": "approve"}, {"default": "refer"}]),
         "rules[0].when.note.is_null"),
        (_rules([{"when": {"amount": {"between": [1, 2]}}, "then": "approve"}, {"default": "refer"}]),
         "rules[0].when.amount.between"),
        (_rules([{"when": {"amount": 5}, "then": "approve"}, {"default": "refer"}]), "rules[0].when.amount"),
        (_rules([{"when": {}, "then": "approve"}, {"default": "refer"}]), "rules[0].when"),
        (_rules([{"when": {"amount": {"lt": 1}}}, {"default": "refer"}]), "rules[0]"),
        (_rules(["approve", {"default": "refer"}]), "rules[0]"),
        (_rules([{"when": {"amount": {"lt": 1}}, "then": "accept"}, {"default": "refer"}]), "rules[0].then"),
        (_rules([{"when": {"amount": {"lt": 1}}, "then": "approve"}, {"default": "maybe"}]), "rules[1].default"),
        # default: present, and last
        (_rules([{"when": {"amount": {"lt": 1}}, "then": "approve"}]), "rules"),
        (_rules([{"default": "refer"}, {"when": {"amount": {"lt": 1}}, "then": "approve"}]), "rules[0]"),
        (_rules([{"default": "refer", "then": "approve"}]), "rules[0]"),
        # rule routing needs rules
        (lambda d: (d.pop("rules"), d.__setitem__("routing", {"mode": "rule"})), "routing.mode"),
    ],
)
def test_definition_errors_name_the_field_at_fault(change, field):
    errors = errors_of(mutated(change))
    assert field in errors, errors


def test_every_problem_is_reported_at_once():
    def change(d):
        d["slug"] = "Bad Slug"
        d["input"]["sector"] = {"type": "category"}
        d["output"]["labels"] = ["approve"]
        d["rules"] = [{"when": {"nope": {"eq": 1}}, "then": "approve"}]

    assert {"slug", "input.sector.choices", "output.labels", "rules[0].when.nope", "rules"} <= errors_of(mutated(change)).keys()


def test_rule_operators_valid_for_each_type_are_accepted():
    definition = mutated(_rules([
        {"when": {"amount": {"ge": 0, "lt": 10.5}, "years_trading": {"ne": 3, "le": 10}}, "then": "approve"},
        {"when": {"sector": {"in": ["food"], "not_in": ["retail"], "ne": "other"}}, "then": "approve"},
        {"when": {"note": {"contains": "urgent"}, "has_collateral": {"eq": False}}, "then": "refer"},
        {"when": {"note": {"is_null": True}, "sector": {"is_null": False}}, "then": "refer"},
        # comparisons may use values outside the field's own min/max
        {"when": {"amount": {"lt": -1}}, "then": "refer"},
        {"default": "refer"},
    ]))
    assert definition_validate(definition) == []


def test_number_output_definition():
    definition = mutated(lambda d: d.update(
        output={"type": "number", "minimum": 0, "maximum": 1, "unit": "probability"},
        rules=[{"when": {"amount": {"lt": 100}}, "then": 0.5}, {"default": 2}],
        training={"estimator": "ridge"}, gates={"max_metrics": {"rmse": 0.2}},
    ))
    assert errors_of(definition) == {"rules[1].default": "must be at most 1"}


def test_a_number_output_lies_within_the_number_limit():
    definition = mutated(lambda d: d.update(
        output={"type": "number", "minimum": 2e15}, rules=[{"default": 1}], training={"estimator": "ridge"}, gates={},
    ))
    assert errors_of(definition)["output.minimum"] == "must lie within ±1e15, the range of any number input or output"
    assert output_error({"type": "number"}, 1e15) is None
    assert output_error({"type": "number"}, 1.5e15) == "is out of range"
    assert output_error({"type": "number"}, -(10**15) - 1) == "is out of range"


@pytest.mark.parametrize("tolerance, ok", [(0, True), (0.5, True), (10, True), (-0.1, False), ("1", False),
                                            (math.inf, False), (math.nan, False), (True, False), (None, False)])
def test_a_number_outputs_consensus_tolerance(tolerance, ok):
    definition = mutated(lambda d: d.update(
        output={"type": "number", "agree_within": tolerance}, rules=[{"default": 1}],
        training={"estimator": "ridge"}, gates={},
    ))
    assert errors_of(definition) == ({} if ok else {"output.agree_within": "must be a number of at least 0"})


def test_training_and_gates_must_suit_the_output_type():
    # The demo's classification blocks do not fit a number output: each is named.
    definition = mutated(lambda d: d.update(output={"type": "number", "minimum": 0, "maximum": 1}))
    errors = errors_of(definition)
    assert errors["training.estimator"].startswith("must be one of: ridge")
    assert errors["gates.min_metrics.accuracy"].startswith("unknown metric")


# ---------------------------------------------------------------------------------------
# input_validate
# ---------------------------------------------------------------------------------------

SCHEMA = {
    "amount": {"type": "number", "minimum": 0, "maximum": 1_000_000, "required": True},
    "years": {"type": "integer", "minimum": 0, "maximum": 200},
    "sector": {"type": "category", "choices": ["retail", "food"]},
    "secured": {"type": "boolean"},
    "note": {"type": "text", "max_length": 5},
    "free": {"type": "text"},
}


def check(data) -> tuple[dict, dict[str, str]]:
    clean, errors = input_validate(SCHEMA, data)
    return clean, {e.field: e.message for e in errors}


def test_a_valid_input_comes_back_clean():
    data = {"amount": 10.5, "years": 3, "sector": "food", "secured": False, "note": "hi", "free": ""}
    assert check(data) == (data, {})


def test_only_the_required_field_is_needed():
    assert check({"amount": 0}) == ({"amount": 0}, {})


def test_explicit_null_is_the_same_as_missing_for_optional_fields():
    clean, errors = check({"amount": 1, "years": None, "sector": None, "secured": None, "note": None})
    assert errors == {}
    assert clean == {"amount": 1}


@pytest.mark.parametrize("data", [{}, {"amount": None}])
def test_required_field_missing_or_null(data):
    assert check(data)[1] == {"input.amount": "this field is required"}


@pytest.mark.parametrize("data", [None, [], "amount=1", 3, True])
def test_input_must_be_an_object(data):
    assert check(data) == ({}, {"input": "must be an object"})


def test_unknown_fields_are_errors_not_ignored():
    clean, errors = check({"amount": 1, "ammount": 2})
    assert errors == {"input.ammount": "unknown field"}
    assert clean == {"amount": 1}


@pytest.mark.parametrize(
    "field, value",
    [
        ("amount", "10"),
        ("amount", True),  # booleans are not numbers
        ("amount", False),
        ("amount", math.nan),
        ("amount", math.inf),
        ("amount", -math.inf),
        ("amount", 10**400),  # an int no float can hold
        ("amount", [1]),
        ("amount", {"value": 1}),
        ("years", 1.5),
        ("years", 3.5e15),  # integral, but beyond the limit
        ("years", -0.5),
        ("years", "3"),
        ("years", True),
        ("years", 10**400),
        ("sector", "farming"),
        ("sector", "Food"),
        ("sector", 1),
        ("sector", ["food"]),
        ("secured", 1),
        ("secured", "true"),
        ("secured", 0),
        ("note", 5),
        ("note", ["hi"]),
        ("note", "123456"),  # over max_length
        ("free", "x" * 10_001),  # over the default max_length
    ],
    ids=short,
)
def test_wrong_values_are_rejected_with_the_field_path(field, value):
    data = {"amount": 1, field: value}
    clean, errors = check(data)
    assert list(errors) == [f"input.{field}"], errors
    assert field not in clean


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("amount", -0.01, "must be at least 0"),
        ("amount", 1_000_000.5, "must be at most 1000000"),
        ("years", -1, "must be at least 0"),
        ("years", 201, "must be at most 200"),
    ],
)
def test_minimum_and_maximum(field, value, message):
    assert check({"amount": 1, field: value})[1] == {f"input.{field}": message}


@pytest.mark.parametrize("field, value", [("amount", 0), ("amount", 1_000_000), ("years", 0), ("years", 200),
                                          ("note", "12345"), ("free", "x" * 10_000)], ids=short)
def test_bounds_are_inclusive(field, value):
    assert check({"amount": 1, field: value})[1] == {}


def test_integers_are_valid_numbers():
    assert check({"amount": 7})[0] == {"amount": 7}


@pytest.mark.parametrize("value, stored", [(3.0, 3), (0.0, 0), (-0.0, 0), (200.0, 200), (1e2, 100)], ids=short)
def test_an_integral_float_is_an_integer_and_stored_as_one(value, stored):
    # JSON Schema, and so the OpenAPI schema that states the field, counts 3.0 as an integer;
    # clients whose numbers pass through floats (pandas, JavaScript) send it.
    clean, errors = check({"amount": 1, "years": value})
    assert errors == {}
    assert clean["years"] == stored and type(clean["years"]) is int


def test_an_integral_float_still_meets_the_bounds():
    assert check({"amount": 1, "years": 201.0})[1] == {"input.years": "must be at most 200"}


def test_all_errors_are_reported_together():
    _, errors = check({"years": "x", "sector": "y", "extra": 1})
    assert errors.keys() == {"input.amount", "input.years", "input.sector", "input.extra"}


# ---------------------------------------------------------------------------------------
# output_error (outcomes and reviewer decisions)
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["approve", "refer"])
def test_label_output_accepts_its_labels(value):
    assert output_error({"type": "label", "labels": ["approve", "refer"]}, value) is None


@pytest.mark.parametrize("value", ["Approve", None, 1, ["approve"]])
def test_label_output_rejects_anything_else(value):
    assert output_error({"type": "label", "labels": ["approve", "refer"]}, value)


@pytest.mark.parametrize("value, ok", [(0.5, True), (0, True), (1, True), (1.01, False), (-1, False),
                                       (True, False), ("0.5", False), (math.nan, False), (10**400, False)],
                         ids=short)
def test_number_output(value, ok):
    assert (output_error({"type": "number", "minimum": 0, "maximum": 1}, value) is None) is ok


@pytest.mark.parametrize("field, value, ok", [
    ("x", 1e15, True), ("x", -1e15, True), ("x", 1.5e15, False), ("x", -1.5e15, False), ("x", 1e308, False),
    ("n", 10**15, True), ("n", 10**15 + 1, False), ("n", -(10**15) - 1, False), ("x", 10**15 + 1, False),
    ("n", 10**308, False),
], ids=short)
def test_numbers_stay_within_the_documented_limit(field, value, ok):
    # The OpenAPI schema bounds every number input without bounds of its own by ±1e15
    # (gateway.schema.NUMBER_LIMIT); larger values that still fit a float were taken (found by
    # tests/test_schemathesis.py), and one near 1e308 broke training.
    _, errors = input_validate({"x": {"type": "number"}, "n": {"type": "integer"}}, {field: value})
    assert (errors == []) is ok, errors
