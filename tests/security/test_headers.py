"""Browser-facing security headers: a strict Content-Security-Policy (django-csp) on every
response, and no page whose inline script or style that policy would block — every inline
<script> carries the request's nonce, every inline <style> the nonce or an allowed hash, no
inline event handlers or javascript: URLs. Plus Referrer-Policy, X-Content-Type-Options,
Cross-Origin-Opener-Policy, X-Frame-Options and Permissions-Policy.
tests/security/test_csp_in_browser.py loads the same pages in Chromium and listens for
violations."""
from __future__ import annotations

import base64
import hashlib
import re
from html.parser import HTMLParser
from pathlib import Path

import django
import pytest
from django.conf import settings
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.test import RequestFactory
from django.urls import reverse

from gateway.appeal_tokens import appeal_token
from gateway.services import prediction_create
from review.services import review_task_claim_next
from tests import factories

pytestmark = pytest.mark.django_db


def policy_of(response) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    directives = {}
    for part in header.split(";"):
        words = part.split()
        if words:
            directives[words[0]] = words[1:]
    return directives


def test_the_policy_is_strict():
    directives = settings.CONTENT_SECURITY_POLICY["DIRECTIVES"]
    for directive in ("script-src", "style-src", "default-src"):
        assert "'unsafe-inline'" not in directives[directive] and "'unsafe-eval'" not in directives[directive]
    assert directives["default-src"] == ["'self'"]
    assert directives["object-src"] == ["'none'"] and directives["frame-ancestors"] == ["'none'"]
    assert directives["base-uri"] == ["'none'"] and directives["form-action"] == ["'self'"]


@pytest.mark.parametrize("path", ["/healthz", "/predictors", "/api/schema", "/admin/login/", "/static/admin/css/base.css"])
def test_every_response_carries_the_security_headers(anon_api, path):
    response = anon_api.get(path)
    directives = policy_of(response)
    assert directives["default-src"] == ["'self'"]
    assert directives["script-src"][0] == "'self'" and "'unsafe-inline'" not in directives["script-src"]
    assert directives["frame-ancestors"] == ["'none'"] and directives["object-src"] == ["'none'"]
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"
    if not path.startswith("/static/"):  # WhiteNoise answers static files before the clickjacking middleware
        assert response["X-Frame-Options"] == "DENY"
    assert "camera=()" in response["Permissions-Policy"] and "geolocation=()" in response["Permissions-Policy"]


def test_an_api_answer_carries_the_policy_django_csp_builds_and_follows_its_settings(anon_api, settings):
    # API answers use no nonce, so their policy is built once (config.security.CSPMiddleware);
    # it must be django-csp's own, and change with the setting.
    from csp.utils import build_policy

    assert anon_api.get("/healthz")["Content-Security-Policy"] == build_policy()
    settings.CONTENT_SECURITY_POLICY = {"DIRECTIVES": {"default-src": ["'none'"], "frame-ancestors": ["'none'"]}}
    assert policy_of(anon_api.get("/healthz")) == {"default-src": ["'none'"], "frame-ancestors": ["'none'"]}
    settings.CONTENT_SECURITY_POLICY_REPORT_ONLY = {"DIRECTIVES": {"img-src": ["'self'"]}}
    report_only = anon_api.get("/healthz")["Content-Security-Policy-Report-Only"]
    assert "img-src 'self'" in report_only and report_only == build_policy(report_only=True)


def test_a_page_nonce_is_fresh_for_every_request(client):
    first = policy_of(client.get("/admin/login/"))
    second = policy_of(client.get("/api/docs"))
    third = policy_of(client.get("/api/docs"))
    nonces = [n for d in (second, third) for n in d["script-src"] if n.startswith("'nonce-")]
    assert len(nonces) == 2 and nonces[0] != nonces[1]
    assert not any(n.startswith("'nonce-") for n in first["script-src"])  # no inline script there: no nonce


def test_the_hash_of_djangos_change_list_style_is_current():
    """settings.CSP_DJANGO_ADMIN_CHANGELIST_STYLE allows the one inline <style> of Django's
    admin change list; a Django upgrade that changes it fails here."""
    template = Path(django.__file__).parent / "contrib/admin/templates/admin/change_list.html"
    blocks = re.findall(r"<style>(.*?)</style>", template.read_text(), re.S)
    assert len(blocks) == 1
    digest = base64.b64encode(hashlib.sha256(blocks[0].encode()).digest()).decode()
    assert settings.CSP_DJANGO_ADMIN_CHANGELIST_STYLE == f"'sha256-{digest}'"


class _Inline(HTMLParser):
    """Inline <script>/<style> blocks with their nonce, event-handler attributes, javascript: URLs."""

    def __init__(self):
        super().__init__(convert_charrefs=False)
        self.blocks: list[tuple[str, str | None, str]] = []  # (tag, nonce, text)
        self.handlers: list[str] = []
        self.js_urls: list[str] = []
        self._open: tuple[str, str | None] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag, attrs):
        values = dict(attrs)
        for name, value in attrs:
            if name.startswith("on"):
                self.handlers.append(f"<{tag} {name}=…>")
            if name in ("href", "src", "action", "formaction") and (value or "").strip().lower().startswith("javascript:"):
                self.js_urls.append(f"<{tag} {name}={value}>")
        # A data block (<script type="application/json">, json_script) is never run: CSP leaves it alone.
        data_block = tag == "script" and (values.get("type") or "text/javascript") not in ("text/javascript", "module")
        if tag == "style" or (tag == "script" and "src" not in values and not data_block):
            self._open = (tag, values.get("nonce"))
            self._text = []

    def handle_data(self, data):
        if self._open:
            self._text.append(data)

    def handle_entityref(self, name):
        if self._open:
            self._text.append(f"&{name};")

    def handle_charref(self, name):
        if self._open:
            self._text.append(f"&#{name};")

    def handle_endtag(self, tag):
        if self._open and tag == self._open[0]:
            self.blocks.append((tag, self._open[1], "".join(self._text)))
            self._open = None


def assert_nothing_inline_is_blocked(response, where: str) -> int:
    """Every inline block of the page is allowed by its own CSP header; returns how many."""
    assert response["Content-Type"].startswith("text/html"), where
    directives = policy_of(response)
    page = _Inline()
    page.feed(response.content.decode())
    assert not page.handlers, (where, page.handlers)
    assert not page.js_urls, (where, page.js_urls)
    for tag, nonce, text in page.blocks:
        allowed = directives["script-src" if tag == "script" else "style-src"]
        digest = base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
        ok = (nonce and f"'nonce-{nonce}'" in allowed) or f"'sha256-{digest}'" in allowed
        assert ok, (where, tag, nonce, text[:200])
    return len(page.blocks)


@pytest.fixture
def superuser(db):
    return get_user_model().objects.create_superuser("root", "root@example.com", "pw-root-123")


def test_no_page_has_inline_script_or_style_the_policy_blocks(loan, client, superuser, client_key, reviewer, make_api):
    """The admin (index, every change list and add form), the dashboards, the review queue
    and decision page, the registry's charts, the appeal pages, the API docs and the login
    and locked-out pages."""
    prediction, _ = prediction_create(predictor=loan, policy=loan.routing, client=client_key[0], clean_input=factories.loan_input())
    pages = {}

    # The end user's pages (no login): the appeal page and an unknown link.
    pages["appeal"] = client.get(f"/appeal/{appeal_token(prediction.pk)}", HTTP_ACCEPT="text/html")
    pages["appeal unknown"] = client.get("/appeal/not-a-link", HTTP_ACCEPT="text/html")
    pages["login"] = client.get("/admin/login/")
    pages["api docs"] = client.get("/api/docs")

    # A reviewer's decision page (with the keyboard script).
    rita = reviewer[0]
    task = review_task_claim_next(reviewer=rita)
    client.force_login(rita)
    pages["queue"] = client.get(reverse("admin:review_reviewtask_queue"))
    pages["decide"] = client.get(reverse("admin:review_reviewtask_decide", args=[task.pk]))
    client.logout()

    client.force_login(superuser)
    pages["index"] = client.get(reverse("admin:index"))
    pages["dashboards"] = client.get(reverse("admin:gateway_predictor_dashboards"))
    pages["dashboard"] = client.get(reverse("admin:gateway_predictor_dashboard", args=["loan-approval"]))
    pages["training charts"] = client.get(reverse("admin:models_registry_trainingrun_charts"))
    pages["training chart"] = client.get(reverse("admin:models_registry_trainingrun_chart", args=["loan-approval"]))
    request = RequestFactory().get("/admin/")
    request.user = superuser
    for model, model_admin in admin.site._registry.items():
        meta = model._meta
        pages[f"{meta.label} list"] = client.get(reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist"))
        if model_admin.has_add_permission(request):
            pages[f"{meta.label} add"] = client.get(reverse(f"admin:{meta.app_label}_{meta.model_name}_add"))
    pages["prediction change"] = client.get(reverse("admin:gateway_prediction_change", args=[prediction.pk]))
    client.logout()

    blocks = 0
    for where, response in pages.items():
        assert response.status_code == (404 if where == "appeal unknown" else 200), (where, response.status_code)
        blocks += assert_nothing_inline_is_blocked(response, where)
    assert blocks >= 5  # the nonce'd blocks were seen (appeal, decide ×2, dashboards, docs ×2)


def test_the_locked_out_page_passes_the_policy(client, operator, settings):
    settings.AXES_FAILURE_LIMIT = 1
    response = client.post("/admin/login/", {"username": "otto", "password": "wrong", "next": "/admin/"})
    assert response.status_code == 429
    assert_nothing_inline_is_blocked(response, "locked out")
