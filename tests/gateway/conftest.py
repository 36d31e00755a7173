from __future__ import annotations

import pytest

from gateway.services import routing_update
from tests import factories

from .helpers import post_json


@pytest.fixture
def predict(client_api, loan):
    """POST /predict/loan-approval as the default API client: predict(body, **extra)."""

    def call(body, api=None, slug="loan-approval", **extra):
        return post_json(api or client_api, f"/predict/{slug}", body, **extra)

    return call


@pytest.fixture
def other_client_api(db, make_api):
    """A second API client, allowed on every predictor."""
    _, key = factories.api_client_with_key(name="globex")
    return make_api(f"Bearer {key}")


@pytest.fixture
def rule_mode(loan):
    return routing_update(predictor=loan, changes={"mode": "rule"})


@pytest.fixture
def model_mode(loan):
    return routing_update(predictor=loan, changes={"mode": "model"})
