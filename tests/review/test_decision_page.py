"""What the reviewer's decision page shows beyond the input: the appeal (reason, what the
person asked for, the answer appealed and who gave it), the disputed decisions of an
adjudication, never another reviewer's answer on an open consensus task, and a model's
explanation when there is one. Also: the queue counts adjudications, and an appeal is
decided through the page with a note for the person who appealed."""
from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import reverse

from gateway.models import Prediction, PredictionStatus
from gateway.services import prediction_create
from review.appeals import appeal_file
from review.models import Appeal, AppealStatus, TaskKind, TaskStatus
from review.services import review_task_claim_next, review_task_decide
from tests import factories

pytestmark = pytest.mark.django_db


def _url(name: str, task=None) -> str:
    if task is None:
        return reverse(f"admin:review_reviewtask_{name}")
    return reverse(f"admin:review_reviewtask_{name}", args=[task.pk])


def _pending(predictor, **input_overrides) -> Prediction:
    prediction, _ = prediction_create(
        predictor=predictor, policy=predictor.routing, client=None, clean_input=factories.loan_input(**input_overrides)
    )
    return prediction


def _decide(reviewer, output, note=""):
    task = review_task_claim_next(reviewer=reviewer)
    review_task_decide(task_id=task.pk, reviewer=reviewer, output=output, note=note)
    return task


def _page(user, task) -> str:
    browser = Client()
    browser.force_login(user)
    response = browser.get(_url("decide", task))
    assert response.status_code == 200
    return response.content.decode()


def _module(html: str, element_id: str) -> str:
    start = html.index(f'id="{element_id}"')
    return html[start:html.index("</div>", start)]


@pytest.fixture
def consensus_loan(loan):
    loan.reviews_required = 2
    loan.save(update_fields=["reviews_required"])
    return loan


def test_an_appeal_task_shows_the_appeal_and_the_decision_appealed(loan, rita, sam):
    prediction = _pending(loan)
    _decide(rita, "refer", note="Under three years of accounts")
    prediction.refresh_from_db()
    appeal_file(prediction=prediction, reason="We have traded for 12 years.\n<See the accounts>",
                requested_output="approve")
    task = review_task_claim_next(reviewer=sam)
    assert task.kind == TaskKind.APPEAL

    html = _page(sam, task)

    appeal = _module(html, "oz-appeal")
    assert "We have traded for 12 years.\n&lt;See the accounts&gt;" in appeal
    assert re.search(r'id="oz-appeal-requested"><strong>approve</strong>', appeal)
    assert re.search(r'id="oz-appeal-original"><strong>refer</strong>, given by a reviewer', appeal)
    earlier = _module(html, "oz-earlier")
    assert "The decision appealed against" in earlier
    assert "rita" in earlier and "<strong>refer</strong>" in earlier and "Under three years of accounts" in earlier
    # The note is what the person reads: the page says so and asks for one.
    assert "Note to the person who appealed" in html and "They will read it on their appeal page" in html


def test_an_appeal_of_a_rule_answer_names_the_rules(loan, rita):
    from gateway.services import routing_update

    routing_update(predictor=loan, changes={"mode": "rule"})
    loan.refresh_from_db()
    prediction = _pending(loan)
    assert prediction.source == "rule"
    appeal_file(prediction=prediction, reason="The rules are wrong")
    task = review_task_claim_next(reviewer=rita)

    html = _page(rita, task)

    assert re.search(r'id="oz-appeal-original"><strong>approve</strong>, given by the rule stub', html)
    assert "no particular answer" in html
    assert 'id="oz-earlier"' not in html


def test_deciding_an_appeal_through_the_page_needs_a_note_and_overturns(loan, rita, sam):
    prediction = _pending(loan)
    _decide(rita, "refer")
    prediction.refresh_from_db()
    appeal_file(prediction=prediction, reason="Please look again")
    task = review_task_claim_next(reviewer=sam)
    browser = Client()
    browser.force_login(sam)

    response = browser.post(_url("decide", task), {"output": "approve", "note": ""})
    assert response.status_code == 200 and "Write a note for the person who appealed." in response.content.decode()
    assert Appeal.objects.get().status == AppealStatus.OPEN

    response = browser.post(_url("decide", task), {"output": "approve", "note": "Your accounts check out."})

    assert response.status_code == 302
    appeal = Appeal.objects.get()
    assert (appeal.status, appeal.outcome_output, appeal.outcome_note) == (
        AppealStatus.OVERTURNED, "approve", "Your accounts check out.")
    prediction.refresh_from_db()
    assert (prediction.status, prediction.output) == (PredictionStatus.REVISED, "approve")


def test_an_adjudication_shows_the_decisions_in_dispute(consensus_loan, rita, sam, tess):
    _pending(consensus_loan)
    _decide(rita, "approve", note="Good record")
    _decide(sam, "refer", note="Amount too high")
    task = review_task_claim_next(reviewer=tess)
    assert task.kind == TaskKind.ADJUDICATION

    html = _page(tess, task)

    earlier = _module(html, "oz-earlier")
    assert "The reviewers who disagreed" in earlier
    assert re.search(r"rita, [^<]*</dt>\s*<dd><strong>approve</strong> — <span class=\"oz-text\">Good record", earlier)
    assert re.search(r"sam, [^<]*</dt>\s*<dd><strong>refer</strong> — <span class=\"oz-text\">Amount too high", earlier)
    assert 'id="oz-appeal"' not in html


def test_an_open_consensus_task_hides_the_other_reviewers_answers(consensus_loan, client, rita, sam):
    _pending(consensus_loan)
    first = _decide(rita, "approve", note="rita's reasons")
    task = review_task_claim_next(reviewer=sam)
    assert task.pk == first.pk and task.status == TaskStatus.CLAIMED

    html = _page(sam, task)

    assert "rita" not in html and "reasons" not in html
    assert 'id="oz-decisions"' not in html and 'id="oz-earlier"' not in html
    # Nor on the task's admin page.
    client.force_login(sam)
    change = client.get(reverse("admin:review_reviewtask_change", args=[task.pk])).content.decode()
    assert "reasons" not in change and "approve" not in change.split('id="content-main"')[1]
    # The reviewer who answered sees their own answer only.
    own = _page(rita, task)
    assert "Your earlier answer" in own and "rita&#x27;s reasons" in own

    review_task_decide(task_id=task.pk, reviewer=sam, output="approve")
    settled = _page(sam, task)
    decisions = _module(settled, "oz-decisions")
    assert "rita" in decisions and "sam" in decisions


def test_the_explanation_slot_shows_a_models_explanation(loan, rita, monkeypatch):
    explanation = [
        {"feature": "years_trading", "contribution": 0.12},
        {"feature": "amount", "contribution": -0.41},
    ]
    # Prediction.explanation is a real field now: store it rather than patch the class.
    Prediction.objects.filter(pk=_pending(loan).pk).update(explanation=explanation)
    task = review_task_claim_next(reviewer=rita)

    html = _page(rita, task)

    module = html[html.index('id="oz-explanation"'):]
    assert module.index("amount") < module.index("years_trading")  # strongest first
    assert "-0.410" in module and "0.120" in module


def test_no_explanation_no_slot(loan, rita):
    _pending(loan)
    task = review_task_claim_next(reviewer=rita)
    assert 'id="oz-explanation"' not in _page(rita, task)


def test_the_queue_counts_adjudications(consensus_loan, rita, sam, tess):
    _pending(consensus_loan)
    _decide(rita, "approve")
    _decide(sam, "refer")
    browser = Client()
    browser.force_login(tess)

    response = browser.get(_url("queue"))

    counts = [(row["kind"], row["label"], row["priority"], row["count"]) for row in response.context["counts"]]
    assert counts == [("adjudication", "Adjudication", 35, 1)]
    assert 'data-kind="adjudication"' in response.content.decode()


def test_the_api_claim_carries_the_appeal_and_the_decision_appealed(loan, rita, make_api):
    prediction = _pending(loan)
    _decide(rita, "refer", note="Under three years of accounts")
    prediction.refresh_from_db()
    appeal_file(prediction=prediction, reason="We have traded for 12 years.", requested_output="approve")
    _, token = factories.reviewer_with_token("uma", password=None)

    task = make_api(f"Token {token}").post("/review/claim").json()

    assert task["kind"] == "appeal"
    assert task["appeal"] == {
        "reason": "We have traded for 12 years.", "requested_output": "approve", "original_output": "refer",
        "original_source": "human", "original_model_version": None, "created_at": task["appeal"]["created_at"],
    }
    assert [(d["reviewer"], d["output"], d["note"]) for d in task["earlier_decisions"]] == [
        ("rita", "refer", "Under three years of accounts")
    ]


def test_the_api_claim_of_a_consensus_task_shows_no_other_answers(consensus_loan, rita, make_api):
    _pending(consensus_loan)
    _decide(rita, "approve", note="rita's reasons")
    _, token = factories.reviewer_with_token("uma", password=None)

    task = make_api(f"Token {token}").post("/review/claim").json()

    assert task["kind"] == "routed" and task["appeal"] is None and task["earlier_decisions"] == []
    assert "reasons" not in str(task)
