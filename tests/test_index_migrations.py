"""The index changes migrations make on busy tables (gateway/index_migrations.py): built and
dropped CONCURRENTLY on PostgreSQL, so /predict's INSERTs never wait on them, and a build
that was interrupted (an invalid index left under the name) is built again."""
from __future__ import annotations

import pytest
from django.db import connection

from gateway.index_migrations import IndexSpec, index_build, index_drop, index_swap

SPEC = IndexSpec("oz_test_decision_reviewer_idx", "review_decision", ("reviewer_id",))


def _state(name: str):
    with connection.cursor() as cursor:
        cursor.execute("SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = %s",
                       [name])
        row = cursor.fetchone()
    return None if row is None else ("valid" if row[0] else "invalid")


def _run(action, *args):
    executed = []
    with connection.schema_editor(atomic=False, collect_sql=False) as editor:
        original = editor.execute

        def execute(sql, params=()):
            executed.append(str(sql))
            return original(sql, params)

        editor.execute = execute
        action(editor, *args)
    return executed


@pytest.mark.django_db(transaction=True)
def test_an_index_is_built_and_dropped_concurrently():
    built = _run(index_build, SPEC)
    assert [s for s in built if s.startswith("CREATE INDEX")] == [
        'CREATE INDEX CONCURRENTLY IF NOT EXISTS "oz_test_decision_reviewer_idx" ON "review_decision" ("reviewer_id")'
    ]
    assert _state(SPEC.name) == "valid"
    _run(index_build, SPEC)  # again: nothing to do
    assert _state(SPEC.name) == "valid"
    assert _run(index_drop, SPEC) == ['DROP INDEX CONCURRENTLY IF EXISTS "oz_test_decision_reviewer_idx"']
    assert _state(SPEC.name) is None


@pytest.mark.django_db(transaction=True)
def test_an_index_left_invalid_by_an_interrupted_build_is_built_again():
    _run(index_build, SPEC)
    with connection.cursor() as cursor:  # as CREATE INDEX CONCURRENTLY leaves it when cancelled
        cursor.execute("UPDATE pg_index SET indisvalid = false WHERE indexrelid = %s::regclass", [SPEC.name])
    assert _state(SPEC.name) == "invalid"
    _run(index_build, SPEC)
    assert _state(SPEC.name) == "valid"
    _run(index_drop, SPEC)


@pytest.mark.django_db(transaction=True)
def test_a_swap_builds_the_new_index_before_dropping_the_old_and_reverses():
    old = IndexSpec("oz_test_old_idx", "review_decision", ("reviewer_id",))
    new = IndexSpec("oz_test_new_idx", "review_decision", ("reviewer_id", "created_at"))
    swap = index_swap(build=[new], drop=[old])
    _run(index_build, old)
    steps = _run(lambda editor: swap.code(None, editor))
    assert [s.split('"')[1] for s in steps if s.startswith(("CREATE", "DROP"))] == ["oz_test_new_idx", "oz_test_old_idx"]
    assert (_state(new.name), _state(old.name)) == ("valid", None)
    steps = _run(lambda editor: swap.reverse_code(None, editor))
    assert [s.split('"')[1] for s in steps if s.startswith(("CREATE", "DROP"))] == ["oz_test_old_idx", "oz_test_new_idx"]
    assert (_state(new.name), _state(old.name)) == (None, "valid")
    _run(index_drop, old)


@pytest.mark.django_db
def test_the_migrated_tables_keep_one_index_for_each_lookup():
    # What the migrations left: no index duplicated by another that leads with its column.
    with connection.cursor() as cursor:
        prediction = connection.introspection.get_constraints(cursor, "gateway_prediction")
        decision = connection.introspection.get_constraints(cursor, "review_decision")
    singles = [c["columns"] for c in prediction.values() if c["index"] and len(c["columns"]) == 1]
    assert ["predictor_id"] not in singles and singles.count(["appeal_token_sha256"]) == 1
    assert ["task_id"] not in [c["columns"] for c in decision.values() if c["index"]]
