"""The labelled dataset as a stream of CSV or JSON Lines, in constant memory.

Rows come from a server-side cursor (`QuerySet.iterator`) in id order, a chunk at a time,
and are formatted one by one; nothing holds the whole set. The HTTP view
(`GET /predictors/<slug>/dataset`) and `manage.py export_labels` both read from here.

Columns: label_id, prediction_id, created_at, source, created_by (username or empty),
schema_version, then each input field of the predictor's schema in declared order (CSV) or
one `input` object (JSONL), then target; with superseded labels included, a last
`superseded_by` column says which label replaced each one. CSV cells hold JSON scalars as
text (true/false, numbers as JSON writes them, empty for null; lists and objects as JSON),
so they read back exactly; input fields that are not in the current schema (labels of an
older schema version) appear only in JSONL.

Spreadsheet-safe CSV (opt-in): a spreadsheet runs a cell starting with = + - @, a tab or a
carriage return as a formula (CSV injection), and labels hold text clients wrote. With
`spreadsheet_safe`, such text cells (input and target strings, usernames, header names) get a
leading `'`, which spreadsheets read as "this is text"; numbers and booleans are never
touched, so `-3.5` stays a number. It is off by default because it changes the data: the
plain export feeds training and data pipelines byte for byte."""
from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime

from django.utils import timezone

from gateway.models import Predictor

from .models import Label

FORMATS = ("csv", "jsonl")
CONTENT_TYPES = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson; charset=utf-8"}
CHUNK_SIZE = 2000
# Lines are handed out in pieces of about this many characters: far fewer, larger writes
# than one per row, and still a small, fixed amount of memory.
PIECE_CHARS = 64 * 1024

# What makes a spreadsheet read a cell as a formula (OWASP, "CSV Injection").
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")

LEADING_COLUMNS = ("label_id", "prediction_id", "created_at", "source", "created_by", "schema_version")
_VALUES = ("id", "prediction_id", "created_at", "source", "created_by__username", "schema_version", "input", "target")


def labels_for_export(*, predictor: Predictor, include_superseded: bool = False) -> Iterator[tuple]:
    """Value tuples (id, prediction_id, created_at, source, username, schema_version,
    input, target[, superseded_by_id]) of the predictor's current labels (all labels with
    `include_superseded`), in id order, read through a server-side cursor in chunks."""
    labels = Label.objects.filter(predictor=predictor)
    fields = _VALUES
    if include_superseded:
        fields = (*_VALUES, "superseded_by_id")
    else:
        labels = labels.filter(superseded_by__isnull=True)  # label_current_idx fits this
    return labels.order_by("id").values_list(*fields).iterator(chunk_size=CHUNK_SIZE)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def csv_cell(value, *, spreadsheet_safe: bool = False) -> str:
    """A JSON value as CSV text that reads back unambiguously (see the module docstring):
    what json.dumps writes, with the common scalars done directly (this runs per cell).
    `spreadsheet_safe` quotes formula-looking text here, the one place a str becomes a
    cell, so the numbers rendered below are never quoted."""
    if value is None:
        return ""
    if isinstance(value, str):
        if spreadsheet_safe and value.startswith(FORMULA_PREFIXES):
            return "'" + value
        return value
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def input_columns(predictor: Predictor) -> list[str]:
    """The CSV names of the input fields, in declared order; a field whose name clashes
    with a fixed column is written as `input.<name>`."""
    fixed = {*LEADING_COLUMNS, "target", "superseded_by"}
    return [f"input.{name}" if name in fixed else name for name in predictor.schema]


class _Line:
    """The csv writer's file: write() hands the formatted row back instead of storing it."""

    def write(self, text: str) -> str:
        return text


def _csv_lines(predictor: Predictor, include_superseded: bool, safe: bool) -> Iterator[str]:
    writer = csv.writer(_Line())
    names = list(predictor.schema)
    header = [*LEADING_COLUMNS, *input_columns(predictor), "target"]
    if include_superseded:
        header.append("superseded_by")
    yield writer.writerow([csv_cell(name, spreadsheet_safe=safe) for name in header])
    for row in labels_for_export(predictor=predictor, include_superseded=include_superseded):
        label_id, prediction_id, created_at, source, username, schema_version, data, target = row[:8]
        data = data if isinstance(data, dict) else {}
        cells = [
            label_id, prediction_id or "", _iso(created_at), source, csv_cell(username, spreadsheet_safe=safe),
            schema_version, *(csv_cell(data.get(name), spreadsheet_safe=safe) for name in names),
            csv_cell(target, spreadsheet_safe=safe),
        ]
        if include_superseded:
            cells.append(row[8] or "")
        yield writer.writerow(cells)


def _jsonl_lines(predictor: Predictor, include_superseded: bool) -> Iterator[str]:
    for row in labels_for_export(predictor=predictor, include_superseded=include_superseded):
        label_id, prediction_id, created_at, source, username, schema_version, data, target = row[:8]
        record = {
            "label_id": label_id,
            "prediction_id": str(prediction_id) if prediction_id else None,
            "created_at": _iso(created_at),
            "source": source,
            "created_by": username or "",
            "schema_version": schema_version,
            "input": data,
            "target": target,
        }
        if include_superseded:
            record["superseded_by"] = row[8]
        yield json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"


def label_export_lines(
    *, predictor: Predictor, fmt: str, include_superseded: bool = False, spreadsheet_safe: bool = False
) -> Iterator[str]:
    """The export one line at a time (CSV: the header first; lines end in CRLF as RFC 4180
    says; JSONL: one object per line). Lazy: the query runs when iteration starts.
    `spreadsheet_safe` is CSV only: JSON Lines is not opened in spreadsheets, and quoting
    there would only corrupt the data."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    if fmt == "csv":
        return _csv_lines(predictor, include_superseded, spreadsheet_safe)
    if spreadsheet_safe:
        raise ValueError("spreadsheet_safe applies to csv only")
    return _jsonl_lines(predictor, include_superseded)


def label_export_pieces(
    *, predictor: Predictor, fmt: str, include_superseded: bool = False, spreadsheet_safe: bool = False
) -> Iterator[str]:
    """The same text in pieces of about PIECE_CHARS characters, for streaming responses
    and files."""
    buffer: list[str] = []
    size = 0
    lines = label_export_lines(
        predictor=predictor, fmt=fmt, include_superseded=include_superseded, spreadsheet_safe=spreadsheet_safe
    )
    for line in lines:
        buffer.append(line)
        size += len(line)
        if size >= PIECE_CHARS:
            yield "".join(buffer)
            buffer.clear()
            size = 0
    if buffer:
        yield "".join(buffer)


def label_export_filename(*, predictor: Predictor, fmt: str, now: datetime | None = None) -> str:
    stamp = (now or timezone.now()).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{predictor.slug}-labels-{stamp}.{fmt}"
