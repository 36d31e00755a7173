"""INSERT one new row with a statement compiled once per model and database.

`Model.save()` compiles its INSERT anew on every call (field by field, through the query
compiler), which on /predict cost more CPU than the model itself. `row_insert` does what
`save(force_insert=True)` does for a new row with its primary key set — each field's
`pre_save` (defaults, auto_now_add) and database preparation, then one INSERT — without the
compiler and without the pre_save/post_save signals. Use it only for models whose creation
no signal receiver needs to see: a prediction (django-simple-history skips creations of
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

import orjson
from django.conf import settings
from django.db import connections, router

from config import jsonfast

from .pgsession import session_execute

try:
    from psycopg.types.json import Jsonb
except ImportError:  # no PostgreSQL driver: only the portable path is used
    Jsonb = None

_statements: dict[tuple, tuple[str, list]] = {}
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
        # A key the database assigns is read back as save() does, where the database can.
        returning = not with_pk and connection.features.can_return_columns_from_insert
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
    model = type(instance)
    with_pk = instance.pk is not None
    if not with_pk and not model._meta.pk.db_returning:
        raise ValueError("row_insert needs the primary key set, or one the database assigns")
    alias = router.db_for_write(model, instance=instance)
    connection = connections[alias]
    sql, fields, returning = _statement(model, connection, with_pk=with_pk)
    params = [f.get_db_prep_save(f.pre_save(instance, True), connection) for f in fields]
    if connection.vendor == "postgresql" and settings.OZ_DB_PREPARED_STATEMENTS:
        for param in params:
            if type(param) is Jsonb and param.dumps is json.dumps:  # a JSONField without an encoder of its own
                param.dumps = _json_dumps
        rows, _ = session_execute(connection, sql, params, prepare=True)
        row = rows[0] if returning else None
    else:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            row = cursor.fetchone() if returning else None
    if returning:
        instance.pk = row[0]
    instance._state.adding = False
    instance._state.db = alias


def _json_dumps(value) -> bytes:
    """A JSON column's value as the database receives it (config.jsonfast). Dates and
    dataclasses go to json.dumps too (which refuses them), so no value is stored that the
    standard library would not have stored; a non-finite float becomes null instead of
    failing the INSERT (jsonb has no NaN)."""
    return jsonfast.dumps(value, default=_refuse, option=orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS)


def _refuse(value):
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")

