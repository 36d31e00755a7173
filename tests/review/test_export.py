"""The labelled dataset export: CSV and JSON Lines over HTTP and from `export_labels`,
current labels only unless asked, values that read back exactly, operators only, and a
stream of 100,000 labels within a fixed memory bound."""
from __future__ import annotations

import csv
import io
import json
import re
import tracemalloc

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from gateway.models import PredictionStatus
from gateway.services import prediction_create, routing_update
from review.export import label_export_lines
from review.models import Label, LabelSource
from review.services import label_record
from tests import factories
from tests.gateway.helpers import problem_body

pytestmark = pytest.mark.django_db

HEADER = ["label_id", "prediction_id", "created_at", "source", "created_by", "schema_version",
          "amount", "years_trading", "sector", "has_collateral", "note", "target"]
TRICKY_NOTE = 'Comma, "quotes", a\nnew line, ünïcödé and a formula-looking =SUM(A1)'


@pytest.fixture
def labels(loan, reviewer):
    """Three current labels (one from a reviewer, one with awkward text, one from a
    client outcome) and one superseded by an appeal."""
    user, _ = reviewer
    routing_update(predictor=loan, changes={"mode": "rule"})
    loan.routing.refresh_from_db()
    client, _ = factories.api_client_with_key()

    def prediction(**overrides):
        made, _ = prediction_create(
            predictor=loan, policy=loan.routing, client=client, clean_input=factories.loan_input(**overrides)
        )
        assert made.status == PredictionStatus.ANSWERED
        return made

    first = label_record(prediction=prediction(amount=12000.5), target="approve", source=LabelSource.REVIEW, created_by=user)
    appealed = prediction(amount=3000, has_collateral=True, years_trading=None)
    old = label_record(prediction=appealed, target="approve", source=LabelSource.REVIEW, created_by=user)
    tricky = label_record(prediction=prediction(note=TRICKY_NOTE, sector="other"), target="refer", source=LabelSource.QA,
                          created_by=user)
    outcome = label_record(prediction=prediction(amount=0), target="refer", source=LabelSource.OUTCOME)
    overturned = label_record(prediction=appealed, target="refer", source=LabelSource.APPEAL, created_by=user,
                              supersede=True)
    old.refresh_from_db()
    assert old.superseded_by == overturned
    return {"current": [first, tricky, outcome, overturned], "superseded": old, "user": user}


def _streamed(response) -> str:
    assert response.streaming, "the dataset must be streamed"
    return b"".join(response.streaming_content).decode("utf-8")


def _typed(spec: dict, text: str):
    """What a reader who knows the schema makes of one CSV cell."""
    if text == "":
        return None
    if spec["type"] in ("text", "category"):
        return text
    return json.loads(text)  # numbers and booleans are written as JSON writes them


def test_csv_has_the_declared_columns_current_labels_only_and_values_that_round_trip(loan, labels, operator_api):
    response = operator_api.get("/predictors/loan-approval/dataset", {"format": "csv"})
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert re.fullmatch(r'attachment; filename="loan-approval-labels-\d{8}T\d{6}Z\.csv"', response["Content-Disposition"])
    text = _streamed(response)
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[0] == HEADER == ["label_id", "prediction_id", "created_at", "source", "created_by", "schema_version",
                                 *loan.schema, "target"]
    records = [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]
    assert [int(r["label_id"]) for r in records] == [label.pk for label in labels["current"]]  # id order
    assert labels["superseded"].pk not in {int(r["label_id"]) for r in records}
    for record, label in zip(records, labels["current"], strict=True):
        assert record["prediction_id"] == str(label.prediction_id)
        assert record["source"] == label.source
        assert record["created_by"] == (label.created_by.username if label.created_by else "")
        assert int(record["schema_version"]) == label.schema_version
        assert record["created_at"].endswith("Z")
        assert record["target"] == label.target
        read_back = {name: _typed(spec, record[name]) for name, spec in loan.schema.items()}
        assert read_back == {name: label.input.get(name) for name in loan.schema}
    tricky = records[1]
    assert tricky["note"] == TRICKY_NOTE and tricky["sector"] == "other"
    assert records[0]["amount"] == "12000.5" and records[0]["has_collateral"] == "false"
    assert records[2]["created_by"] == ""  # a client's outcome has no person behind it
    assert records[3]["years_trading"] == "" and records[3]["has_collateral"] == "true"


def test_jsonl_keeps_the_input_object_and_target(loan, labels, operator_api):
    response = operator_api.get("/predictors/loan-approval/dataset", {"format": "jsonl"})
    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-ndjson; charset=utf-8"
    assert response["Content-Disposition"].endswith('.jsonl"')
    lines = _streamed(response).splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["label_id"] for r in records] == [label.pk for label in labels["current"]]
    for record, label in zip(records, labels["current"], strict=True):
        assert list(record) == ["label_id", "prediction_id", "created_at", "source", "created_by", "schema_version",
                                "input", "target"]
        assert record["input"] == label.input
        assert record["target"] == label.target
        assert record["prediction_id"] == str(label.prediction_id)
    assert records[1]["input"]["note"] == TRICKY_NOTE


def test_an_empty_dataset_is_just_the_header(loan, operator_api):
    assert _streamed(operator_api.get("/predictors/loan-approval/dataset", {"format": "csv"})) == ",".join(HEADER) + "\r\n"
    assert _streamed(operator_api.get("/predictors/loan-approval/dataset", {"format": "jsonl"})) == ""


def test_the_dataset_is_for_people_who_may_view_labels(loan, anon_api, client_api, reviewer_api, operator_api):
    problem_body(anon_api.get("/predictors/loan-approval/dataset", {"format": "csv"}), 401)
    problem_body(client_api.get("/predictors/loan-approval/dataset", {"format": "csv"}), 403)
    problem_body(reviewer_api.get("/predictors/loan-approval/dataset", {"format": "csv"}), 403)
    assert operator_api.get("/predictors/loan-approval/dataset", {"format": "csv"}).status_code == 200


@pytest.mark.parametrize("query", [{"format": "xlsx"}, {"format": "json"}, {}, {"format": ""}])
def test_a_bad_format_is_422(loan, operator_api, query):
    body = problem_body(operator_api.get("/predictors/loan-approval/dataset", query), 422)
    assert {e["field"] for e in body["errors"]} == {"format"}


def test_an_unknown_predictor_is_404(operator_api):
    problem_body(operator_api.get("/predictors/nope/dataset", {"format": "csv"}), 404)


def test_the_command_writes_a_file_and_can_include_superseded_labels(loan, labels, tmp_path):
    target = tmp_path / "labels.csv"
    call_command("export_labels", "loan-approval", "--format", "csv", "--output", str(target), verbosity=0)
    rows = list(csv.DictReader(target.open(encoding="utf-8", newline="")))
    assert [int(r["label_id"]) for r in rows] == [label.pk for label in labels["current"]]

    call_command("export_labels", "loan-approval", "--format", "csv", "--output", str(target), "--include-superseded",
                 verbosity=0)
    rows = list(csv.DictReader(target.open(encoding="utf-8", newline="")))
    every = sorted([labels["superseded"], *labels["current"]], key=lambda label: label.pk)
    assert [int(r["label_id"]) for r in rows] == [label.pk for label in every]
    superseded_by = {int(r["label_id"]): r["superseded_by"] for r in rows}
    assert superseded_by[labels["superseded"].pk] == str(labels["superseded"].superseded_by_id)
    assert all(superseded_by[label.pk] == "" for label in labels["current"])


def test_the_command_writes_jsonl_to_stdout(loan, labels):
    out = io.StringIO()
    call_command("export_labels", "loan-approval", "--format", "jsonl", stdout=out)
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["label_id"] for r in records] == [label.pk for label in labels["current"]]
    assert records[0]["created_by"] == labels["user"].username


def test_the_command_refuses_unknown_predictors_and_formats(loan):
    with pytest.raises(CommandError, match="no such predictor"):
        call_command("export_labels", "nope", "--format", "csv", stdout=io.StringIO())
    with pytest.raises(CommandError):
        call_command("export_labels", "loan-approval", "--format", "xlsx", stdout=io.StringIO())


# --- constant memory --------------------------------------------------------------------------

N_LABELS = 100_000
MEMORY_BOUND = 20 * 1024 * 1024  # bytes of Python allocations at the peak


def _many_labels(predictor, n: int) -> None:
    """`n` labels (`amount` 0..n-1, alternating targets), each with a 300-character note, so
    the whole export is far larger than the memory bound. Made by PostgreSQL itself in one
    statement (five times faster than building them in Python); history is not needed."""
    if connection.vendor != "postgresql":
        note, batch = "x" * 300, 10_000
        for start in range(0, n, batch):
            Label.objects.bulk_create(
                Label(predictor=predictor, schema_version=predictor.schema_version, source=LabelSource.IMPORT,
                      input=factories.loan_input(amount=i, note=note), target="approve" if i % 2 else "refer")
                for i in range(start, min(n, start + batch))
            )
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO review_label (predictor_id, schema_version, source, input, target, created_at) "
            "SELECT %s, %s, %s, %s::jsonb || jsonb_build_object('amount', i, 'note', repeat('x', 300)), "
            "to_jsonb(CASE WHEN i %% 2 = 1 THEN 'approve' ELSE 'refer' END), now() "
            "FROM generate_series(0, %s - 1) AS i",
            [predictor.pk, predictor.schema_version, LabelSource.IMPORT, json.dumps(factories.loan_input()), n],
        )


def _measured(consume) -> tuple[int, int, int]:
    """Run consume() under tracemalloc; returns (its result's line count, characters, peak bytes)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        lines, chars = consume()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return lines, chars, peak


def test_100k_labels_stream_within_a_fixed_memory_bound(loan, operator_api):
    _many_labels(loan, N_LABELS)

    def through_http():
        response = operator_api.get("/predictors/loan-approval/dataset", {"format": "csv"})
        assert response.status_code == 200 and response.streaming
        lines = chars = 0
        for piece in response.streaming_content:
            lines += piece.count(b"\r\n")
            chars += len(piece)
        return lines, chars  # the test client closed the response when the stream ended

    lines, chars, peak = _measured(through_http)
    assert lines == N_LABELS + 1  # the header, then one line per label
    assert chars > 1.5 * MEMORY_BOUND  # holding the export whole would break the bound
    assert peak < MEMORY_BOUND, f"peak {peak / 2**20:.1f} MiB"

    # JSON Lines reads the same cursor and only formats rows differently; a pass without
    # tracemalloc (which slows every allocation about sixfold) checks it at this size too.
    lines = sum(1 for _ in label_export_lines(predictor=loan, fmt="jsonl"))
    assert lines == N_LABELS
