"""Statements Oz runs on psycopg's own session (the prediction INSERT, claim-next) stay
visible and behave as Django's cursor would: logged, wrapped, and failing with Django's
error classes."""
from __future__ import annotations

import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from gateway.models import Prediction
from review.services import review_task_claim_next
from tests import factories


@pytest.mark.django_db
def test_the_prediction_insert_and_the_claim_are_in_the_query_log(loan, reviewer, client_api):
    with CaptureQueriesContext(connection) as captured:
        body = client_api.post("/predict/loan-approval", {"input": factories.loan_input()}, format="json").json()
        task = review_task_claim_next(reviewer=reviewer[0])
    # The human route: the prediction and its review task, in one statement.
    inserts = [q["sql"] for q in captured if 'INSERT INTO "gateway_prediction"' in q["sql"]
               or 'INSERT INTO "review_reviewtask"' in q["sql"]]
    assert len(inserts) == 1 and body["id"].replace("-", "") in inserts[0].replace("-", "")  # with its values
    assert 'INSERT INTO "gateway_prediction"' in inserts[0] and 'INSERT INTO "review_reviewtask"' in inserts[0]
    claims = [q["sql"] for q in captured if q["sql"].startswith("WITH picked AS")]
    assert len(claims) == 1 and f"'{task.lease_expires_at}'::timestamptz" in claims[0]  # with its values
    assert str(task.prediction_id) == body["id"]


@pytest.mark.django_db
def test_execute_wrappers_see_the_statements_and_their_values(loan, reviewer, client_api):
    seen = []

    def wrapper(execute, sql, params, many, context):
        seen.append((sql.split(" ", 6)[:6], params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(wrapper):
        client_api.post("/predict/loan-approval", {"input": factories.loan_input()}, format="json")
        task = review_task_claim_next(reviewer=reviewer[0])
    assert any(words == ["WITH", '"r0"', "AS", "(INSERT", "INTO", '"gateway_prediction"'] for words, _ in seen)
    claim = [params for words, params in seen if words[:3] == ["WITH", "picked", "AS"]]
    assert len(claim) == 1 and reviewer[0].pk in claim[0]
    assert task.claimed_by_id == reviewer[0].pk


@pytest.mark.django_db
def test_a_claimed_task_reads_back_its_json_and_times_as_the_orm_does(loan, reviewer, client_api):
    body = client_api.post("/predict/loan-approval", {"input": factories.loan_input()}, format="json").json()
    stored = Prediction.objects.get(pk=body["id"]).review_tasks.get()
    stored.suggestion = {"label": "refer", "confidence": 0.61}
    stored.save(update_fields=["suggestion"])
    task = review_task_claim_next(reviewer=reviewer[0])
    assert task.pk == stored.pk
    assert task.suggestion == {"label": "refer", "confidence": 0.61}
    assert task.created_at == stored.created_at and task.created_at.tzinfo is not None
    task.refresh_from_db()
    assert task.status == "claimed" and task.claimed_by_id == reviewer[0].pk


@pytest.mark.django_db
def test_a_failed_insert_raises_djangos_error_and_the_transaction_can_go_on(loan, client_api):
    from gateway.rows import row_insert

    body = client_api.post("/predict/loan-approval", {"input": factories.loan_input()}, format="json").json()
    twin = Prediction.objects.get(pk=body["id"])
    twin._state.adding = True
    with pytest.raises(IntegrityError), transaction.atomic():
        row_insert(twin)  # the same primary key again
    assert Prediction.objects.filter(pk=body["id"]).count() == 1
    # The session's prepared INSERT was dropped with the rollback; the next one prepares again.
    assert client_api.post("/predict/loan-approval", {"input": factories.loan_input()}, format="json").status_code == 202
