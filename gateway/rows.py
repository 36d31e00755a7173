"""INSERT new rows with statements compiled once per model and database.

`Model.save()` compiles its INSERT anew on every call (field by field, through the query
compiler), which on /predict cost more CPU than the model itself. `row_insert` does what
`save(force_insert=True)` does for a new row with its primary key set — each field's
`pre_save` (defaults, auto_now_add) and database preparation, then one INSERT — without the
compiler and without the pre_save/post_save signals; `rows_insert` writes several such rows
in one statement. Use them only for models whose creation no signal receiver needs to see:
a prediction and its review tasks (django-simple-history skips creations of
HistoryFromFirstChange models anyway; a test checks no other receiver is connected) and
history rows (gateway.history: no receiver listens for their saves either).

On PostgreSQL (unless DATABASE_PREPARED_STATEMENTS=false) the INSERT is a prepared
statement with its values bound by the server (gateway.pgsession): Django's default
client-side binding quotes every value into the SQL text, which on /predict cost more CPU
than anything else the INSERT does, and the database parsed and planned the same INSERT
anew each time. Its JSON values are written by orjson."""
from __future__ import annotations

import json
import threading
from contextlib import nullcontext

import orjson
from django.conf import settings
from django.db import connections, router, transaction

from config import jsonfast

from .pgsession import session_execute

try:
    from psycopg.types.json import Jsonb
except ImportError:  # no PostgreSQL driver: only the portable path is used
    Jsonb = None

_statements: dict[tuple, tuple[str, list, bool] | str] = {}  # per model, and combined per sequence of models
_lock = threading.Lock()


def _statement(model, connection, *, with_pk: bool) -> tuple[str, list, bool]:
    key = (model, connection.alias, with_pk)
    found = _statements.get(key)
    if found is None:
        fields = [f for f in model._meta.concrete_fields if not f.generated and (with_pk or not f.primary_key)]
        qn = connection.ops.quote_name
        # Identifiers from the model, quoted by the backend; every value is a parameter.
        sql = "INSERT INTO {} ({}) VALUES ({})".format(  # noqa: S608
            qn(model._meta.db_table), ", ".join(qn(f.column) for f in fields), ", ".join(["%s"] * len(fields))
        )
        # A key the database assigns is read back as save() does (_piece refuses a database
        # that cannot).
        returning = not with_pk
        if returning:
            returning_sql, _ = connection.ops.return_insert_columns([model._meta.pk])
            sql = f"{sql} {returning_sql}"
        found = (sql, fields, returning)
        with _lock:
            _statements[key] = found
    return found


def row_insert(instance) -> None:
    """INSERT `instance`, a new row. Its primary key is inserted when set; when it is None
    and the database assigns it (an auto field), the database's value is read back into it."""
    rows_insert(instance)


def rows_insert(*instances) -> None:
    """INSERT new rows, all of them or none, as `row_insert` inserts one (each primary key
    inserted when set, read back when the database assigns it).

    On PostgreSQL with prepared statements, several rows go as one prepared statement, each
    INSERT a data-modifying WITH query of it: one round trip, and atomic without a
    transaction of its own (a prediction and its review task cost one statement, where
    BEGIN, two INSERTs and COMMIT cost four). PostgreSQL runs every such WITH query to
    completion, and checks foreign keys between the rows when the statement ends, so a row
    may refer to one inserted beside it. Elsewhere the rows are inserted one by one in a
    transaction."""
    if not instances:
        return
    connection = connections[_alias(instances)]
    pieces = [_piece(instance, connection) for instance in instances]
    if connection.vendor == "postgresql" and settings.OZ_DB_PREPARED_STATEMENTS:
        sql = pieces[0][0] if len(pieces) == 1 else _combined(instances, pieces, connection)
        params = [param for _, piece_params, _ in pieces for param in piece_params]
        for param in params:
            if type(param) is Jsonb and param.dumps is json.dumps:  # a JSONField without an encoder of its own
                param.dumps = _json_dumps
        rows, _ = session_execute(connection, sql, params, prepare=True)
        returned = iter(rows[0] if rows else ())
    else:
        with transaction.atomic(using=connection.alias) if len(pieces) > 1 else nullcontext():
            returned = iter([value for piece in pieces for value in _portable_insert(connection, *piece)])
    for instance, (_, _, returning) in zip(instances, pieces, strict=True):
        if returning:
            instance.pk = next(returned)
        instance._state.adding = False
        instance._state.db = connection.alias


def _alias(instances) -> str:
    aliases = {router.db_for_write(type(i), instance=i) for i in instances}
    if len(aliases) != 1:
        raise ValueError(f"rows_insert writes to one database; these rows go to {sorted(aliases)}")
    return aliases.pop()


def _piece(instance, connection) -> tuple[str, list, bool]:
    """One row's INSERT, its parameters, and whether it returns the database's key."""
    model = type(instance)
    with_pk = instance.pk is not None
    if not with_pk and not (model._meta.pk.db_returning and connection.features.can_return_columns_from_insert):
        raise ValueError("row_insert needs the primary key set, or one the database assigns and returns")
    sql, fields, returning = _statement(model, connection, with_pk=with_pk)
    return sql, [f.get_db_prep_save(f.pre_save(instance, True), connection) for f in fields], returning


def _portable_insert(connection, sql: str, params: list, returning: bool) -> tuple:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone() if returning else ()


def _combined(instances, pieces: list, connection) -> str:
    """The rows' INSERTs as one statement: `WITH r0 AS (INSERT …), r1 AS (INSERT … RETURNING
    id) SELECT (SELECT id FROM r1)`, compiled once per sequence of models."""
    key = ("combined", connection.alias, tuple((type(i), i.pk is not None) for i in instances))
    found = _statements.get(key)
    if found is None:
        qn = connection.ops.quote_name
        parts, selected = [], []
        for number, (sql, _, returning) in enumerate(pieces):
            parts.append(f"{qn(f'r{number}')} AS ({sql})")
            if returning:
                # The RETURNING clause names the key's column: read it back by position.
                selected.append(f"(SELECT * FROM {qn(f'r{number}')})")  # noqa: S608 (names made here)
        # Each WITH query runs whether or not the SELECT reads it.
        found = "WITH {} SELECT {}".format(", ".join(parts), ", ".join(selected) if selected else "NULL")
        with _lock:
            _statements[key] = found
    return found


def _json_dumps(value) -> bytes:
    """A JSON column's value as the database receives it (config.jsonfast). Dates and
    dataclasses go to json.dumps too (which refuses them), so no value is stored that the
    standard library would not have stored; a non-finite float becomes null instead of
    failing the INSERT (jsonb has no NaN)."""
    return jsonfast.dumps(value, default=_refuse, option=orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS)


def _refuse(value):
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")

