"""Production settings: refuse to start without a secret key; pass Django's deploy checks."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _manage(*args: str, env: dict) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_URL"))}
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env={**base, **env}, capture_output=True, text=True, timeout=120
    )


PRODUCTION = {
    "DJANGO_SETTINGS_MODULE": "config.settings.production",
    "DJANGO_ALLOWED_HOSTS": "oz.example.com",
    "DATABASE_URL": "postgres://oz:secret@db.example.com:5432/oz",
}


def test_production_refuses_to_start_without_secret_key():
    result = _manage("check", env=PRODUCTION)
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY" in result.stderr


def test_production_passes_deploy_checks():
    secret = "x" * 30 + "y7$Zq!" * 10
    result = _manage("check", "--deploy", "--fail-level", "WARNING", env={**PRODUCTION, "DJANGO_SECRET_KEY": secret})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_migrations_are_complete():
    local = {"DJANGO_SETTINGS_MODULE": "config.settings.local", "DATABASE_URL": "sqlite:///:memory:"}
    result = _manage("makemigrations", "--check", "--dry-run", env=local)
    assert result.returncode == 0, result.stdout + result.stderr
