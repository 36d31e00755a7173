"""The operators' dashboard in a real browser (Debian's headless Chromium): an operator logs
in and opens the dashboard of an empty predictor and of a busy one; every chart is drawn,
labelled, and has its table. Screenshots go to test-artifacts/screenshots/ at the
repository root, which CI keeps."""
from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils import timezone

from tests import factories
from tests.browser.conftest import screenshot
from tests.test_dashboard import busy

pytestmark = pytest.mark.django_db(transaction=True)


def _operator_page(browser, live_server):
    page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
    page.set_default_timeout(15_000)
    factories.operator_with_token("otto", password="pw-otto-123")
    page.goto(f"{live_server.url}/admin/login/?next=/admin/")
    page.fill("#id_username", "otto")
    page.fill("#id_password", "pw-otto-123")
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/")
    return page


def _charts_drawn(page) -> int:
    """How many dashboard charts the browser laid out with a real size."""
    return page.evaluate(
        "Array.from(document.querySelectorAll('svg.oz-svg')).filter(s => s.getBoundingClientRect().width > 300"
        " && s.getAttribute('aria-label') && s.querySelector('title') && s.querySelector('desc')).length"
    )


def test_dashboard_of_an_empty_predictor(live_server, chromium):
    loan = factories.loan_predictor()
    page = _operator_page(chromium, live_server)
    page.goto(f"{live_server.url}{reverse('admin:gateway_predictor_change', args=[loan.pk])}")
    page.click(".object-tools a:text-is('Dashboard')")
    page.wait_for_url("**/dashboard/loan-approval/")
    assert page.locator(".oz-empty").count() == 12
    assert _charts_drawn(page) == 0
    assert "No predictions in the last 30 days." in page.inner_text("#content-main")
    screenshot(page, "dashboard", "1-empty-predictor")


def test_dashboard_of_a_busy_predictor(live_server, chromium):
    loan = factories.loan_predictor()
    busy(loan, timezone.now())
    page = _operator_page(chromium, live_server)
    page.goto(f"{live_server.url}{reverse('admin:gateway_predictor_dashboards')}")
    screenshot(page, "dashboard", "2-index")
    page.click(".oz-index a:text-is('loan-approval')")
    page.wait_for_url("**/dashboard/loan-approval/")
    assert page.locator(".oz-empty").count() == 0
    assert _charts_drawn(page) == 12
    screenshot(page, "dashboard", "3-busy-30-days")

    # The table under a chart opens without JavaScript of ours (<details>).
    page.click("#oz-panel-traffic summary")
    assert page.locator("#oz-table-traffic").is_visible()
    assert page.inner_text("#oz-table-traffic tbody tr:last-child").split() == ["total", "200", "100", "50", "20", "30", "400"]
    page.click("#oz-panel-groups summary")
    screenshot(page, "dashboard", "4-busy-tables-open")

    page.click(".oz-ranges a:text-is('7 days')")
    page.wait_for_url("**?days=7")
    assert _charts_drawn(page) == 12
    screenshot(page, "dashboard", "5-busy-7-days")
    page.click(".oz-ranges a:text-is('24 hours')")
    page.wait_for_url("**?days=1")
    screenshot(page, "dashboard", "6-busy-24-hours")
