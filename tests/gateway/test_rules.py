"""gateway.rules: the rule stub. First match wins, conditions of a rule are ANDed, a
missing field is null (matches only `is_null: true`), and `default` catches the rest."""
from __future__ import annotations

import pytest

from gateway.rules import NoRuleMatched, rule_matches, rules_evaluate


@pytest.mark.parametrize(
    "op, operand, value, expected",
    [
        ("eq", 5, 5, True),
        ("eq", 5, 6, False),
        ("eq", "food", "food", True),
        ("eq", "food", "Food", False),
        ("eq", True, True, True),
        ("eq", True, False, False),
        ("ne", 5, 6, True),
        ("ne", 5, 5, False),
        ("ne", "food", "retail", True),
        ("lt", 5000, 4999.99, True),
        ("lt", 5000, 5000, False),
        ("lt", 5000, 5001, False),
        ("le", 5000, 5000, True),
        ("le", 5000, 5000.01, False),
        ("gt", 3, 4, True),
        ("gt", 3, 3, False),
        ("ge", 3, 3, True),
        ("ge", 3, 2, False),
        ("ge", 2.5, 3, True),  # int against float
        ("in", ["food", "retail"], "food", True),
        ("in", ["food", "retail"], "other", False),
        ("in", [1, 2], 2, True),
        ("not_in", ["food", "retail"], "other", True),
        ("not_in", ["food", "retail"], "food", False),
        ("contains", "urgent", "This is URGENT, please", True),  # case-insensitive
        ("contains", "urgent", "no hurry", False),
        ("contains", "straße", "STRASSE 5", True),  # casefold, not lower
        ("is_null", True, None, True),
        ("is_null", True, 0, False),
        ("is_null", True, "", False),
        ("is_null", False, 0, True),
        ("is_null", False, False, True),
        ("is_null", False, None, False),
    ],
)
def test_each_operator(op, operand, value, expected):
    assert rule_matches({"x": {op: operand}}, {"x": value}) is expected


@pytest.mark.parametrize(
    "op, operand",
    [("eq", 1), ("eq", None), ("ne", 1), ("lt", 1), ("le", 1), ("gt", 1), ("ge", 1),
     ("in", [1]), ("not_in", [1]), ("contains", "a"), ("is_null", False)],
)
def test_a_missing_field_matches_no_comparison(op, operand):
    # Not even `ne` or `not_in`: an unknown value is not "different".
    assert rule_matches({"x": {op: operand}}, {}) is False
    assert rule_matches({"x": {op: operand}}, {"x": None}) is False


def test_a_missing_field_matches_is_null_true():
    assert rule_matches({"x": {"is_null": True}}, {}) is True
    assert rule_matches({"x": {"is_null": True}}, {"y": 1}) is True


def test_conditions_within_a_rule_are_anded():
    when = {"amount": {"lt": 5000}, "has_collateral": {"eq": True}}
    assert rule_matches(when, {"amount": 1000, "has_collateral": True})
    assert not rule_matches(when, {"amount": 1000, "has_collateral": False})
    assert not rule_matches(when, {"amount": 9000, "has_collateral": True})
    assert not rule_matches(when, {"amount": 1000})


def test_several_operators_on_one_field_are_anded():
    when = {"amount": {"ge": 10, "lt": 20}}
    assert rule_matches(when, {"amount": 10})
    assert rule_matches(when, {"amount": 19.5})
    assert not rule_matches(when, {"amount": 9})
    assert not rule_matches(when, {"amount": 20})


RULES = [
    {"when": {"amount": {"lt": 5000}, "has_collateral": {"eq": True}}, "then": "approve"},
    {"when": {"amount": {"lt": 20000}, "years_trading": {"ge": 3}}, "then": "approve"},
    {"when": {"amount": {"lt": 20000}}, "then": "refer"},
    {"when": {"amount": {"lt": 50000}}, "then": "approve"},  # never reached for < 20000
    {"default": "decline"},
]


@pytest.mark.parametrize(
    "data, answer, index",
    [
        ({"amount": 1000, "has_collateral": True}, "approve", 0),
        ({"amount": 1000, "has_collateral": True, "years_trading": 0}, "approve", 0),
        ({"amount": 1000, "has_collateral": False, "years_trading": 5}, "approve", 1),
        ({"amount": 1000, "has_collateral": False, "years_trading": 1}, "refer", 2),
        ({"amount": 1000}, "refer", 2),  # missing years_trading: rule 1 does not match
        ({"amount": 30000, "years_trading": 10}, "approve", 3),
        ({"amount": 90000, "has_collateral": True}, "decline", 4),
        ({}, "decline", 4),
    ],
)
def test_first_matching_rule_wins_then_default(data, answer, index):
    assert rules_evaluate(RULES, data) == (answer, index)


def test_the_default_alone_answers_everything():
    assert rules_evaluate([{"default": 0.5}], {"anything": 1}) == (0.5, 0)


def test_no_match_without_default_raises():
    with pytest.raises(NoRuleMatched):
        rules_evaluate([{"when": {"x": {"eq": 1}}, "then": "a"}], {"x": 2})
    with pytest.raises(NoRuleMatched):
        rules_evaluate([], {"x": 2})
