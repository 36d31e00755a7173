"""Predictions and review tasks are written on the request path without a history row; the
first change records the row as it was created, then the change. So nothing a person changed
is missing from the audit, and /predict does one INSERT."""
from __future__ import annotations

import pytest

from gateway.models import Prediction
from review.models import ReviewTask
from review.services import review_task_claim_next
from tests import factories


@pytest.fixture
def rule_mode(loan):
    from gateway.services import routing_update

    routing_update(predictor=loan, changes={"mode": "rule"})
    return loan


def test_an_answered_prediction_is_one_row_and_its_first_change_keeps_the_original(rule_mode, client_api):
    body = client_api.post("/predict/loan-approval", {"input": factories.loan_input(amount=1000, has_collateral=True)},
                           format="json").json()
    prediction = Prediction.objects.get(pk=body["id"])
    assert prediction.output == "approve" and prediction.history.count() == 0

    prediction.output, prediction.source = "refer", "human"
    prediction._history_user = factories.reviewer_with_token()[0]
    prediction.save()

    created, changed = prediction.history.order_by("history_date")
    assert (created.history_type, created.output, created.source, created.history_user) == ("+", "approve", "rule", None)
    assert created.history_date == prediction.created_at
    assert (changed.history_type, changed.output, changed.history_user) == ("~", "refer", prediction._history_user)
    prediction.output = "approve"
    prediction.save()
    assert prediction.history.filter(history_type="+").count() == 1  # recorded once


def test_a_claimed_task_records_its_open_state_then_the_claim(loan, client_api, reviewer):
    body = client_api.post("/predict/loan-approval", {"input": factories.loan_input()}, format="json").json()
    task = ReviewTask.objects.get(prediction_id=body["id"])
    assert task.history.count() == 0

    claimed = review_task_claim_next(reviewer=reviewer[0])
    assert claimed.pk == task.pk
    states = list(task.history.order_by("history_date").values_list("history_type", "status"))
    assert states == [("+", "open"), ("~", "claimed")]


@pytest.mark.parametrize("one_statement", [True, False], ids=["one statement", "portable path"])
def test_a_task_claimed_again_after_a_release_is_not_recorded_as_created_twice(loan, client_api, reviewer, settings,
                                                                              one_statement):
    # PostgreSQL claims and records in one statement; the portable path (other databases,
    # PgBouncer) goes through the ORM and simple-history. Their history must be the same.
    from review.services import review_task_release

    settings.OZ_DB_PREPARED_STATEMENTS = one_statement

    body = client_api.post("/predict/loan-approval", {"input": factories.loan_input()}, format="json").json()
    task = ReviewTask.objects.get(prediction_id=body["id"])
    review_task_claim_next(reviewer=reviewer[0])
    review_task_release(task_id=task.pk, reviewer=reviewer[0])
    again = review_task_claim_next(reviewer=reviewer[0])
    assert again.pk == task.pk
    states = list(task.history.order_by("history_date", "history_id").values_list(
        "history_type", "status", "claimed_by", "history_user", "claimed_at", "lease_expires_at", "created_at", "prediction"))
    user = reviewer[0].pk
    assert [state[:4] for state in states] == [
        ("+", "open", None, None), ("~", "claimed", user, user), ("~", "open", None, user), ("~", "claimed", user, user)]
    assert states[-1][4:] == (again.claimed_at, again.lease_expires_at, task.created_at, task.prediction_id)
    again.refresh_from_db()
    assert (again.status, again.claimed_by_id, again.claimed_at) == ("claimed", user, states[-1][4])
    created = task.history.get(history_type="+")
    assert created.history_date == task.created_at and created.claimed_at is None


@pytest.mark.parametrize("model", [Prediction, ReviewTask], ids=["prediction", "review task"])
def test_nothing_else_needs_to_see_a_prediction_or_task_being_created(model):
    # /predict inserts predictions and their review tasks with gateway.rows.rows_insert, which
    # sends no signals: that is only right while no receiver (other than
    # django-simple-history's, which skips the creation of these rows anyway) listens for
    # their saves.
    from django.db.models.signals import post_save, pre_save

    for signal in (pre_save, post_save):
        sync_receivers, async_receivers = signal._live_receivers(model)
        owners = {type(getattr(r, "__self__", r)).__module__ for r in [*sync_receivers, *async_receivers]}
        assert owners <= {"simple_history.models"}, (signal, owners)


def test_a_history_row_is_stored_whole_and_its_key_read_back(loan, reviewer):
    # History rows are inserted with a statement compiled once (gateway.history.InsertedOnce):
    # the row must hold what simple-history gave it, and listeners must see its stored key.
    from simple_history.signals import post_create_historical_record

    from gateway.services import routing_update

    seen = []

    def listener(history_instance, **_):
        seen.append(history_instance.pk)

    post_create_historical_record.connect(listener, dispatch_uid="test-history-key")
    try:
        routing_update(predictor=loan, changes={"canary_percent": 7}, user=reviewer[0])
    finally:
        post_create_historical_record.disconnect(dispatch_uid="test-history-key")
    row = loan.routing.history.get(pk=seen[-1])
    assert (row.history_type, row.canary_percent, row.history_user) == ("~", 7, reviewer[0])
