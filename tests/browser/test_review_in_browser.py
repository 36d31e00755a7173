"""Reviewers and an end user in a real browser (Debian's headless Chromium): a reviewer
logs in, claims and answers with the keyboard (the next task opens by itself); the person
the answer is about files an appeal through the link the client got; a second reviewer
decides it in the admin, and the person's page shows the outcome. Screenshots of every
step go to test-artifacts/screenshots/ at the repository root, which CI keeps."""
from __future__ import annotations

import json
import urllib.request

import pytest

from gateway.models import Prediction
from gateway.services import prediction_create
from review.models import Appeal, AppealStatus, Label, LabelSource, TaskKind
from tests import factories
from tests.browser.conftest import screenshot

pytestmark = pytest.mark.django_db(transaction=True)


def _log_in(page, live_server, username: str, password: str) -> None:
    page.goto(f"{live_server.url}/admin/login/?next=/admin/review/reviewtask/queue/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    page.wait_for_url("**/queue/")


def _new_page(browser):
    """A page in a context of its own: its own cookies, as another person's browser."""
    page = browser.new_context().new_page()
    page.set_default_timeout(15_000)
    return page


@pytest.fixture
def browser_page(chromium):
    return _new_page(chromium)


def test_reviewer_decides_with_the_keyboard(live_server, browser_page):
    loan = factories.loan_predictor()
    factories.reviewer_with_token("rita", password="pw-rita-123")
    first, _ = prediction_create(
        predictor=loan, policy=loan.routing, client=None,
        clean_input=factories.loan_input(amount=4321, note="Family bakery, 12 years"),
    )
    second, _ = prediction_create(predictor=loan, policy=loan.routing, client=None, clean_input=factories.loan_input())

    page = browser_page
    shot = "reviewer-keyboard"
    _log_in(page, live_server, "rita", "pw-rita-123")
    screenshot(page, shot, "1-queue")
    page.click("#oz-claim-form input[type=submit]")
    page.wait_for_url("**/decide/")
    body = page.inner_text("#content-main")
    assert "4,321 GBP" in body and "Family bakery, 12 years" in body
    screenshot(page, shot, "2-decision-page")

    # "2" picks the second label (refer), Enter submits; the next task opens at once.
    page.keyboard.press("2")
    assert page.is_checked("input[name=output][value=refer]")
    screenshot(page, shot, "3-answer-picked")
    page.keyboard.press("Enter")
    page.wait_for_function("document.body.innerText.includes('12,000 GBP')")
    screenshot(page, shot, "4-next-task")
    first.refresh_from_db()
    assert (first.status, first.source, first.output) == ("answered", "human", "refer")
    assert Label.objects.get(prediction=first).target == "refer"

    page.keyboard.press("1")
    page.keyboard.press("Enter")
    page.wait_for_url("**/queue/**")  # nothing left: back to the queue
    assert "Nothing" in page.inner_text("#content") or "empty" in page.inner_text("#content")
    screenshot(page, shot, "5-queue-empty")
    second.refresh_from_db()
    assert second.output == "approve"
    assert Prediction.objects.filter(status="pending").count() == 0


def _client_get(live_server, path: str, key: str) -> dict:
    """GET as the API client would, over HTTP."""
    request = urllib.request.Request(f"{live_server.url}{path}", headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def test_an_end_user_appeals_and_a_second_reviewer_overturns(live_server, chromium):
    shot = "appeal"
    loan = factories.loan_predictor()
    client, key = factories.api_client_with_key()
    factories.reviewer_with_token("rita", password="pw-rita-123")
    factories.reviewer_with_token("sam", password="pw-sam-123")
    prediction, _ = prediction_create(
        predictor=loan, policy=loan.routing, client=client,
        clean_input=factories.loan_input(amount=18500, note="Family bakery, 12 years"),
    )

    # 1. Rita answers with the keyboard: refer.
    rita = _new_page(chromium)
    _log_in(rita, live_server, "rita", "pw-rita-123")
    rita.click("#oz-claim-form input[type=submit]")
    rita.wait_for_url("**/decide/")
    rita.keyboard.press("2")
    with rita.expect_navigation():
        rita.keyboard.press("Enter")
    rita.wait_for_url("**/queue/**")
    prediction.refresh_from_db()
    assert (prediction.status, prediction.output) == ("answered", "refer")

    # 2. The person opens the link the client got with the answer.
    appeal_url = _client_get(live_server, f"/predictions/{prediction.pk}", key)["appeal_url"]
    person = _new_page(chromium)
    person.goto(f"{live_server.url}{appeal_url}")
    decision = person.inner_text("#decision")
    assert "Your application for loan-approval was answered: refer" in decision and "by a person" in decision
    assert "18,500 GBP" in person.inner_text("#input")
    screenshot(person, shot, "1-person-sees-the-decision")

    # 3. They fill the form with labels a screen reader would announce, and send it.
    person.get_by_label("Why do you think the decision is wrong?").fill(
        "My bakery has traded for twelve years; the accounts are with my application."
    )
    person.get_by_label("approve").check()
    screenshot(person, shot, "2-person-fills-the-form")
    person.get_by_role("button", name="Send my appeal").click()
    person.wait_for_selector("#appeal-status")
    assert "We have received your appeal" in person.inner_text("#appeal-status")
    screenshot(person, shot, "3-appeal-received")
    appeal = Appeal.objects.get(prediction=prediction)
    assert (appeal.status, appeal.requested_output) == (AppealStatus.OPEN, "approve")

    # 4. Rita made the decision, so the appeal is not hers to take.
    rita.reload()
    assert "Nothing to review right now" in rita.inner_text("#content")
    with rita.expect_navigation():
        rita.click("#oz-claim-form input[type=submit]")
    assert "Nothing to review: the queue is empty" in rita.inner_text(".messagelist")

    # 5. Sam takes it, sees the appeal, answers approve with the keyboard and a note.
    sam = _new_page(chromium)
    _log_in(sam, live_server, "sam", "pw-sam-123")
    sam.click("#oz-claim-form input[type=submit]")
    sam.wait_for_url("**/decide/")
    assert "twelve years" in sam.inner_text("#oz-appeal-reason")
    assert "approve" in sam.inner_text("#oz-appeal-requested")
    assert "refer" in sam.inner_text("#oz-appeal-original")
    assert "rita" in sam.inner_text("#oz-earlier")
    sam.keyboard.press("1")
    assert sam.is_checked("input[name=output][value=approve]")
    sam.fill("#id_note", "Your accounts show twelve years of steady trading, so we approve.")
    screenshot(sam, shot, "4-second-reviewer-decides")
    with sam.expect_navigation():
        sam.keyboard.press("Control+Enter")
    sam.wait_for_url("**/queue/**")
    appeal.refresh_from_db()
    assert appeal.status == AppealStatus.OVERTURNED and appeal.task.kind == TaskKind.APPEAL

    # 6. The person's page shows the outcome and the note.
    person.reload()
    status = person.inner_text("#appeal-status")
    assert "Your appeal was successful" in status and "approve" in status
    assert "twelve years of steady trading" in person.inner_text("#appeal-note")
    assert "was answered: approve" in person.inner_text("#decision")
    screenshot(person, shot, "5-person-sees-the-outcome")
    prediction.refresh_from_db()
    assert (prediction.status, prediction.output) == ("revised", "approve")
    assert Label.objects.get(prediction=prediction, superseded_by__isnull=True).source == LabelSource.APPEAL
