"""INSERT one new row with a statement compiled once per model and database.

`Model.save()` compiles its INSERT anew on every call (field by field, through the query
compiler), which on /predict cost more CPU than the model itself. `row_insert` does what
`save(force_insert=True)` does for a new row with its primary key set — each field's
`pre_save` (defaults, auto_now_add) and database preparation, then one INSERT — without the
compiler and without the pre_save/post_save signals. Use it only for models whose creation
no signal receiver needs to see: a prediction (django-simple-history skips creations of
HistoryFromFirstChange models anyway; a test checks no other receiver is connected)."""
from __future__ import annotations

import threading

from django.db import connections, router

_statements: dict[tuple, tuple[str, list]] = {}
_lock = threading.Lock()


def _statement(model, connection) -> tuple[str, list]:
    key = (model, connection.alias)
    found = _statements.get(key)
    if found is None:
        fields = [f for f in model._meta.concrete_fields if not f.generated]
        qn = connection.ops.quote_name
        # Identifiers from the model, quoted by the backend; every value is a parameter.
        sql = "INSERT INTO {} ({}) VALUES ({})".format(  # noqa: S608
            qn(model._meta.db_table), ", ".join(qn(f.column) for f in fields), ", ".join(["%s"] * len(fields))
        )
        found = (sql, fields)
        with _lock:
            _statements[key] = found
    return found


def row_insert(instance) -> None:
    """INSERT `instance` (a new row whose primary key is already set)."""
    model = type(instance)
    if instance.pk is None:
        raise ValueError("row_insert needs the primary key set")
    alias = router.db_for_write(model, instance=instance)
    connection = connections[alias]
    sql, fields = _statement(model, connection)
    params = [f.get_db_prep_save(f.pre_save(instance, True), connection) for f in fields]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
    instance._state.adding = False
    instance._state.db = alias
