"""What every browser test shares: Debian's headless Chromium driven by Playwright (never a
downloaded browser), and screenshots in test-artifacts/screenshots/ at the repository root,
which CI keeps."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"


def screenshot(page, test: str, step: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{test}--{step}.png"), full_page=True)


@pytest.fixture
def chromium(monkeypatch):
    # Playwright's sync API keeps an event loop in this thread; the test's own ORM calls
    # are ordinary synchronous ones (the server under test runs in its own thread).
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    if not os.path.exists(CHROMIUM):
        pytest.fail("Debian's chromium is required (scripts/ensure-system-deps.sh chromium installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # The test's ORM calls now run in Playwright's greenlet, whose context may hold a
        # database connection from an earlier browser test; one that a restart of the server
        # killed since (tests/faults) would fail the first query. Start from fresh ones.
        from django.db import connections

        connections.close_all()
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
        yield browser
        browser.close()
