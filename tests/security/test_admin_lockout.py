"""Admin login brute-force limit (django-axes, database handler): a username tried from one
address is locked after AXES_FAILURE_LIMIT (OZ_AXES_FAILURE_LIMIT) failures; the login then
answers 429 with Retry-After and a page saying so, even to the right password, until the
cool-off passes. Other usernames and other addresses are not locked; the API's keys and
tokens, force_login and the test client's login() are untouched."""
from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.test import Client

pytestmark = pytest.mark.django_db

LOGIN = "/admin/login/"


@pytest.fixture
def otto_user(operator):
    return operator[0]


def _login(client: Client, username: str, password: str, address: str = "127.0.0.1"):
    return client.post(LOGIN, {"username": username, "password": password, "next": "/admin/"}, REMOTE_ADDR=address)


def _fail(client: Client, times: int, username: str = "otto", address: str = "127.0.0.1"):
    responses = [_login(client, username, "wrong-password", address) for _ in range(times)]
    return responses


def test_the_backend_order_and_lockout_settings():
    assert settings.AUTHENTICATION_BACKENDS[0] == "config.security.LoginLockoutBackend"
    from axes.backends import AxesStandaloneBackend

    from config.security import LoginLockoutBackend

    assert issubclass(LoginLockoutBackend, AxesStandaloneBackend)
    assert settings.AXES_LOCKOUT_PARAMETERS == [["username", "ip_address"]]
    assert settings.AXES_HANDLER == "axes.handlers.database.AxesDatabaseHandler"
    assert settings.AXES_FAILURE_LIMIT == 5 and settings.AXES_COOLOFF_TIME == timedelta(minutes=15)
    assert settings.MIDDLEWARE[-1] == "axes.middleware.AxesMiddleware"


def test_the_limit_locks_that_username_from_that_address(client, otto_user):
    limit = settings.AXES_FAILURE_LIMIT
    before = _fail(client, limit - 1)
    assert [r.status_code for r in before] == [200] * (limit - 1)
    assert "Please enter the correct username and password" in before[-1].content.decode()

    locked = _fail(client, 1)[0]
    assert locked.status_code == 429
    assert locked["Retry-After"] == str(15 * 60)
    page = locked.content.decode()
    assert 'id="oz-locked-out"' in page and "15 minutes" in page and 'name="password"' not in page

    # Locked: even the right password is refused, and no session is made.
    right = _login(client, "otto", "pw-otto-123")
    assert right.status_code == 429
    assert "_auth_user_id" not in client.session
    attempt = AccessAttempt.objects.get(username="otto")
    assert attempt.ip_address == "127.0.0.1" and attempt.failures_since_start >= limit
    assert "wrong-password" not in str(attempt.post_data)


def test_other_usernames_and_other_addresses_are_not_locked(client, otto_user):
    from tests import factories

    factories.operator_with_token("olga", password="pw-olga-123")
    _fail(client, settings.AXES_FAILURE_LIMIT)
    assert _login(client, "otto", "pw-otto-123").status_code == 429

    elsewhere = Client()
    assert _login(elsewhere, "otto", "pw-otto-123", address="10.1.2.3").status_code == 302
    same_address = Client()
    assert _login(same_address, "olga", "pw-olga-123").status_code == 302


def test_a_successful_login_resets_the_count(client, otto_user):
    limit = settings.AXES_FAILURE_LIMIT
    _fail(client, limit - 1)
    assert _login(client, "otto", "pw-otto-123").status_code == 302
    client.logout()
    assert [r.status_code for r in _fail(client, limit - 1)] == [200] * (limit - 1)


def test_the_lock_ends_after_the_cool_off(client, otto_user):
    _fail(client, settings.AXES_FAILURE_LIMIT)
    assert _login(client, "otto", "pw-otto-123").status_code == 429
    AccessAttempt.objects.update(attempt_time=AccessAttempt.objects.get().attempt_time - timedelta(minutes=16))
    assert _login(client, "otto", "pw-otto-123").status_code == 302


def test_the_limit_is_configurable(client, otto_user, settings):
    settings.AXES_FAILURE_LIMIT = 2
    assert _fail(client, 1)[0].status_code == 200
    assert _fail(client, 1)[0].status_code == 429


def test_the_env_vars_set_the_limits():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "OZ_"))}
    env.update(DJANGO_SETTINGS_MODULE="config.settings.local", DATABASE_URL="sqlite:///:memory:",
               OZ_AXES_FAILURE_LIMIT="7", OZ_AXES_COOLOFF_MINUTES="30", OZ_THROTTLE_AUTH_FAILURES="5/min")
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.AXES_FAILURE_LIMIT, int(s.AXES_COOLOFF_TIME.total_seconds()), s.OZ_THROTTLE_AUTH_FAILURES)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=settings.BASE_DIR, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["7", "1800", "5/min"]


def test_api_tokens_and_test_logins_are_not_affected(client, otto_user, operator, make_api):
    _fail(client, settings.AXES_FAILURE_LIMIT)
    assert _login(client, "otto", "pw-otto-123").status_code == 429
    # The API's token is not a password login: it still works from the same address.
    assert make_api(f"Token {operator[1]}").get("/predictors").status_code == 200
    # force_login and the test client's login() (authenticate() without a request) still work.
    other = Client()
    assert other.login(username="otto", password="pw-otto-123")
    assert other.get("/admin/").status_code == 200
    forced = Client()
    forced.force_login(otto_user)
    assert forced.get("/admin/").status_code == 200
