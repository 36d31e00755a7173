"""What a decision locks: its task and its prediction, never the predictor. A FOR UPDATE on
the predictor row serialised every reviewer's decisions on that predictor (bench/review_queue.py
showed 16 reviewers' backends waiting on it most of the time) and, since FOR UPDATE
conflicts with the KEY SHARE lock of a foreign key check, held up every insert naming the
predictor (new predictions on /predict, tasks, labels) until the decision committed."""
from __future__ import annotations

import threading

import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext

from gateway.models import Prediction
from gateway.services import prediction_create
from review import services
from review.models import Label, LabelSource
from review.services import review_task_claim_next, review_task_decide
from tests import factories


def _pending(loan, **overrides) -> Prediction:
    prediction, _ = prediction_create(
        predictor=loan, policy=loan.routing, client=None, clean_input=factories.loan_input(**overrides)
    )
    return prediction


@pytest.mark.django_db
def test_no_statement_of_a_decision_locks_the_predictor_row(loan, reviewer):
    user, _ = reviewer
    _pending(loan)
    task = review_task_claim_next(reviewer=user)
    with CaptureQueriesContext(connection) as queries:
        review_task_decide(task_id=task.pk, reviewer=user, output="approve")
    locking = [q["sql"] for q in queries.captured_queries if "FOR UPDATE" in q["sql"]]
    assert locking, "a decision locks its task and its prediction"
    for sql in locking:
        joined, _, lock = sql.partition("FOR UPDATE")
        if '"gateway_predictor"' in joined:
            assert lock.startswith(" OF ") and '"gateway_predictor"' not in lock, sql


@pytest.mark.django_db(transaction=True)
def test_a_label_for_the_predictor_is_written_while_a_decision_is_open(loan, reviewer):
    """Another connection inserts a row naming the predictor while a decision's transaction
    is open (paused inside it, after its locks were taken): it must not wait."""
    user, _ = reviewer
    _pending(loan)
    task = review_task_claim_next(reviewer=user)
    inside, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def paused_answer(**kwargs):
        result = original(**kwargs)
        inside.set()
        release.wait(10)
        return result

    def decide():
        try:
            review_task_decide(task_id=task.pk, reviewer=user, output="approve")
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            inside.set()
            connections.close_all()

    original = services.prediction_answer
    services.prediction_answer = paused_answer
    worker = threading.Thread(target=decide)
    try:
        worker.start()
        assert inside.wait(10), "the decision never reached its answer"
        assert not errors, errors
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '2s'")
        try:
            other = _pending(loan, amount=777)  # a new prediction (and its task) naming the predictor
            Label.objects.create(predictor=loan, prediction=other, schema_version=1, input=other.input,
                                 target="refer", source=LabelSource.IMPORT)
        finally:
            with connection.cursor() as cursor:
                cursor.execute("SET lock_timeout = 0")
    finally:
        release.set()
        worker.join(15)
        services.prediction_answer = original
    assert not errors, errors
    assert Label.objects.filter(task=task).exists()
