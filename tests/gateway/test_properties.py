"""Property-based tests (Hypothesis) for the rule engine and the predictor schema.

What a user depends on, checked on generated data rather than hand-picked cases:
- `input_validate` never raises on any JSON-like value, names only real field paths, and
  its clean input validates to itself again;
- `definition_validate` never raises on arbitrary edits of the demo definition, and every
  error points at a place that exists in the definition (or at a required key);
- a definition that passes `definition_validate` answers every valid input with one of its
  declared outputs (first match wins, then `default`);
- the comparison operators agree with Python's.

All functions under test are pure (no database)."""
from __future__ import annotations

import copy
import math
import operator
import os

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway.rules import NoRuleMatched, rule_matches, rules_evaluate
from gateway.schema import NUMBER_LIMIT, FieldError, definition_validate, input_validate, output_error, value_error
from tests.factories import DEMO_PREDICTORS

# Derandomized, so CI checks the same 200 cases every run and a landing never depends on
# luck; OZ_HYPOTHESIS_RANDOM=1 explores new cases (a find becomes an @example here).
PROPERTY_SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow],
    derandomize=not os.environ.get("OZ_HYPOTHESIS_RANDOM"), database=None,
)

DEMO = yaml.safe_load((DEMO_PREDICTORS / "loan-approval.yaml").read_text())
DEMO_SCHEMA = DEMO["input"]


def demo_definition() -> dict:
    return copy.deepcopy(DEMO)


# ---------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------

huge_ints = st.sampled_from([10**308, 10**309, -(10**309), 2**63, -(2**63) - 1, 10**4000])
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    huge_ints,
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["", "\x00", "retail", "approve", "refer", "true", "1e999", "NaN"]),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=8), children, max_size=4),
    ),
    max_leaves=12,
)


def demo_field_values(name: str) -> st.SearchStrategy:
    """Values near the demo field's domain (plus anything), so valid paths are reached too."""
    spec = DEMO_SCHEMA[name]
    near = {
        "number": st.one_of(st.integers(-10, 10**6), st.floats(-1e6, 1e6)),
        "integer": st.integers(-5, 50),
        "boolean": st.booleans(),
        "category": st.sampled_from([*spec.get("choices", []), "Retail", ""]),
        "text": st.text(max_size=30),
    }[spec["type"]]
    return st.one_of(near, json_values)


demo_like_inputs = st.fixed_dictionaries(
    {},
    optional={name: demo_field_values(name) for name in DEMO_SCHEMA}
    | {"extra": json_values, "Amount": json_values, "": json_values},
)
any_input = st.one_of(json_values, demo_like_inputs)


# ---------------------------------------------------------------------------------------
# input_validate
# ---------------------------------------------------------------------------------------

@PROPERTY_SETTINGS
@given(data=any_input)
def test_input_validate_never_raises_and_names_only_real_fields(data):
    clean, errors = input_validate(DEMO_SCHEMA, data)

    assert isinstance(clean, dict)
    assert all(isinstance(e, FieldError) and isinstance(e.message, str) and e.message for e in errors)
    if not isinstance(data, dict):
        assert [e.field for e in errors] == ["input"]
        return
    real = {f"input.{name}" for name in [*data, *DEMO_SCHEMA]}
    assert {e.field for e in errors} <= real
    # Field by field: at most one error for each field.
    assert len({e.field for e in errors}) == len(errors)
    # The clean part holds only declared fields with valid, non-null values, unchanged.
    assert set(clean) <= set(DEMO_SCHEMA)
    for name, value in clean.items():
        assert value is data[name]
        assert value_error(DEMO_SCHEMA[name], value) is None
    if not errors:
        assert clean == {k: v for k, v in data.items() if v is not None}


@PROPERTY_SETTINGS
@given(data=any_input)
def test_clean_input_validates_to_itself(data):
    clean, _ = input_validate(DEMO_SCHEMA, data)
    again, errors = input_validate(DEMO_SCHEMA, clean)
    # Only a missing required field can make the clean part invalid; nothing else.
    assert all(e.message == "this field is required" for e in errors)
    assert again == clean


# ---------------------------------------------------------------------------------------
# definition_validate on arbitrary edits of the demo definition
# ---------------------------------------------------------------------------------------

def _containers(node, path=()):
    """Every dict and list in the tree, with the path of keys/indexes that reaches it."""
    if isinstance(node, (dict, list)):
        yield path, node
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, child in items:
            yield from _containers(child, (*path, key))


mutation_keys = st.one_of(
    st.text(max_size=10),
    st.sampled_from(["type", "default", "when", "then", "eq", "in", "lt", "contains", "is_null", "labels", "choices",
                     "minimum", "maximum", "required", "mode", "training", "gates", "rules", "params", "grid"]),
    st.integers(-3, 3),
    st.booleans(),
    st.none(),
)


@st.composite
def mutated_demo(draw):
    definition = demo_definition()
    for _ in range(draw(st.integers(1, 4))):
        containers = list(_containers(definition))
        _, target = draw(st.sampled_from(containers))
        action = draw(st.sampled_from(["set", "delete", "add"]))
        if isinstance(target, dict):
            if action == "delete" and target:
                del target[draw(st.sampled_from(sorted(target, key=repr)))]
            elif action == "set" and target:
                target[draw(st.sampled_from(sorted(target, key=repr)))] = draw(json_values)
            else:
                target[draw(mutation_keys)] = draw(json_values)
        elif action == "delete" and target:
            del target[draw(st.integers(0, len(target) - 1))]
        elif action == "set" and target:
            target[draw(st.integers(0, len(target) - 1))] = draw(json_values)
        else:
            target.insert(draw(st.integers(0, len(target))), draw(json_values))
    return definition


def _points_into(field: str, definition: dict) -> bool:
    return any(
        field == key or field.startswith((f"{key}.", f"{key}["))
        for key in [*map(str, definition), "slug", "input", "output"]
    )


@PROPERTY_SETTINGS
@given(definition=mutated_demo())
def test_definition_validate_never_raises_and_every_error_names_a_field(definition):
    errors = definition_validate(definition)

    assert isinstance(errors, list)
    for error in errors:
        assert isinstance(error, FieldError)
        assert isinstance(error.field, str) and isinstance(error.message, str) and error.message
        assert _points_into(error.field, definition), error


@PROPERTY_SETTINGS
@given(definition=mutated_demo(), data=any_input)
def test_a_definition_that_validates_answers_every_valid_input(definition, data):
    if definition_validate(definition):
        return
    clean, errors = input_validate(definition["input"], data)
    if errors:
        return
    rules = definition.get("rules", [])
    if not rules:
        return
    answer, index = rules_evaluate(rules, clean)
    assert 0 <= index < len(rules)
    assert output_error(definition["output"], answer) is None


hyper_keys = st.one_of(st.sampled_from(["C", "max_iter", "a"]), st.integers(0, 2), st.booleans(), st.none())
hyper_values = st.one_of(scalars, st.lists(scalars, max_size=3))


@PROPERTY_SETTINGS
@given(
    params=st.dictionaries(hyper_keys, hyper_values, max_size=4) | json_values,
    grid=st.dictionaries(hyper_keys, hyper_values, max_size=4) | json_values,
    output_type=st.one_of(st.sampled_from(["label", "number"]), json_values),
)
@example(params={1: 1, "a": 2}, grid={1: [1], "a": [2]}, output_type="label")
@example(params={}, grid={}, output_type=[])
def test_definition_validate_never_raises_on_odd_training_blocks(params, grid, output_type):
    # Regression: YAML keys need not be strings; a grid and params sharing an int and a str key
    # (and an unhashable output type) used to crash the check with a TypeError.
    definition = demo_definition()
    definition["training"] |= {"params": params, "grid": grid}
    definition["output"]["type"] = output_type
    for error in definition_validate(definition):
        assert _points_into(error.field, definition), error


# ---------------------------------------------------------------------------------------
# Generated valid definitions: schema, rules, inputs
# ---------------------------------------------------------------------------------------

field_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True)
finite = st.one_of(st.integers(-(10**6), 10**6), st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False))
texts = st.text(st.characters(blacklist_characters="\x00"), max_size=12)


@st.composite
def bounds(draw, numbers):
    low = draw(st.none() | numbers)
    high = draw(st.none() | numbers)
    if low is not None and high is not None and low > high:
        low, high = high, low
    spec = {}
    if low is not None:
        spec["minimum"] = low
    if high is not None:
        spec["maximum"] = high
    return spec


@st.composite
def field_specs(draw):
    kind = draw(st.sampled_from(["number", "integer", "boolean", "category", "text"]))
    spec = {"type": kind}
    if draw(st.booleans()):
        spec["required"] = draw(st.booleans())
    if kind == "number":
        spec |= draw(bounds(finite))
    elif kind == "integer":
        spec |= draw(bounds(st.integers(-1000, 1000)))
    elif kind == "category":
        spec["choices"] = draw(st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=4, unique=True))
    elif kind == "text" and draw(st.booleans()):
        spec["max_length"] = draw(st.integers(1, 20))
    return spec


def values_of(spec: dict) -> st.SearchStrategy:
    """Valid (non-null) values of a field."""
    kind = spec["type"]
    if kind == "number":
        # Within the documented range of any number input (gateway.schema.NUMBER_LIMIT).
        low, high = max(spec.get("minimum", -NUMBER_LIMIT), -NUMBER_LIMIT), min(spec.get("maximum", NUMBER_LIMIT), NUMBER_LIMIT)
        floats = st.floats(low, high, allow_nan=False, allow_infinity=False)
        int_low, int_high = None if low is None else math.ceil(low), None if high is None else math.floor(high)
        if int_low is not None and int_high is not None and int_low > int_high:
            return floats  # no whole number between the bounds (e.g. 0.3 to 0.7)
        return floats | st.integers(int_low, int_high)
    if kind == "integer":
        limit = int(NUMBER_LIMIT)
        return st.integers(max(spec.get("minimum", -limit), -limit), min(spec.get("maximum", limit), limit))
    if kind == "boolean":
        return st.booleans()
    if kind == "category":
        return st.sampled_from(spec["choices"])
    return st.text(st.characters(blacklist_characters="\x00"), max_size=min(spec.get("max_length", 20), 20))


def operand_values(spec: dict) -> st.SearchStrategy:
    """Values a rule may compare a field with: its type, ignoring min/max/max_length."""
    kind = spec["type"]
    if kind == "number":
        return finite
    if kind == "integer":
        return st.integers(-2000, 2000)
    if kind == "text":
        return texts
    return values_of(spec)


@st.composite
def conditions(draw, spec):
    kind = spec["type"]
    ops = ["eq", "ne", "in", "not_in", "is_null"]
    if kind in ("number", "integer"):
        ops += ["lt", "le", "gt", "ge"]
    if kind == "text":
        ops.append("contains")
    condition = {}
    for op in draw(st.lists(st.sampled_from(ops), min_size=1, max_size=2, unique=True)):
        if op == "is_null":
            condition[op] = draw(st.booleans())
        elif op in ("lt", "le", "gt", "ge"):
            condition[op] = draw(finite)
        elif op == "contains":
            condition[op] = draw(st.text(st.characters(blacklist_characters="\x00"), min_size=1, max_size=3))
        elif op in ("in", "not_in"):
            condition[op] = draw(st.lists(operand_values(spec), min_size=1, max_size=3))
        else:
            condition[op] = draw(operand_values(spec))
    return condition


@st.composite
def outputs(draw):
    if draw(st.booleans()):
        labels = draw(st.lists(st.text(min_size=1, max_size=6), min_size=2, max_size=4, unique=True))
        return {"type": "label", "labels": labels}, st.sampled_from(labels)
    spec = {"type": "number"} | draw(bounds(finite))
    # Answers lie within the limit on every number output (gateway.schema.NUMBER_LIMIT).
    low, high = spec.get("minimum", -NUMBER_LIMIT), spec.get("maximum", NUMBER_LIMIT)
    return spec, st.floats(low, high, allow_nan=False, allow_infinity=False)


@st.composite
def valid_definitions(draw):
    schema = draw(st.dictionaries(field_names, field_specs(), min_size=1, max_size=5))
    output, answers = draw(outputs())
    rules = []
    for _ in range(draw(st.integers(0, 5))):
        names = draw(st.lists(st.sampled_from(sorted(schema)), min_size=1, max_size=3, unique=True))
        rules.append({"when": {name: draw(conditions(schema[name])) for name in names}, "then": draw(answers)})
    rules.append({"default": draw(answers)})
    return {"slug": "generated", "input": schema, "output": output, "rules": rules}


@st.composite
def valid_inputs(draw, schema):
    data = {}
    for name, spec in schema.items():
        if spec.get("required") or draw(st.booleans()):
            data[name] = draw(values_of(spec))
        elif draw(st.booleans()):
            data[name] = None  # an explicit null is the same as a missing field
    return data


@st.composite
def definitions_with_input(draw):
    definition = draw(valid_definitions())
    return definition, draw(valid_inputs(definition["input"]))


@PROPERTY_SETTINGS
@given(case=definitions_with_input())
def test_generated_definitions_and_inputs_are_valid(case):
    definition, data = case
    assert definition_validate(definition) == []
    clean, errors = input_validate(definition["input"], data)
    assert errors == []
    assert clean == {k: v for k, v in data.items() if v is not None}


@PROPERTY_SETTINGS
@given(case=definitions_with_input())
def test_rules_answer_a_declared_output_or_raise_no_rule_matched(case):
    definition, data = case
    clean, _ = input_validate(definition["input"], data)
    rules, output = definition["rules"], definition["output"]

    answer, index = rules_evaluate(rules, clean)
    assert 0 <= index < len(rules)
    assert output_error(output, answer) is None
    if output["type"] == "label":
        assert answer in output["labels"]

    # Without the default, the answer is the same when a rule matched, NoRuleMatched otherwise.
    try:
        partial = rules_evaluate(rules[:-1], clean)
    except NoRuleMatched:
        assert index == len(rules) - 1
    else:
        assert partial == (answer, index)


@PROPERTY_SETTINGS
@given(case=definitions_with_input(), data=st.data())
def test_first_match_wins(case, data):
    definition, raw = case
    clean, _ = input_validate(definition["input"], raw)
    rules = definition["rules"]
    answer, index = rules_evaluate(rules, clean)
    name = data.draw(st.sampled_from(sorted(definition["input"])))
    label = data.draw(st.text(max_size=5))

    # A rule that matches this input, put first, answers it.
    matching = {"when": {name: {"is_null": name not in clean}}, "then": label}
    assert rules_evaluate([matching, *rules], clean) == (label, 0)
    # One that cannot match changes nothing but the index.
    never = {"when": {name: {"is_null": name in clean}}, "then": label}
    assert rules_evaluate([never, *rules], clean) == (answer, index + 1)
    # Rules after the one that answered are never looked at.
    assert rules_evaluate([*rules[: index + 1], {"when": {}, "then": label}], clean) == (answer, index)


# ---------------------------------------------------------------------------------------
# Operators agree with Python
# ---------------------------------------------------------------------------------------

numbers = st.one_of(st.integers(-(10**20), 10**20), st.floats(allow_nan=False, allow_infinity=False))
PYTHON_OPS = {"lt": operator.lt, "le": operator.le, "gt": operator.gt, "ge": operator.ge, "eq": operator.eq, "ne": operator.ne}


@PROPERTY_SETTINGS
@given(op=st.sampled_from(sorted(PYTHON_OPS)), value=numbers, operand=numbers)
def test_comparisons_agree_with_python(op, value, operand):
    assert rule_matches({"x": {op: operand}}, {"x": value}) is PYTHON_OPS[op](value, operand)


@PROPERTY_SETTINGS
@given(value=numbers | texts | st.booleans(), operand=st.lists(numbers | texts | st.booleans(), min_size=1, max_size=5))
def test_in_and_not_in_agree_with_python(value, operand):
    assert rule_matches({"x": {"in": operand}}, {"x": value}) is (value in operand)
    assert rule_matches({"x": {"not_in": operand}}, {"x": value}) is (value not in operand)


@PROPERTY_SETTINGS
@given(op=st.sampled_from([*sorted(PYTHON_OPS), "in", "not_in", "contains"]), operand=numbers | texts)
def test_a_missing_or_null_field_matches_no_comparison(op, operand):
    if op in ("in", "not_in"):
        operand = [operand]
    elif op == "contains":
        operand = str(operand) or "a"
    assert rule_matches({"x": {op: operand}}, {}) is False
    assert rule_matches({"x": {op: operand}}, {"x": None}) is False
    assert rule_matches({"x": {"is_null": True}}, {}) is True


@PROPERTY_SETTINGS
@given(value=texts, needle=st.text(st.characters(blacklist_characters="\x00"), min_size=1, max_size=4))
def test_contains_is_a_casefolded_substring_test(value, needle):
    assert rule_matches({"x": {"contains": needle}}, {"x": value}) is (needle.casefold() in value.casefold())
    assert rule_matches({"x": {"contains": needle}}, {"x": value + needle + value}) is True


def test_a_huge_whole_number_threshold_is_an_error_or_accepted_never_a_crash():
    # Found by the mutation property in CI: math.isfinite() overflowed on a 300-digit int.
    data = {**DEMO, "gates": {"min_metrics": {"accuracy": 10**300}}}
    errors = definition_validate(data)
    assert all(isinstance(e, FieldError) for e in errors)
