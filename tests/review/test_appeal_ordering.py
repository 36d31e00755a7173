"""An appeal's outcome is the last word on a prediction, whatever order the tasks around it
settle in: a provisional answer cannot be appealed while a reviewer is still deciding, a
QA sample settled after the appeal never overrides it, and an appeal decided after a QA
sample changed the answer puts its own outcome back."""
from __future__ import annotations

from datetime import timedelta

import pytest
from rest_framework.test import APIClient

from gateway.appeal_tokens import appeal_path
from gateway.models import Prediction, PredictionStatus
from gateway.services import prediction_create, routing_update
from gateway.sla import sla_enforce
from review.appeals import AppealRefused, appeal_file
from review.models import AppealStatus, Label, LabelSource, TaskKind
from review.services import review_task_claim_next, review_task_create, review_task_decide
from tests import factories
from tests.gateway.helpers import post_json, problem_body

pytestmark = pytest.mark.django_db


def _rule_answered_with_qa_task(loan) -> Prediction:
    """A rule answer ("approve") that was also sampled for a QA review."""
    routing_update(predictor=loan, changes={"mode": "rule"})
    loan.refresh_from_db()
    prediction, _ = prediction_create(predictor=loan, policy=loan.routing, client=None, clean_input=factories.loan_input())
    assert (prediction.status, prediction.output) == (PredictionStatus.ANSWERED, "approve")
    review_task_create(prediction=prediction, kind=TaskKind.QA_SAMPLE, reason="qa sample")
    return prediction


def _claim(reviewer, kind):
    task = review_task_claim_next(reviewer=reviewer)
    assert task is not None and task.kind == kind, task
    return task


def test_a_provisional_answer_cannot_be_appealed_until_the_reviewer_decides(loan, reviewer):
    rita = reviewer[0]
    routing_update(predictor=loan, changes={"human_sla_seconds": 30, "fallback": "rule"})
    loan.refresh_from_db()
    prediction, _ = prediction_create(predictor=loan, policy=loan.routing, client=None, clean_input=factories.loan_input())
    sla_enforce(now=prediction.sla_due_at + timedelta(seconds=1))
    prediction.refresh_from_db()
    assert prediction.provisional and prediction.status == PredictionStatus.ANSWERED
    path = appeal_path(prediction.pk)

    page = APIClient().get(path, HTTP_ACCEPT="application/json").json()
    assert page["can_appeal"] is False and "provisional" in page["why_not"]
    html = APIClient().get(path, HTTP_ACCEPT="text/html").content.decode()
    assert "still looking at your application" in html and "<form" not in html
    refused = post_json(APIClient(), path, {"reason": "I earn more than that"})
    assert "provisional" in problem_body(refused, 409)["detail"]
    with pytest.raises(AppealRefused):
        appeal_file(prediction=prediction, reason="I earn more than that")

    # Once the reviewer has decided, the same link takes the appeal.
    task = _claim(rita, TaskKind.ROUTED)
    review_task_decide(task_id=task.pk, reviewer=rita, output="refer")
    prediction.refresh_from_db()
    assert (prediction.status, prediction.provisional) == (PredictionStatus.REVISED, False)
    accepted = post_json(APIClient(), path, {"reason": "I earn more than that"})
    assert accepted.status_code == 201, accepted.content


def test_a_qa_sample_settled_after_the_appeal_does_not_override_its_outcome(loan, reviewer, sam):
    rita = reviewer[0]
    prediction = _rule_answered_with_qa_task(loan)
    appeal = appeal_file(prediction=prediction, reason="my debts are paid off", requested_output="refer")

    # Appeals come first in the queue: sam takes it and overturns the rule's answer.
    appeal_task = _claim(sam, TaskKind.APPEAL)
    qa_task = _claim(rita, TaskKind.QA_SAMPLE)
    review_task_decide(task_id=appeal_task.pk, reviewer=sam, output="refer", note="debts cleared")
    prediction.refresh_from_db()
    assert (prediction.status, prediction.output) == (PredictionStatus.REVISED, "refer")
    versions_before = prediction.history.count()

    # The QA reviewer, working from the older task, backs the rule: recorded, but it changes nothing.
    review_task_decide(task_id=qa_task.pk, reviewer=rita, output="approve")
    prediction.refresh_from_db()
    assert (prediction.status, prediction.output, prediction.source) == (PredictionStatus.REVISED, "refer", "human")
    assert prediction.history.count() == versions_before
    current = Label.objects.get(prediction=prediction, superseded_by__isnull=True)
    assert (current.source, current.target) == (LabelSource.APPEAL, "refer")
    qa_label = Label.objects.get(prediction=prediction, source=LabelSource.QA)
    assert qa_label.target == "approve" and qa_label.superseded_by_id == current.pk
    appeal.refresh_from_db()
    assert appeal.status == AppealStatus.OVERTURNED


def test_an_appeal_decided_after_a_qa_sample_changed_the_answer_restores_its_outcome(loan, reviewer, sam):
    rita = reviewer[0]
    prediction = _rule_answered_with_qa_task(loan)
    appeal = appeal_file(prediction=prediction, reason="please look again")
    appeal_task = _claim(rita, TaskKind.APPEAL)
    qa_task = _claim(sam, TaskKind.QA_SAMPLE)

    # The QA sample settles first and revises the answer while the appeal is open.
    review_task_decide(task_id=qa_task.pk, reviewer=sam, output="refer")
    prediction.refresh_from_db()
    assert prediction.output == "refer"

    # The appeal reviewer upholds the original decision: that is what stands.
    review_task_decide(task_id=appeal_task.pk, reviewer=rita, output="approve", note="the rule was right")
    appeal.refresh_from_db()
    prediction.refresh_from_db()
    assert appeal.status == AppealStatus.UPHELD
    assert (prediction.status, prediction.output) == (PredictionStatus.REVISED, "approve")
    current = Label.objects.get(prediction=prediction, superseded_by__isnull=True)
    assert (current.source, current.target) == (LabelSource.APPEAL, "approve")
