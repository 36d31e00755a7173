"""gateway.rows.rows_insert: several new rows written all together or not at all, each key
the database assigns read back into its row; on PostgreSQL as one statement, elsewhere (or
with prepared statements off, as behind PgBouncer in transaction mode) in a transaction.
These tests run in autocommit, as /predict does: no transaction of the test's own hides a
row left half-written."""
from __future__ import annotations

import uuid

import pytest
from django.db import IntegrityError

from gateway.appeal_tokens import appeal_token, appeal_token_sha256
from gateway.models import Prediction
from gateway.rows import rows_insert
from review.models import ReviewTask, TaskKind
from review.services import review_task_build
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)

PATHS = pytest.mark.parametrize("one_statement", [True, False], ids=["one statement", "portable path"])


def _new_prediction(like: Prediction) -> Prediction:
    new_id = uuid.uuid4()
    prediction = Prediction(
        id=new_id, appeal_token_sha256=appeal_token_sha256(appeal_token(new_id)), predictor=like.predictor,
        client=like.client, schema_version=like.schema_version, input=like.input, route=like.route,
    )
    return prediction


@pytest.fixture
def stored(loan, client_api) -> Prediction:
    body = client_api.post("/predict/loan-approval", {"input": factories.loan_input()}, format="json").json()
    return Prediction.objects.select_related("predictor").get(pk=body["id"])


@PATHS
def test_a_prediction_and_its_tasks_land_together_with_their_keys_read_back(stored, settings, one_statement):
    settings.OZ_DB_PREPARED_STATEMENTS = one_statement
    prediction = _new_prediction(stored)
    routed = review_task_build(prediction=prediction, kind=TaskKind.ROUTED, reason="routed here")
    sampled = review_task_build(prediction=prediction, kind=TaskKind.QA_SAMPLE, reason="sampled here",
                                suggestion={"output": "approve"})

    rows_insert(prediction, routed, sampled)

    assert routed.pk is not None and sampled.pk is not None and routed.pk != sampled.pk
    assert not routed._state.adding and routed._state.db == "default"
    # Each key is the one the database gave that row (a task refers to the prediction beside it).
    assert ReviewTask.objects.get(pk=routed.pk).reason == "routed here"
    assert ReviewTask.objects.get(pk=sampled.pk).suggestion == {"output": "approve"}
    assert set(ReviewTask.objects.filter(prediction=prediction).values_list("pk", flat=True)) == {routed.pk, sampled.pk}
    assert Prediction.objects.get(pk=prediction.pk).input == stored.input


@PATHS
def test_when_one_row_fails_none_is_written(stored, settings, one_statement):
    settings.OZ_DB_PREPARED_STATEMENTS = one_statement
    existing = ReviewTask.objects.get(prediction=stored)
    prediction = _new_prediction(stored)
    clash = review_task_build(prediction=prediction, reason="a key already taken")
    clash.pk = existing.pk

    with pytest.raises(IntegrityError):
        rows_insert(prediction, clash)

    assert not Prediction.objects.filter(pk=prediction.pk).exists()
    assert ReviewTask.objects.get(pk=existing.pk).prediction_id == stored.pk
    # The connection goes on: the next rows are written.
    again = _new_prediction(stored)
    task = review_task_build(prediction=again, reason="after the failure")
    rows_insert(again, task)
    assert ReviewTask.objects.get(pk=task.pk).prediction_id == again.pk
