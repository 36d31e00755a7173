"""A reviewer works the queue in a real browser (Debian's headless Chromium): log in,
claim, answer with the keyboard, and the next task opens by itself."""
from __future__ import annotations

import os
import shutil

import pytest

from gateway.models import Prediction
from gateway.services import prediction_create
from review.models import Label
from tests import factories

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def browser_page(monkeypatch):
    # Playwright's sync API keeps an event loop in this thread; the test's own ORM calls
    # are ordinary synchronous ones (the server under test runs in its own thread).
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    if not os.path.exists(CHROMIUM):
        pytest.fail("Debian's chromium is required (scripts/ensure-system-deps.sh chromium installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        page = browser.new_page()
        page.set_default_timeout(15_000)
        yield page
        browser.close()


def test_reviewer_decides_with_the_keyboard(live_server, browser_page):
    loan = factories.loan_predictor()
    factories.reviewer_with_token("rita", password="pw-rita-123")
    first, _ = prediction_create(
        predictor=loan, policy=loan.routing, client=None,
        clean_input=factories.loan_input(amount=4321, note="Family bakery, 12 years"),
    )
    second, _ = prediction_create(predictor=loan, policy=loan.routing, client=None, clean_input=factories.loan_input())

    page = browser_page
    page.goto(f"{live_server.url}/admin/login/?next=/admin/review/reviewtask/queue/")
    page.fill("#id_username", "rita")
    page.fill("#id_password", "pw-rita-123")
    page.click("input[type=submit]")
    page.wait_for_url("**/queue/")
    page.click("#oz-claim-form input[type=submit]")
    page.wait_for_url("**/decide/")
    body = page.inner_text("#content-main")
    assert "4,321 GBP" in body and "Family bakery, 12 years" in body

    # "2" picks the second label (refer), Enter submits; the next task opens at once.
    page.keyboard.press("2")
    assert page.is_checked("input[name=output][value=refer]")
    page.keyboard.press("Enter")
    page.wait_for_function("document.body.innerText.includes('12,000 GBP')")
    first.refresh_from_db()
    assert (first.status, first.source, first.output) == ("answered", "human", "refer")
    assert Label.objects.get(prediction=first).target == "refer"

    page.keyboard.press("1")
    page.keyboard.press("Enter")
    page.wait_for_url("**/queue/**")  # nothing left: back to the queue
    assert "Nothing" in page.inner_text("#content") or "empty" in page.inner_text("#content")
    second.refresh_from_db()
    assert second.output == "approve"
    assert Prediction.objects.filter(status="pending").count() == 0
