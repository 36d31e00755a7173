"""Predictor definitions (YAML) and the input validation that /predict runs on every request.

Two jobs, kept apart:
- `definition_validate` checks a whole predictor definition once, at load time, and reports
  every problem with the path of the field at fault.
- `input_validate` checks one request's input against a loaded schema; it is on the hot path,
  so it is plain Python over dicts, with no per-request compilation.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

FIELD_TYPES = ("number", "integer", "boolean", "category", "text")
OUTPUT_TYPES = ("label", "number")
ROUTING_MODES = ("human", "rule", "model")
ROUTING_FALLBACKS = ("human", "rule", "none")
MAX_SLA_SECONDS = 30 * 24 * 3600
DEFAULT_TEXT_MAX_LENGTH = 10_000
# Number and integer inputs lie within ±NUMBER_LIMIT (the bounds the OpenAPI schema states for
# a field without its own, whatever a definition's own minimum and maximum say). 1e15 keeps
# every integer exact as a float (2**53 is about 9e15) and leaves a model's arithmetic room:
# squares and sums over millions of rows stay finite. (The limit was 1e308: one value near
# it made a training run's scaling overflow to NaN, failing every run until it was removed.)
# An integer is compared with 10**15 exactly, as JSON Schema validators read the bound.
NUMBER_LIMIT = 1e15
_INTEGER_LIMIT = 10**15
_LIMIT_MESSAGE = "must lie within ±1e15, the range of any number input or output"


def _within_limit(value) -> bool:
    limit = _INTEGER_LIMIT if isinstance(value, int) else NUMBER_LIMIT
    return -limit <= value <= limit
SLUG_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
FIELD_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")

_COMMON_FIELD_KEYS = {"type", "required", "description", "log"}
_FIELD_KEYS = {
    "number": _COMMON_FIELD_KEYS | {"minimum", "maximum", "unit"},
    "integer": _COMMON_FIELD_KEYS | {"minimum", "maximum", "unit"},
    "boolean": _COMMON_FIELD_KEYS,
    "category": _COMMON_FIELD_KEYS | {"choices"},
    "text": _COMMON_FIELD_KEYS | {"max_length"},
}
_TOP_LEVEL_KEYS = {
    "slug", "description", "input", "output", "sensitive_attribute", "routing", "rules",
    "reviews_required", "appeal_window_days", "training", "gates", "auto_promote",
}
RULE_OPERATORS = ("eq", "ne", "lt", "le", "gt", "ge", "in", "not_in", "contains", "is_null")


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str

    def as_dict(self) -> dict:
        return {"field": self.field, "message": self.message}


def _is_number(value) -> bool:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float (JSON allows 4300 digits)
        return False


def _is_integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_integral_float(value) -> bool:
    return type(value) is float and value.is_integer()  # NaN and the infinities are not


# ---------------------------------------------------------------------------------------
# Values of one field type (shared by input validation and rule validation)
# ---------------------------------------------------------------------------------------

def value_error(spec: dict, value) -> str | None:
    """Why `value` is not a valid non-null value of a field with this spec, or None."""
    kind = spec["type"]
    if kind == "number" and type(value) is float and -NUMBER_LIMIT <= value <= NUMBER_LIMIT:
        # The common case, decided here: a float in range (NaN and the infinities are not).
        if "minimum" in spec and value < spec["minimum"]:
            return f"must be at least {spec['minimum']}"
        if "maximum" in spec and value > spec["maximum"]:
            return f"must be at most {spec['maximum']}"
        return None
    if kind == "number":
        if not _is_number(value):
            return "must be a finite number"
    elif kind == "integer":
        # 3.0 is an integer to JSON Schema (and to the OpenAPI schema that states the field):
        # a client's numbers often pass through floats (pandas, JavaScript). input_validate
        # stores it as 3.
        if not (_is_integer(value) or _is_integral_float(value)):
            return "must be an integer"
        if not _is_number(value):
            return "is out of range"
    elif kind == "boolean":
        if not isinstance(value, bool):
            return "must be true or false"
    elif kind == "category":
        if not isinstance(value, str) or value not in spec["choices"]:
            return f"must be one of: {', '.join(spec['choices'])}"
    elif kind == "text":
        if not isinstance(value, str):
            return "must be a string"
        if "\x00" in value:
            return "must not contain NUL characters"
        limit = spec.get("max_length", DEFAULT_TEXT_MAX_LENGTH)
        if len(value) > limit:
            return f"must be at most {limit} characters"
    if kind in ("number", "integer"):
        if not _within_limit(value):
            return "is out of range"
        if "minimum" in spec and value < spec["minimum"]:
            return f"must be at least {spec['minimum']}"
        if "maximum" in spec and value > spec["maximum"]:
            return f"must be at most {spec['maximum']}"
    return None


def input_validate(schema: dict, data) -> tuple[dict, list[FieldError]]:
    """Check a request's `input` against a predictor's input schema.

    Returns the clean input (only declared fields; explicit nulls dropped; an integer field's
    integral float, 3.0, as the integer 3) and the list of field errors; the input is valid
    when that list is empty. Unknown fields are errors, so a client's typo never silently
    becomes a missing value."""
    if not isinstance(data, dict):
        return {}, [FieldError("input", "must be an object")]
    errors: list[FieldError] = []
    clean: dict = {}
    for name in data:
        if name not in schema:
            errors.append(FieldError(f"input.{name}", "unknown field"))
    for name, spec in schema.items():
        value = data.get(name)
        if value is None:
            if spec.get("required"):
                errors.append(FieldError(f"input.{name}", "this field is required"))
            continue
        problem = value_error(spec, value)
        if problem:
            errors.append(FieldError(f"input.{name}", problem))
        elif type(value) is float and spec["type"] == "integer":
            clean[name] = int(value)  # an integral float (value_error took it): stored as the integer
        else:
            clean[name] = value
    return clean, errors


def output_error(output_spec: dict, value) -> str | None:
    """Why `value` is not a valid answer for this output spec, or None."""
    if output_spec["type"] == "label":
        if not isinstance(value, str) or value not in output_spec["labels"]:
            return f"must be one of: {', '.join(output_spec['labels'])}"
        return None
    if not _is_number(value):
        return "must be a finite number"
    if not _within_limit(value):  # a label trains models too: the same bound as inputs
        return "is out of range"
    if "minimum" in output_spec and value < output_spec["minimum"]:
        return f"must be at least {output_spec['minimum']}"
    if "maximum" in output_spec and value > output_spec["maximum"]:
        return f"must be at most {output_spec['maximum']}"
    return None


# ---------------------------------------------------------------------------------------
# Whole definitions (load time)
# ---------------------------------------------------------------------------------------

def _field_spec_errors(name: str, spec, errors: list[FieldError]) -> None:
    path = f"input.{name}"
    if not FIELD_NAME_RE.match(str(name)):
        errors.append(FieldError(path, "field names are letters, digits and _, starting with a letter or _"))
    if not isinstance(spec, dict):
        errors.append(FieldError(path, "must be a mapping with at least `type`"))
        return
    kind = spec.get("type")
    if kind not in FIELD_TYPES:
        errors.append(FieldError(f"{path}.type", f"must be one of: {', '.join(FIELD_TYPES)}"))
        return
    for key in spec:
        if key not in _FIELD_KEYS[kind]:
            errors.append(FieldError(f"{path}.{key}", f"unknown key for a {kind} field"))
    for key in ("required", "log"):
        if key in spec and not isinstance(spec[key], bool):
            errors.append(FieldError(f"{path}.{key}", "must be true or false"))
    if kind in ("number", "integer"):
        check = _is_integer if kind == "integer" else _is_number
        for key in ("minimum", "maximum"):
            if key in spec and not check(spec[key]):
                errors.append(FieldError(f"{path}.{key}", f"must be a {'whole ' if kind == 'integer' else ''}number"))
            elif key in spec and not _within_limit(spec[key]):
                errors.append(FieldError(f"{path}.{key}", _LIMIT_MESSAGE))
        if _is_number(spec.get("minimum")) and _is_number(spec.get("maximum")) and spec["minimum"] > spec["maximum"]:
            errors.append(FieldError(f"{path}.maximum", "must not be below minimum"))
        if "unit" in spec and not isinstance(spec["unit"], str):
            errors.append(FieldError(f"{path}.unit", "must be a string"))
    if "description" in spec and not isinstance(spec["description"], str):
        errors.append(FieldError(f"{path}.description", "must be a string"))
    if kind == "category":
        choices = spec.get("choices")
        if (
            not isinstance(choices, list)
            or not choices
            or not all(isinstance(c, str) and c for c in choices)
            or len(set(choices)) != len(choices)
        ):
            errors.append(FieldError(f"{path}.choices", "must be a non-empty list of distinct strings"))
    if kind == "text" and "max_length" in spec:
        if not _is_integer(spec["max_length"]) or not 0 < spec["max_length"] <= 1_000_000:
            errors.append(FieldError(f"{path}.max_length", "must be an integer between 1 and 1000000"))


def _output_spec_errors(output, errors: list[FieldError]) -> None:
    if not isinstance(output, dict):
        errors.append(FieldError("output", "must be a mapping with `type`"))
        return
    kind = output.get("type")
    if kind not in OUTPUT_TYPES:
        errors.append(FieldError("output.type", f"must be one of: {', '.join(OUTPUT_TYPES)}"))
        return
    allowed = ({"type", "labels", "description"} if kind == "label"
               else {"type", "minimum", "maximum", "unit", "description", "agree_within"})
    for key in output:
        if key not in allowed:
            errors.append(FieldError(f"output.{key}", f"unknown key for a {kind} output"))
    for key in ("description", "unit"):
        if key in output and key in allowed and not isinstance(output[key], str):
            errors.append(FieldError(f"output.{key}", "must be a string"))
    if kind == "label":
        labels = output.get("labels")
        if (
            not isinstance(labels, list)
            or len(labels) < 2
            or not all(isinstance(x, str) and x for x in labels)
            or len(set(labels)) != len(labels)
        ):
            errors.append(FieldError("output.labels", "must be a list of at least two distinct strings"))
    else:
        for key in ("minimum", "maximum"):
            if key in output and not _is_number(output[key]):
                errors.append(FieldError(f"output.{key}", "must be a number"))
            elif key in output and not _within_limit(output[key]):
                errors.append(FieldError(f"output.{key}", _LIMIT_MESSAGE))
        # Consensus on a number: reviewers agree when their answers lie within this of
        # each other (review.services.consensus_answer).
        if "agree_within" in output and not (_is_number(output["agree_within"]) and output["agree_within"] >= 0):
            errors.append(FieldError("output.agree_within", "must be a number of at least 0"))


def _condition_errors(path: str, spec: dict, op: str, operand) -> str | None:
    kind = spec["type"]
    if op == "is_null":
        return None if isinstance(operand, bool) else "is_null takes true or false"
    if op in ("lt", "le", "gt", "ge"):
        if kind not in ("number", "integer"):
            return f"{op} only applies to number and integer fields"
        return None if _is_number(operand) else f"{op} needs a number"
    if op == "contains":
        if kind != "text":
            return "contains only applies to text fields"
        return None if isinstance(operand, str) and operand else "contains needs a non-empty string"
    if op in ("in", "not_in"):
        if not isinstance(operand, list) or not operand:
            return f"{op} needs a non-empty list"
        for item in operand:
            problem = value_error(_unbounded(spec), item)
            if problem:
                return f"{op} item {item!r} {problem}"
        return None
    # eq / ne
    problem = value_error(_unbounded(spec), operand)
    return f"{op} value {problem}" if problem else None


def _unbounded(spec: dict) -> dict:
    # A rule may compare with any value of the field's type, even one outside min/max.
    return {k: v for k, v in spec.items() if k not in ("minimum", "maximum", "max_length")}


def _rules_errors(rules, schema: dict, output_spec: dict, errors: list[FieldError]) -> None:
    if not isinstance(rules, list):
        errors.append(FieldError("rules", "must be a list"))
        return
    valid_output = isinstance(output_spec, dict) and output_spec.get("type") in OUTPUT_TYPES
    for i, rule in enumerate(rules):
        path = f"rules[{i}]"
        if not isinstance(rule, dict):
            errors.append(FieldError(path, "must be a mapping with `when`/`then` or `default`"))
            continue
        if "default" in rule:
            if set(rule) != {"default"}:
                errors.append(FieldError(path, "a default rule has only `default`"))
            if i != len(rules) - 1:
                errors.append(FieldError(path, "the default rule must be the last one"))
            answer_key, answer = "default", rule["default"]
        else:
            if set(rule) - {"when", "then"} or "then" not in rule or "when" not in rule:
                errors.append(FieldError(path, "a rule has exactly `when` and `then`"))
                continue
            answer_key, answer = "then", rule["then"]
            when = rule["when"]
            if not isinstance(when, dict) or not when:
                errors.append(FieldError(f"{path}.when", "must map input fields to conditions"))
            else:
                for field_name, condition in when.items():
                    cpath = f"{path}.when.{field_name}"
                    if field_name not in schema:
                        errors.append(FieldError(cpath, "not a field of the input schema"))
                        continue
                    if not isinstance(condition, dict) or not condition:
                        errors.append(FieldError(cpath, f"must map operators ({', '.join(RULE_OPERATORS)}) to values"))
                        continue
                    for op, operand in condition.items():
                        if op not in RULE_OPERATORS:
                            errors.append(FieldError(f"{cpath}.{op}", f"unknown operator; use one of: {', '.join(RULE_OPERATORS)}"))
                            continue
                        spec = schema[field_name]
                        if isinstance(spec, dict) and spec.get("type") in FIELD_TYPES and _field_is_sound(spec):
                            problem = _condition_errors(cpath, spec, op, operand)
                            if problem:
                                errors.append(FieldError(f"{cpath}.{op}", problem))
        if valid_output:
            problem = output_error(output_spec, answer) if _output_is_sound(output_spec) else None
            if problem:
                errors.append(FieldError(f"{path}.{answer_key}", problem))
    if rules and (not isinstance(rules[-1], dict) or "default" not in rules[-1]):
        errors.append(FieldError("rules", "must end with a `default` rule, so every input gets an answer"))


def _field_is_sound(spec: dict) -> bool:
    errs: list[FieldError] = []
    _field_spec_errors("x", spec, errs)
    return not errs


def _output_is_sound(output_spec: dict) -> bool:
    errs: list[FieldError] = []
    _output_spec_errors(output_spec, errs)
    return not errs


def definition_validate(data) -> list[FieldError]:
    """Every problem of a predictor definition, each with the path of the field at fault."""
    if not isinstance(data, dict):
        return [FieldError("", "a predictor definition is a mapping")]
    errors: list[FieldError] = []
    for key in data:
        if key not in _TOP_LEVEL_KEYS:
            errors.append(FieldError(str(key), "unknown key"))
    slug = data.get("slug")
    if not isinstance(slug, str) or not SLUG_RE.match(slug) or len(slug) > 100:
        errors.append(FieldError("slug", "required: lower-case letters, digits and hyphens"))
    if "description" in data and not isinstance(data["description"], str):
        errors.append(FieldError("description", "must be a string"))
    schema = data.get("input")
    if not isinstance(schema, dict) or not schema:
        errors.append(FieldError("input", "required: a mapping of field names to field specs"))
        schema = {}
    for name, spec in schema.items():
        _field_spec_errors(name, spec, errors)
    if "output" not in data:
        errors.append(FieldError("output", "required"))
    else:
        _output_spec_errors(data["output"], errors)
    sensitive = data.get("sensitive_attribute")
    if sensitive is not None:
        if not isinstance(sensitive, str) or sensitive not in schema:
            errors.append(FieldError("sensitive_attribute", "must name a field of the input"))
        elif isinstance(schema[sensitive], dict) and schema[sensitive].get("type") not in ("category", "boolean"):
            errors.append(FieldError("sensitive_attribute", "must be a category or boolean field"))
    routing = data.get("routing", {})
    if not isinstance(routing, dict):
        errors.append(FieldError("routing", "must be a mapping"))
    else:
        errors.extend(
            FieldError(f"routing.{e.field}", e.message) for e in routing_errors(
                routing,
                has_rules=bool(data.get("rules")),
                is_classification=not isinstance(data.get("output"), dict) or data["output"].get("type") != "number",
            )
        )
    for key, low, high in (("reviews_required", 1, 10), ("appeal_window_days", 0, 3650)):
        if key in data and (not _is_integer(data[key]) or not low <= data[key] <= high):
            errors.append(FieldError(key, f"must be a whole number from {low} to {high}"))
    if "rules" in data:
        _rules_errors(data["rules"], schema, data.get("output"), errors)
    from models_registry.config import definition_errors as training_errors  # the registry owns these blocks

    errors.extend(training_errors(data))
    return errors


MAX_QUEUE_DEPTH = 2_147_483_647  # the column is a PostgreSQL integer


def _percent_error(value) -> str | None:
    if not _is_number(value) or not 0 <= value <= 100:
        return "must be a number from 0 to 100"
    return None


MAX_QUEUE_DEPTH = 2_147_483_647  # the column is a PostgreSQL integer


def _percent_error(value) -> str | None:
    if not _is_number(value) or not 0 <= value <= 100:
        return "must be a number from 0 to 100"
    return None


def routing_errors(changes: dict, *, has_rules: bool, is_classification: bool = True) -> list[FieldError]:
    """Problems with (part of) a routing flag, field by field. Used for the YAML's initial
    flag, PATCH /predictors/<slug>/routing, the admin form (and its history revert) and
    `set_routing`, so all of them accept exactly the same values.

    The predictor's context decides two things: `mode: rule` needs rules, and a
    `confidence_threshold` only means something for classification (label) outputs, whose
    models give a confidence; a number output refuses it."""
    errors = []
    for key, value in changes.items():
        if key == "mode":
            if value not in ROUTING_MODES:
                errors.append(FieldError("mode", f"must be one of: {', '.join(ROUTING_MODES)}"))
            elif value == "rule" and not has_rules:
                errors.append(FieldError("mode", "this predictor has no rules to answer with"))
        elif key == "fallback":
            if value not in ROUTING_FALLBACKS:
                errors.append(FieldError("fallback", f"must be one of: {', '.join(ROUTING_FALLBACKS)}"))
        elif key == "human_sla_seconds":
            if value is not None and (not _is_integer(value) or not 1 <= value <= MAX_SLA_SECONDS):
                errors.append(FieldError("human_sla_seconds", f"must be null or a whole number from 1 to {MAX_SLA_SECONDS}"))
        elif key == "confidence_threshold":
            if value is None:
                continue
            if not _is_number(value) or not 0 <= value <= 1:
                errors.append(FieldError("confidence_threshold", "must be null or a number from 0 to 1"))
            elif not is_classification:
                errors.append(FieldError(
                    "confidence_threshold", "only for label outputs: a number output's model gives no confidence"
                ))
        elif key in ("canary_percent", "qa_sample_percent"):
            problem = _percent_error(value)
            if problem:
                errors.append(FieldError(key, problem))
        elif key == "shadow":
            if not isinstance(value, bool):
                errors.append(FieldError("shadow", "must be true or false"))
        elif key == "max_queue_depth":
            if value is not None and (not _is_integer(value) or not 1 <= value <= MAX_QUEUE_DEPTH):
                errors.append(FieldError("max_queue_depth", "must be null or a whole number of at least 1"))
        else:
            errors.append(FieldError(key, "unknown routing field"))
    return errors
