"""Index changes on tables that take writes all the time (predictions, decisions), for
migrations: without a table lock held for the length of a build.

Django's AddIndex, and AlterField when it changes only `db_index` (which also drops and
re-adds the column's foreign key, re-checking every row), hold locks that stop every
/predict INSERT until they finish. Here, on PostgreSQL, each index is built and dropped
CONCURRENTLY (the migration must be `atomic = False`), and foreign keys are left alone;
elsewhere (SQLite, `make run`) the same statements run plainly. Use them as the
database side of a SeparateDatabaseAndState whose state side is the ordinary operations.

If a concurrent build is interrupted, PostgreSQL keeps an invalid index under the name;
`index_build` drops such a leftover and builds it again."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class IndexSpec:
    name: str
    table: str
    columns: tuple[str, ...]
    # PostgreSQL only (an operator class such as varchar_pattern_ops); the index is skipped
    # on other databases, as Django does for its LIKE twins.
    opclass: str = ""


def _concurrently(schema_editor) -> str:
    return "CONCURRENTLY " if schema_editor.connection.vendor == "postgresql" else ""


def index_build(schema_editor, spec: IndexSpec) -> None:
    postgresql = schema_editor.connection.vendor == "postgresql"
    if spec.opclass and not postgresql:
        return
    qn = schema_editor.quote_name
    if postgresql:
        with schema_editor.connection.cursor() as cursor:
            cursor.execute(
                "SELECT NOT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = %s",
                [spec.name],
            )
            row = cursor.fetchone()
        if row and row[0]:  # left invalid by an interrupted build
            index_drop(schema_editor, spec)
    columns = ", ".join(f"{qn(c)} {spec.opclass}".rstrip() for c in spec.columns)
    schema_editor.execute(
        f"CREATE INDEX {_concurrently(schema_editor)}IF NOT EXISTS {qn(spec.name)} ON {qn(spec.table)} ({columns})"
    )


def index_drop(schema_editor, spec: IndexSpec) -> None:
    schema_editor.execute(f"DROP INDEX {_concurrently(schema_editor)}IF EXISTS {schema_editor.quote_name(spec.name)}")


def index_swap(*, build: list[IndexSpec], drop: list[IndexSpec]):
    """The database side of a migration replacing the `drop` indexes with the `build` ones:
    the new are built before the old go, both ways. The migration must be `atomic = False`."""
    from django.db import migrations

    def forwards(apps, schema_editor):
        for spec in build:
            index_build(schema_editor, spec)
        for spec in drop:
            index_drop(schema_editor, spec)

    def backwards(apps, schema_editor):
        for spec in drop:
            index_build(schema_editor, spec)
        for spec in build:
            index_drop(schema_editor, spec)

    return migrations.RunPython(forwards, backwards, atomic=False)
