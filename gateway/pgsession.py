"""Statements run on a PostgreSQL connection's own psycopg session, their values bound by
the server and, where asked, prepared by psycopg.

Django's PostgreSQL cursors bind on the client (every value is quoted into the SQL text)
and never prepare, so the database parses and plans the same statement anew each time.
The two statements Oz runs most — the INSERT of a prediction and claim-next — go through
`session_execute` instead. psycopg keeps what it prepared per session and forgets it when
the session rolls back (a ROLLBACK makes it send DEALLOCATE ALL, since an object the plan
refers to may have been dropped); the next run prepares again. A new session (after a
reconnect) starts with none.

psycopg prepares only where the connection allows it: settings `database_prepared_statements`
sets a `prepare_threshold` no statement reaches, so nothing is prepared unless it asks (with
DATABASE_PREPARED_STATEMENTS=false none is set, and psycopg prepares nothing). With a
threshold set, psycopg also counts the statements Django's own cursors send (the 100 most
recent distinct texts per connection, never prepared) and sends DEALLOCATE ALL after a
ROLLBACK TO SAVEPOINT as after a ROLLBACK. psycopg keys a prepared statement by its text and
its parameters' types, so a statement run with a NULL where it once had a value is
prepared a second time.

What Django's cursor adds that matters is kept: its checks that the transaction is usable
and that no async code calls in, its error classes (a database outage is
django.db.OperationalError, answered 503 by the middleware), the connection's execute
wrappers, and its query log (DEBUG, assertNumQueries)."""
from __future__ import annotations

import logging
import time
from functools import partial

logger = logging.getLogger("django.db.backends")


def session_execute(connection, sql: str, params, *, prepare: bool) -> tuple[list[tuple], list[str]]:
    """Run `sql` (with %s placeholders) and `params` on `connection`'s psycopg session; the
    rows it returns and their column names (both empty for a statement that returns none)."""
    import psycopg

    connection.validate_no_broken_transaction()
    with connection.wrap_database_errors:
        connection.close_if_health_check_failed()  # as Django's cursor: a stale connection reconnects
        connection.ensure_connection()
        connection.validate_thread_sharing()
        cursor = psycopg.Cursor(connection.connection)
        try:
            def execute(sql, params, many, context):
                return cursor.execute(sql, params, prepare=prepare)

            executor = execute
            for wrapper in reversed(connection.execute_wrappers):
                executor = partial(wrapper, executor)
            if connection.queries_logged:
                _logged(connection, cursor, executor, sql, params)
            else:
                executor(sql, params, False, {"connection": connection, "cursor": cursor})
            description = cursor.description  # built anew on each access
            if description is None:
                return [], []
            return cursor.fetchall(), [column.name for column in description]
        finally:
            cursor.close()


def _logged(connection, cursor, executor, sql: str, params) -> None:
    """As Django's CursorDebugWrapper: the statement, as sent, in the connection's log."""
    start = time.monotonic()
    try:
        executor(sql, params, False, {"connection": connection, "cursor": cursor})
    finally:
        duration = time.monotonic() - start
        try:
            shown = connection.ops.compose_sql(sql, params)  # with its values, as Django shows them
        except Exception:  # a value the client-side quoting refuses
            shown = sql
        connection.queries_log.append({"sql": shown, "time": f"{duration:.3f}"})
        logger.debug("(%.3f) %s; args=%s; alias=%s", duration, shown, params, connection.alias,
                     extra={"duration": duration, "sql": shown, "params": params, "alias": connection.alias})

