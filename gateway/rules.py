"""The rule stub: ordered conditions over input fields, first match wins, then `default`.

Rules are data, checked against the input schema at load time (gateway.schema); here they
are only interpreted. Conditions on one rule combine with AND. A missing field is null: it
matches `is_null: true` and no comparison."""
from __future__ import annotations

import operator

_COMPARE = {
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
}


class NoRuleMatched(Exception):
    """The rules have no default and none matched (only possible for rule-less predictors)."""


def _holds(op: str, value, operand) -> bool:
    if op == "is_null":
        return (value is None) is operand
    if value is None:
        return False
    if op == "eq":
        return value == operand
    if op == "ne":
        return value != operand
    if op == "in":
        return value in operand
    if op == "not_in":
        return value not in operand
    if op == "contains":
        return operand.casefold() in value.casefold()
    return _COMPARE[op](value, operand)


def rule_matches(when: dict, data: dict) -> bool:
    return all(
        _holds(op, data.get(field), operand)
        for field, condition in when.items()
        for op, operand in condition.items()
    )


def rules_evaluate(rules: list, data: dict) -> tuple[object, int]:
    """The answer of the first matching rule (or the default) and its index in `rules`."""
    for index, rule in enumerate(rules):
        if "default" in rule:
            return rule["default"], index
        if rule_matches(rule["when"], data):
            return rule["then"], index
    raise NoRuleMatched()
