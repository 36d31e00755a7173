"""The opt-in spreadsheet-safe CSV export (CSV injection): text a client wrote that a
spreadsheet would run as a formula gets a leading quote, only when asked, only in CSV, and
never on numbers; the default export stays byte for byte what it was."""
from __future__ import annotations

import csv
import io

import pytest
from django.core.management import CommandError, call_command

from gateway.models import Predictor
from review.export import csv_cell, label_export_lines
from review.models import Label, LabelSource
from tests import factories
from tests.gateway.helpers import problem_body

pytestmark = pytest.mark.django_db

DATASET = "/predictors/loan-approval/dataset"
FORMULA = "=HYPERLINK(\"http://evil.example\",\"click\")"
DANGEROUS = ["=", "+", "-", "@", "\t", "\r"]


def _label(predictor, *, target="approve", created_by=None, **input_overrides) -> Label:
    return Label.objects.create(
        predictor=predictor, schema_version=predictor.schema_version, source=LabelSource.IMPORT,
        input=factories.loan_input(**input_overrides), target=target, created_by=created_by,
    )


def _text(response) -> str:
    assert response.status_code == 200, response.content[:500]
    return b"".join(response.streaming_content).decode("utf-8")


def _records(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


def _csv(api, **query) -> str:
    return _text(api.get(DATASET, {"format": "csv", **query}))


def test_the_default_export_leaves_formula_looking_text_as_it_is(loan, operator_api):
    _label(loan, note=FORMULA, amount=-3.5)
    default = _csv(operator_api)
    assert _records(default)[0]["note"] == FORMULA
    # Saying no is the default, to the byte.
    assert _csv(operator_api, spreadsheet_safe="false") == default
    assert _csv(operator_api, spreadsheet_safe="0") == default


@pytest.mark.parametrize("prefix", DANGEROUS)
@pytest.mark.parametrize("value", ["true", "1"])
def test_safe_mode_quotes_text_starting_with_each_dangerous_character(loan, operator_api, prefix, value):
    note = f"{prefix}cmd|' /C calc'!A0"
    _label(loan, note=note, target=f"{prefix}refer")
    record = _records(_csv(operator_api, spreadsheet_safe=value))[0]
    assert record["note"] == "'" + note
    assert record["target"] == f"'{prefix}refer"
    assert record["sector"] == "food"  # harmless text is left alone


def test_safe_mode_leaves_harmless_text_and_every_number_alone(loan, operator_api):
    _label(loan, note="a = b, -1 and @home", amount=-3.5, years_trading=-3, has_collateral=True)
    _label(loan, note="-3.5", amount=-0.25, target=-1)
    first, second = _records(_csv(operator_api, spreadsheet_safe="true"))
    assert first["note"] == "a = b, -1 and @home"
    assert (first["amount"], first["years_trading"], first["has_collateral"]) == ("-3.5", "-3", "true")
    # The same characters as text are quoted; as numbers they stay numbers.
    assert (second["note"], second["amount"], second["target"]) == ("'-3.5", "-0.25", "-1")


def test_safe_mode_quotes_usernames_and_header_names_too(loan, operator_api):
    # Usernames may start with - + or @ (create_reviewer takes "-2+3"); schema field names
    # cannot (the definition is checked), so that one is set directly: defence in depth.
    user, _ = factories.reviewer_with_token("-2+3")
    Predictor.objects.filter(pk=loan.pk).update(input_schema={**loan.input_schema, "@note": {"type": "text"}})
    loan.refresh_from_db()
    _label(loan, created_by=user, **{"@note": "x"})
    rows = list(csv.reader(io.StringIO(_csv(operator_api, spreadsheet_safe="true"), newline="")))
    assert rows[0][-2:] == ["'@note", "target"]
    assert rows[1][4] == "'-2+3" and rows[1][-2] == "x"
    assert rows[0][:6] == ["label_id", "prediction_id", "created_at", "source", "created_by", "schema_version"]
    plain = list(csv.reader(io.StringIO(_csv(operator_api), newline="")))
    assert plain[0][-2] == "@note" and plain[1][4] == "-2+3"


def test_csv_cell_quotes_strings_only():
    assert [csv_cell(f"{p}x", spreadsheet_safe=True) for p in DANGEROUS] == [f"'{p}x" for p in DANGEROUS]
    assert [csv_cell(f"{p}x") for p in DANGEROUS] == [f"{p}x" for p in DANGEROUS]
    assert [csv_cell(v, spreadsheet_safe=True) for v in (-3, -3.5, False, None, ["=x"], "")] == [
        "-3", "-3.5", "false", "", '["=x"]', ""]


def test_the_download_is_still_named_and_typed_as_csv(loan, operator_api):
    response = operator_api.get(DATASET, {"format": "csv", "spreadsheet_safe": "true"})
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="loan-approval-labels-')
    assert response["Content-Disposition"].endswith('.csv"')


def test_jsonl_refuses_safe_mode_but_takes_a_no(loan, operator_api):
    _label(loan, note=FORMULA)
    body = problem_body(operator_api.get(DATASET, {"format": "jsonl", "spreadsheet_safe": "true"}), 422)
    assert body["errors"] == [{"field": "spreadsheet_safe", "message": "applies to format=csv only"}]
    plain = _text(operator_api.get(DATASET, {"format": "jsonl"}))
    assert FORMULA.replace('"', '\\"') in plain
    assert _text(operator_api.get(DATASET, {"format": "jsonl", "spreadsheet_safe": "false"})) == plain
    with pytest.raises(ValueError, match="csv only"):  # the export itself refuses too, for other callers
        label_export_lines(predictor=loan, fmt="jsonl", spreadsheet_safe=True)


@pytest.mark.parametrize("value", ["", "yes", "TRUE", "True", "2", "on", "true "])
def test_a_bad_value_is_422_on_that_field(loan, operator_api, value):
    body = problem_body(operator_api.get(DATASET, {"format": "csv", "spreadsheet_safe": value}), 422)
    assert body["errors"] == [{"field": "spreadsheet_safe", "message": "must be true or false"}]


def test_the_schema_declares_a_boolean_query_parameter(anon_api):
    schema = anon_api.get("/api/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    parameters = schema["paths"]["/predictors/{slug}/dataset"]["get"]["parameters"]
    declared = next(p for p in parameters if p["name"] == "spreadsheet_safe")
    assert declared["in"] == "query" and declared["schema"]["type"] == "boolean"
    assert not declared.get("required", False)


def test_the_command_flag_quotes_text_and_refuses_jsonl(loan, tmp_path):
    _label(loan, note=FORMULA, amount=-3.5)
    plain, safe = tmp_path / "plain.csv", tmp_path / "safe.csv"
    call_command("export_labels", "loan-approval", "--format", "csv", "--output", str(plain), verbosity=0)
    call_command("export_labels", "loan-approval", "--format", "csv", "--output", str(safe), "--spreadsheet-safe",
                 verbosity=0)
    (plain_record,) = _records(plain.read_text(encoding="utf-8"))
    (safe_record,) = _records(safe.read_text(encoding="utf-8"))
    assert plain_record["note"] == FORMULA
    assert safe_record["note"] == "'" + FORMULA and safe_record["amount"] == "-3.5"
    with pytest.raises(CommandError, match="csv only"):
        call_command("export_labels", "loan-approval", "--format", "jsonl", "--spreadsheet-safe", stdout=io.StringIO())
