"""The review queue's guarantees: priority order, leases, one holder per task, and a
decision that completes the prediction and stores a label."""
from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from gateway.models import Prediction
from gateway.services import prediction_create
from review.models import Decision, Label, ReviewTask, TaskKind, TaskStatus
from review.services import (
    InvalidDecision,
    TaskConflict,
    review_task_claim_next,
    review_task_create,
    review_task_decide,
    review_task_extend,
    review_task_release,
)
from tests import factories


def _pending(loan, client=None, **input_overrides) -> Prediction:
    prediction, _ = prediction_create(
        predictor=loan, policy=loan.routing, client=client, clean_input=factories.loan_input(**input_overrides)
    )
    return prediction


@pytest.mark.django_db
def test_claim_order_is_priority_then_age(loan, reviewer):
    user, _ = reviewer
    routed_old = _pending(loan).review_tasks.get()
    routed_new = _pending(loan).review_tasks.get()
    qa = review_task_create(prediction=_pending(loan), kind=TaskKind.QA_SAMPLE, reason="sampled")
    appeal = review_task_create(prediction=_pending(loan), kind=TaskKind.APPEAL, reason="user appealed")
    order = [review_task_claim_next(reviewer=user) for _ in range(6)]
    # Each _pending made a routed task too: appeal first, then the routed tasks oldest
    # first, the QA sample last.
    routed_of = lambda task: task.prediction.review_tasks.get(kind=TaskKind.ROUTED)  # noqa: E731
    assert order == [appeal, routed_old, routed_new, routed_of(qa), routed_of(appeal), qa]
    assert review_task_claim_next(reviewer=user) is None


@pytest.mark.django_db
def test_expired_lease_returns_task_to_queue_and_voids_decision(loan, reviewer, settings):
    first, _ = reviewer
    second, _ = factories.reviewer_with_token("sam")
    prediction = _pending(loan)
    task = review_task_claim_next(reviewer=first)
    assert review_task_claim_next(reviewer=second) is None  # held
    ReviewTask.objects.filter(pk=task.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert review_task_claim_next(reviewer=second) == task  # claimable again
    with pytest.raises(TaskConflict):
        review_task_decide(task_id=task.pk, reviewer=first, output="approve")
    prediction.refresh_from_db()
    assert prediction.status == "pending" and not Decision.objects.exists() and not Label.objects.exists()
    review_task_decide(task_id=task.pk, reviewer=second, output="refer")
    prediction.refresh_from_db()
    assert prediction.output == "refer"


@pytest.mark.django_db
def test_decision_answers_prediction_and_stores_label(loan, reviewer):
    user, _ = reviewer
    prediction = _pending(loan, amount=777)
    task = review_task_claim_next(reviewer=user)
    decision = review_task_decide(task_id=task.pk, reviewer=user, output="approve", note="looks fine")
    prediction.refresh_from_db()
    assert (prediction.status, prediction.source, prediction.output) == ("answered", "human", "approve")
    label = Label.objects.get()
    assert label.prediction == prediction and label.task == task and label.created_by == user
    assert label.source == "review" and label.target == "approve" and label.input["amount"] == 777
    assert decision.seconds_to_decide is not None and decision.seconds_to_decide >= 0
    assert decision.history.first().history_user == user
    # Deciding again is refused and changes nothing.
    with pytest.raises(TaskConflict):
        review_task_decide(task_id=task.pk, reviewer=user, output="refer")
    assert Label.objects.count() == 1


@pytest.mark.django_db
def test_invalid_output_is_refused(loan, reviewer):
    user, _ = reviewer
    _pending(loan)
    task = review_task_claim_next(reviewer=user)
    with pytest.raises(InvalidDecision):
        review_task_decide(task_id=task.pk, reviewer=user, output="maybe")
    task.refresh_from_db()
    assert task.status == TaskStatus.CLAIMED


@pytest.mark.django_db
def test_release_and_extend(loan, reviewer):
    user, _ = reviewer
    other, _ = factories.reviewer_with_token("sam")
    _pending(loan)
    task = review_task_claim_next(reviewer=user)
    with pytest.raises(TaskConflict):
        review_task_extend(task_id=task.pk, reviewer=other)
    before = task.lease_expires_at
    ReviewTask.objects.filter(pk=task.pk).update(lease_expires_at=before - timedelta(minutes=5))
    extended = review_task_extend(task_id=task.pk, reviewer=user)
    assert extended.lease_expires_at > before - timedelta(minutes=5)
    review_task_release(task_id=task.pk, reviewer=user)
    assert review_task_claim_next(reviewer=other) == task


@pytest.mark.django_db(transaction=True)
def test_concurrent_reviewers_never_share_a_task():
    loan = factories.loan_predictor()
    reviewers = [factories.reviewer_with_token(f"r{i}")[0] for i in range(8)]
    for _ in range(5):
        _pending(loan)
    claimed: list = []
    errors: list = []
    barrier = threading.Barrier(len(reviewers))

    def work(user):
        try:
            barrier.wait()
            while (task := review_task_claim_next(reviewer=user)) is not None:
                claimed.append((task.pk, user.pk))
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(u,)) for u in reviewers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    task_ids = [pk for pk, _ in claimed]
    assert sorted(task_ids) == sorted(ReviewTask.objects.values_list("pk", flat=True))
    assert len(task_ids) == len(set(task_ids)) == 5
    for pk, user_pk in claimed:
        assert ReviewTask.objects.get(pk=pk).claimed_by_id == user_pk


@pytest.mark.django_db
def test_review_api_flow(loan, client_api, reviewer_api, make_api):
    created = client_api.post("/predict/loan-approval", {"input": factories.loan_input()}, format="json").json()
    response = reviewer_api.post("/review/claim")
    assert response.status_code == 200
    task = response.json()
    assert task["kind"] == "routed" and task["prediction"] == created["id"]
    assert task["output_spec"]["labels"] == ["approve", "refer"]
    # Fields in the order the YAML declares them (PostgreSQL's jsonb alone would reorder them).
    assert list(task["input_schema"]) == ["amount", "years_trading", "sector", "has_collateral", "note"]
    assert task["lease_expires_at"]
    other = make_api(f"Token {factories.reviewer_with_token('sam')[1]}")
    response = other.post(f"/review/tasks/{task['id']}/decision", {"output": "approve"}, format="json")
    assert response.status_code == 409 and response["Content-Type"] == "application/problem+json"
    response = reviewer_api.post(f"/review/tasks/{task['id']}/decision", {"output": "nope"}, format="json")
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "output"
    response = reviewer_api.post(f"/review/tasks/{task['id']}/decision", {"output": "approve", "note": "a\x00b"}, format="json")
    assert response.status_code == 422 and response.json()["errors"] == [
        {"field": "note", "message": "must not contain NUL characters"}
    ]
    response = reviewer_api.post(f"/review/tasks/{task['id']}/extend")
    assert response.status_code == 200
    response = reviewer_api.post(f"/review/tasks/{task['id']}/decision", {"output": "approve"}, format="json")
    assert response.status_code == 201
    response = reviewer_api.post(f"/review/tasks/{task['id']}/decision", {"output": "approve"}, format="json")
    assert response.status_code == 409
    assert reviewer_api.post("/review/claim").status_code == 204
    assert reviewer_api.post("/review/tasks/999999/release").status_code == 404
    prediction = client_api.get(f"/predictions/{created['id']}").json()
    assert prediction["status"] == "answered" and prediction["source"] == "human"


_CLAIM_PREPARED = "FROM pg_prepared_statements WHERE statement LIKE 'WITH picked AS (SELECT %%review_reviewtask%%'"


def _claim_plan_prepared() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) {_CLAIM_PREPARED}")
        return cursor.fetchone()[0] == 1


@pytest.mark.django_db(transaction=True)
def test_claim_next_is_planned_once_per_connection_and_again_after_a_reconnect(loan, reviewer):
    from review import services

    user, _ = reviewer
    tasks = [_pending(loan).review_tasks.get() for _ in range(3)]
    # As in a process's first claim, outside any transaction: nothing compiled yet.
    services._claim_statements.clear()
    services._claim_recorded_statements.clear()
    services._claim_prepared_texts.clear()
    connection.close()
    assert not _claim_plan_prepared()  # a new session has none
    assert review_task_claim_next(reviewer=user).pk == tasks[0].pk
    assert _claim_plan_prepared()
    assert review_task_claim_next(reviewer=user).pk == tasks[1].pk
    connection.close()  # as after a database restart: the new session prepares its own
    assert review_task_claim_next(reviewer=user).pk == tasks[2].pk
    assert _claim_plan_prepared()
    assert review_task_claim_next(reviewer=user) is None


@pytest.mark.django_db
def test_claim_next_reuses_one_plan_instead_of_planning_every_claim(loan, reviewer):
    # PostgreSQL plans a prepared statement's first five runs for their values, then keeps a
    # generic plan when it is no worse. The claimable statuses are written into the statement
    # so that plan can use the partial index of claimable tasks; were they parameters, the
    # generic plan would scan the whole table and every claim would be planned anew.
    user, _ = reviewer
    tasks = [_pending(loan).review_tasks.get() for _ in range(8)]
    claimed = [review_task_claim_next(reviewer=user) for _ in range(8)]
    assert [t.pk for t in claimed] == [t.pk for t in tasks]
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT generic_plans, custom_plans, statement {_CLAIM_PREPARED}")
        generic, custom, statement = cursor.fetchone()
    assert generic >= 3 and custom <= 5, (generic, custom)
    assert "'open'" in statement and "'claimed'" in statement and "$1" in statement


@pytest.mark.django_db(transaction=True)
def test_claim_next_still_works_after_predictions_and_a_rolled_back_transaction(loan, reviewer, client_api):
    # /predict's INSERT and claim-next are both prepared by psycopg on the same session. A
    # ROLLBACK there makes psycopg DEALLOCATE ALL; the next claim must prepare again, not
    # fail with "prepared statement does not exist" (a 500).
    from django.db import transaction

    user, _ = reviewer
    for _ in range(3):
        assert client_api.post("/predict/loan-approval", {"input": factories.loan_input()}, format="json").status_code == 202
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s",
                       ['WITH "r0" AS (INSERT INTO "gateway_prediction" %'])
        assert cursor.fetchone()[0] == 1  # prepared once, run three times
    assert review_task_claim_next(reviewer=user) is not None
    with pytest.raises(RuntimeError), transaction.atomic():  # any failed request or task: a ROLLBACK
        client_api.post("/predict/loan-approval", {"input": factories.loan_input()}, format="json")
        raise RuntimeError("rolled back")
    assert review_task_claim_next(reviewer=user) is not None
    assert _claim_plan_prepared()


@pytest.mark.django_db
def test_claim_next_without_prepared_statements_gives_the_same_order(loan, reviewer, settings):
    settings.OZ_DB_PREPARED_STATEMENTS = False  # behind PgBouncer's transaction pooling
    user, _ = reviewer
    first, second = (_pending(loan).review_tasks.get() for _ in range(2))
    assert [review_task_claim_next(reviewer=user).pk for _ in range(2)] == [first.pk, second.pk]
    assert review_task_claim_next(reviewer=user) is None
