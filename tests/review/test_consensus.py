"""Consensus and adjudication: with `reviews_required` of 2 or 3 a task needs that many
different reviewers; agreement settles it (one label, the prediction answered), any
disagreement queues an adjudication whose answer settles it. Every decision is kept."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gateway.definitions import predictors_load
from gateway.models import Prediction, Predictor
from gateway.services import prediction_create, routing_update
from review.models import KIND_PRIORITY, Decision, Label, LabelSource, ReviewTask, TaskKind, TaskStatus
from review.services import (
    TaskConflict,
    review_task_claim_next,
    review_task_create,
    review_task_decide,
)
from tests import factories

pytestmark = pytest.mark.django_db

LOAN_YAML = factories.DEMO_PREDICTORS / "loan-approval.yaml"


def _loan_requiring(tmp_path: Path, reviews: int) -> Predictor:
    """The demo loan predictor, loaded from a copy of its YAML that asks for `reviews`."""
    data = yaml.safe_load(LOAN_YAML.read_text())
    data["reviews_required"] = reviews
    path = tmp_path / "loan-approval.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    predictors_load(path)
    return Predictor.objects.select_related("routing").get(slug="loan-approval")


def _price_predictor(tmp_path: Path, reviews: int = 2, **output) -> Predictor:
    """A regression predictor (number output) needing `reviews` reviewers."""
    path = tmp_path / "price.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "slug": "price",
                "input": {"area": {"type": "number", "minimum": 0, "required": True}},
                "output": {"type": "number", "minimum": 0, **output},
                "reviews_required": reviews,
                "routing": {"mode": "human"},
            }
        )
    )
    predictors_load(path)
    return Predictor.objects.select_related("routing").get(slug="price")


def _pending(predictor: Predictor, data: dict | None = None) -> Prediction:
    prediction, _ = prediction_create(
        predictor=predictor, policy=predictor.routing, client=None, clean_input=data or factories.loan_input()
    )
    return prediction


def _reviewers(*names):
    return [factories.reviewer_with_token(name, password=None)[0] for name in names]


def _claim_and_decide(reviewer, output, expect_task=None) -> Decision:
    task = review_task_claim_next(reviewer=reviewer)
    assert task is not None, f"{reviewer} found nothing to claim"
    if expect_task is not None:
        assert task.pk == expect_task.pk
    return review_task_decide(task_id=task.pk, reviewer=reviewer, output=output)


def test_reviews_required_comes_from_the_definition_and_only_binds_consensus_kinds(tmp_path):
    loan = _loan_requiring(tmp_path, 2)
    assert loan.reviews_required == 2
    prediction = _pending(loan)
    assert prediction.review_tasks.get().reviews_required == 2
    qa = review_task_create(prediction=prediction, kind=TaskKind.QA_SAMPLE, reason="sampled")
    low = review_task_create(prediction=prediction, kind=TaskKind.LOW_CONFIDENCE, reason="unsure")
    adjudication = review_task_create(prediction=prediction, kind=TaskKind.ADJUDICATION, reason="dispute")
    appeal = review_task_create(prediction=prediction, kind=TaskKind.APPEAL, reason="appeal")
    assert (qa.reviews_required, low.reviews_required) == (2, 2)
    assert (adjudication.reviews_required, appeal.reviews_required) == (1, 1)
    # The count is copied at creation: a later change does not move tasks already queued.
    Predictor.objects.filter(pk=loan.pk).update(reviews_required=3)
    assert prediction.review_tasks.get(kind=TaskKind.ROUTED).reviews_required == 2


def test_two_agreeing_reviewers_settle_the_task(tmp_path):
    loan = _loan_requiring(tmp_path, 2)
    ann, bob = _reviewers("ann", "bob")
    prediction = _pending(loan)
    task = prediction.review_tasks.get()

    _claim_and_decide(ann, "approve", task)
    task.refresh_from_db()
    prediction.refresh_from_db()
    # One decision of two: back in the queue, nothing settled yet.
    assert task.status == TaskStatus.OPEN and task.claimed_by is None and task.final_output is None
    assert prediction.status == "pending" and not Label.objects.exists()
    # The same reviewer cannot take it again, whether through claim-next or by acting on it.
    assert review_task_claim_next(reviewer=ann) is None
    with pytest.raises(TaskConflict):
        review_task_decide(task_id=task.pk, reviewer=ann, output="approve")

    _claim_and_decide(bob, "approve", task)
    task.refresh_from_db()
    prediction.refresh_from_db()
    assert task.status == TaskStatus.DECIDED and task.final_output == "approve" and task.decided_at
    assert (prediction.status, prediction.source, prediction.output) == ("answered", "human", "approve")
    label = Label.objects.get()
    assert (label.target, label.source, label.task, label.created_by) == ("approve", LabelSource.REVIEW, task, bob)
    assert sorted(task.decisions.values_list("reviewer__username", "output")) == [("ann", "approve"), ("bob", "approve")]
    assert not ReviewTask.objects.filter(kind=TaskKind.ADJUDICATION).exists()
    assert review_task_claim_next(reviewer=bob) is None


def test_disagreement_goes_to_adjudication_which_settles_it(tmp_path):
    loan = _loan_requiring(tmp_path, 2)
    ann, bob, cat = _reviewers("ann", "bob", "cat")
    prediction = _pending(loan, factories.loan_input(amount=4321))
    task = prediction.review_tasks.get()
    waiting = _pending(loan).review_tasks.get()  # another routed task, younger

    _claim_and_decide(ann, "approve", task)
    _claim_and_decide(bob, "refer", task)
    task.refresh_from_db()
    prediction.refresh_from_db()
    assert task.status == TaskStatus.DECIDED and task.final_output is None
    assert prediction.status == "pending" and prediction.output is None
    assert not Label.objects.exists()
    adjudication = ReviewTask.objects.get(kind=TaskKind.ADJUDICATION)
    assert adjudication.origin == task and adjudication.prediction == prediction
    assert adjudication.reviews_required == 1 and adjudication.status == TaskStatus.OPEN
    assert adjudication.priority == KIND_PRIORITY[TaskKind.ADJUDICATION] > KIND_PRIORITY[TaskKind.ROUTED]
    assert "approve" in adjudication.reason and "refer" in adjudication.reason

    # The adjudication jumps the queue ahead of the older routed task.
    claimed = review_task_claim_next(reviewer=cat)
    assert claimed == adjudication
    review_task_decide(task_id=adjudication.pk, reviewer=cat, output="refer", note="collateral missing")
    task.refresh_from_db()
    adjudication.refresh_from_db()
    prediction.refresh_from_db()
    assert adjudication.status == TaskStatus.DECIDED and adjudication.final_output == "refer"
    assert task.final_output == "refer"  # the disputed task is settled too, audited
    assert (task.history.first().final_output, task.history.first().history_user) == ("refer", cat)
    assert (prediction.status, prediction.source, prediction.output) == ("answered", "human", "refer")
    label = Label.objects.get()
    assert (label.source, label.target, label.task, label.created_by) == (LabelSource.ADJUDICATION, "refer", adjudication, cat)
    assert label.input["amount"] == 4321 and label.superseded_by is None
    # Every reviewer's own answer is kept.
    assert sorted(Decision.objects.values_list("reviewer__username", "output", "task__kind")) == [
        ("ann", "approve", "routed"), ("bob", "refer", "routed"), ("cat", "refer", "adjudication"),
    ]
    # The younger routed task is still there for whoever comes next.
    assert review_task_claim_next(reviewer=ann) == waiting


def test_three_reviewers_all_agreeing(tmp_path):
    loan = _loan_requiring(tmp_path, 3)
    ann, bob, cat = _reviewers("ann", "bob", "cat")
    prediction = _pending(loan)
    task = prediction.review_tasks.get()
    for reviewer in (ann, bob):
        _claim_and_decide(reviewer, "refer", task)
        prediction.refresh_from_db()
        assert prediction.status == "pending"
        assert review_task_claim_next(reviewer=reviewer) is None
    _claim_and_decide(cat, "refer", task)
    prediction.refresh_from_db()
    task.refresh_from_db()
    assert (prediction.status, prediction.output) == ("answered", "refer")
    assert task.final_output == "refer" and task.decisions.count() == 3
    assert Label.objects.count() == 1 and not ReviewTask.objects.filter(kind=TaskKind.ADJUDICATION).exists()


def test_three_reviewers_with_one_dissent_go_to_adjudication(tmp_path):
    loan = _loan_requiring(tmp_path, 3)
    ann, bob, cat, dan = _reviewers("ann", "bob", "cat", "dan")
    prediction = _pending(loan)
    task = prediction.review_tasks.get()
    _claim_and_decide(ann, "approve", task)
    _claim_and_decide(bob, "refer", task)
    # A dissent does not end the round early: the third reviewer still gives an answer,
    # which the adjudicator sees.
    assert not ReviewTask.objects.filter(kind=TaskKind.ADJUDICATION).exists()
    _claim_and_decide(cat, "approve", task)
    adjudication = ReviewTask.objects.get(kind=TaskKind.ADJUDICATION, origin=task)
    prediction.refresh_from_db()
    assert prediction.status == "pending" and not Label.objects.exists()
    _claim_and_decide(dan, "approve", adjudication)
    prediction.refresh_from_db()
    task.refresh_from_db()
    assert (prediction.status, prediction.output, prediction.source) == ("answered", "approve", "human")
    assert task.final_output == "approve"
    assert Label.objects.get().source == LabelSource.ADJUDICATION
    assert Decision.objects.count() == 4


def test_number_outputs_agree_within_tolerance(tmp_path):
    price = _price_predictor(tmp_path, reviews=2)
    ann, bob, cat = _reviewers("ann", "bob", "cat")
    close = _pending(price, {"area": 50}).review_tasks.get()
    _claim_and_decide(ann, 100, close)
    _claim_and_decide(bob, 100.0 + 1e-12, close)
    close.refresh_from_db()
    assert close.final_output == pytest.approx(100) and close.prediction.status == "answered"

    apart = _pending(price, {"area": 60}).review_tasks.get()
    _claim_and_decide(ann, 100, apart)
    _claim_and_decide(bob, 101, apart)
    adjudication = ReviewTask.objects.get(kind=TaskKind.ADJUDICATION)
    _claim_and_decide(cat, 100.5, adjudication)
    apart.refresh_from_db()
    assert apart.final_output == 100.5 and apart.prediction.output == 100.5


def test_numbers_within_the_definitions_tolerance_agree_and_settle_on_their_median(tmp_path):
    price = _price_predictor(tmp_path, reviews=3, agree_within=2)
    ann, bob, cat, dan = _reviewers("ann", "bob", "cat", "dan")
    close = _pending(price, {"area": 50}).review_tasks.get()
    for reviewer, answer in ((ann, 100), (bob, 101.5), (cat, 102)):  # 2 apart at most: agreed
        _claim_and_decide(reviewer, answer, close)
    close.refresh_from_db()
    prediction = close.prediction
    assert close.final_output == 101.5 and (prediction.status, prediction.output) == ("answered", 101.5)
    label = Label.objects.get(prediction=prediction)
    assert (label.target, label.source, label.created_by) == (101.5, LabelSource.REVIEW, cat)
    # Every reviewer's own answer is kept beside the settled one.
    assert sorted(close.decisions.values_list("output", flat=True)) == [100, 101.5, 102]
    assert not ReviewTask.objects.filter(kind=TaskKind.ADJUDICATION).exists()

    apart = _pending(price, {"area": 60}).review_tasks.get()
    for reviewer, answer in ((ann, 100), (bob, 101), (cat, 102.5)):  # 2.5 apart: disputed
        _claim_and_decide(reviewer, answer, apart)
    apart.refresh_from_db()
    assert apart.final_output is None and apart.prediction.status == "pending"
    adjudication = ReviewTask.objects.get(kind=TaskKind.ADJUDICATION, origin=apart)
    _claim_and_decide(dan, 101, adjudication)
    apart.refresh_from_db()
    assert apart.final_output == 101 and apart.prediction.output == 101


@pytest.mark.parametrize("answers, within, agreed", [
    ([1.0, 1.1], 0.1, True), ([0.1, 0.4], 0.3, True), ([2.675, 2.6], 0.075, True),  # decimals exactly T apart
    ([1.0, 1.1000001], 0.1, False), ([5, 5], 0, True), ([5, 5.5], 0, False),
])
def test_tolerance_is_at_most_t_apart_whatever_the_rounding(answers, within, agreed):
    from review.services import consensus_answer

    ok, answer = consensus_answer(answers, {"type": "number", "agree_within": within})
    assert ok is agreed
    if agreed and within:
        assert min(answers) <= answer <= max(answers)


def test_the_median_of_huge_agreeing_numbers_stays_finite():
    from review.services import consensus_answer

    big = 1.7e308
    assert consensus_answer([big, big + 1e292], {"type": "number", "agree_within": 1e293}) == (True, pytest.approx(big))


def test_two_numbers_within_tolerance_settle_on_their_mean(tmp_path):
    price = _price_predictor(tmp_path, reviews=2, agree_within=5)
    ann, bob = _reviewers("ann", "bob")
    task = _pending(price, {"area": 50}).review_tasks.get()
    _claim_and_decide(ann, 200, task)
    _claim_and_decide(bob, 205, task)  # exactly the tolerance apart still agrees
    task.refresh_from_db()
    assert task.final_output == 202.5 and task.prediction.output == 202.5


def test_consensus_on_a_qa_sample_keeps_or_revises_the_rule_answer(tmp_path, client_key):
    loan = _loan_requiring(tmp_path, 2)
    routing_update(predictor=loan, changes={"mode": "rule"})
    loan.routing.refresh_from_db()
    ann, bob, cat = _reviewers("ann", "bob", "cat")
    # Rule answers: amount < 20000 with 3+ years trading -> approve.
    kept, _ = prediction_create(predictor=loan, policy=loan.routing, client=None, clean_input=factories.loan_input())
    changed, _ = prediction_create(
        predictor=loan, policy=loan.routing, client=None, clean_input=factories.loan_input(amount=15000)
    )
    assert kept.output == changed.output == "approve" and kept.source == "rule"
    qa_kept = review_task_create(prediction=kept, kind=TaskKind.QA_SAMPLE, reason="sampled")
    qa_changed = review_task_create(prediction=changed, kind=TaskKind.QA_SAMPLE, reason="sampled")
    assert qa_kept.reviews_required == 2

    _claim_and_decide(ann, "approve", qa_kept)
    _claim_and_decide(bob, "approve", qa_kept)
    kept.refresh_from_db()
    # The humans agree with the rule: the answer stands as the rule's, and becomes a QA label.
    assert (kept.status, kept.source, kept.output) == ("answered", "rule", "approve")
    assert Label.objects.get(prediction=kept).source == LabelSource.QA

    _claim_and_decide(ann, "refer", qa_changed)
    _claim_and_decide(bob, "approve", qa_changed)
    changed.refresh_from_db()
    assert changed.status == "answered" and changed.source == "rule"  # still disputed
    _claim_and_decide(cat, "refer")
    changed.refresh_from_db()
    assert (changed.status, changed.source, changed.output) == ("revised", "human", "refer")
    assert Label.objects.get(prediction=changed).source == LabelSource.ADJUDICATION


def test_second_decision_from_the_same_reviewer_is_refused_over_http(tmp_path, make_api):
    loan = _loan_requiring(tmp_path, 2)
    _, ann_token = factories.reviewer_with_token("ann")
    api = make_api(f"Token {ann_token}")
    _pending(loan)
    task = api.post("/review/claim").json()
    assert api.post(f"/review/tasks/{task['id']}/decision", {"output": "approve"}, format="json").status_code == 201
    again = api.post(f"/review/tasks/{task['id']}/decision", {"output": "refer"}, format="json")
    assert again.status_code == 409 and again["Content-Type"] == "application/problem+json"
    assert api.post("/review/claim").status_code == 204  # nothing else for ann
    assert Decision.objects.count() == 1
