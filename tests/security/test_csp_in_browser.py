"""The Content-Security-Policy in a real browser (Debian's headless Chromium): the pages people
use — login, admin index, dashboards, review queue and decision page (its keyboard script
runs), the end user's appeal page and the Swagger UI at /api/docs — load with no CSP
violation and no script error."""
from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from gateway.appeal_tokens import appeal_token
from gateway.services import prediction_create
from tests import factories
from tests.browser.conftest import chromium, screenshot  # noqa: F401 - the fixture

pytestmark = pytest.mark.django_db(transaction=True)


class _Watch:
    """Console errors about the Content-Security-Policy, and uncaught script errors."""

    def __init__(self, page):
        self.problems: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))

    def _console(self, message):
        text = message.text
        if "Content Security Policy" in text or "Content-Security-Policy" in text or "Refused to" in text:
            self.problems.append(f"console {message.type}: {text}")


def _log_in(page, base: str, username: str, password: str, landing: str) -> None:
    page.goto(f"{base}/admin/login/?next={landing}")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    page.wait_for_url(f"**{landing}")


def test_pages_load_without_csp_violations(live_server, chromium):  # noqa: F811
    loan = factories.loan_predictor()
    client, _ = factories.api_client_with_key()
    factories.reviewer_with_token("rita", password="pw-rita-123")
    get_user_model().objects.create_superuser("root", "root@example.com", "pw-root-123")
    prediction, _ = prediction_create(predictor=loan, policy=loan.routing, client=client, clean_input=factories.loan_input())
    base = live_server.url

    person = chromium.new_context().new_page()
    person.set_default_timeout(15_000)
    watch = _Watch(person)
    person.goto(f"{base}/appeal/{appeal_token(prediction.pk)}")
    assert person.inner_text("h1")
    # The inline style applied (the page's main column is narrowed by it).
    assert person.evaluate("getComputedStyle(document.querySelector('main')).maxWidth") != "none"
    person.goto(f"{base}/api/docs")
    person.wait_for_selector(".swagger-ui .info .title")
    person.wait_for_selector(".opblock")  # the schema was fetched and rendered
    screenshot(person, "csp", "1-api-docs")
    assert not watch.problems, watch.problems

    reviewer = chromium.new_context().new_page()
    reviewer.set_default_timeout(15_000)
    watch = _Watch(reviewer)
    _log_in(reviewer, base, "rita", "pw-rita-123", "/admin/review/reviewtask/queue/")
    reviewer.click("#oz-claim-form input[type=submit]")
    reviewer.wait_for_url("**/decide/")
    reviewer.keyboard.press("2")  # the page's (nonce'd) keyboard script picks the second answer
    assert reviewer.is_checked("input[name=output][value=refer]")
    screenshot(reviewer, "csp", "2-decide")
    assert not watch.problems, watch.problems

    operator = chromium.new_context().new_page()
    operator.set_default_timeout(15_000)
    watch = _Watch(operator)
    _log_in(operator, base, "root", "pw-root-123", "/admin/")
    for path in ("/admin/gateway/predictor/dashboard/", "/admin/gateway/predictor/dashboard/loan-approval/",
                 "/admin/gateway/prediction/", "/admin/gateway/apikey/", "/admin/gateway/routingpolicy/",
                 f"/admin/gateway/prediction/{prediction.pk}/change/", "/admin/models_registry/trainingrun/charts/"):
        operator.goto(f"{base}{path}")
        operator.wait_for_load_state("load")
    screenshot(operator, "csp", "3-admin")
    assert not watch.problems, watch.problems
