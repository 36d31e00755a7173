"""Test data, built through the same services production uses wherever one exists."""
from __future__ import annotations

from pathlib import Path

from django.conf import settings

from gateway.definitions import predictors_load
from gateway.models import Predictor
from gateway.roles import OPERATORS, REVIEWERS
from gateway.services import api_client_create, person_create

DEMO_PREDICTORS = Path(settings.BASE_DIR) / "predictors"


def loan_predictor() -> Predictor:
    predictors_load(DEMO_PREDICTORS / "loan-approval.yaml")
    return Predictor.objects.select_related("routing").get(slug="loan-approval")


def api_client_with_key(name: str = "acme", predictor_slugs: list[str] | None = None):
    return api_client_create(name=name, predictor_slugs=predictor_slugs)


def reviewer_with_token(username: str = "rita", password: str | None = "pw-rita-123"):
    return person_create(username=username, group=REVIEWERS, password=password)


def operator_with_token(username: str = "otto", password: str | None = "pw-otto-123"):
    return person_create(username=username, group=OPERATORS, password=password)


def loan_input(**overrides) -> dict:
    data = {"amount": 12000, "years_trading": 4, "sector": "food", "has_collateral": False}
    data.update(overrides)
    return data
