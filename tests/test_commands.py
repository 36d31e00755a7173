"""The management commands of API.md, as an operator uses them."""
from __future__ import annotations

import re
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from gateway.models import Prediction, RoutingPolicy
from models_registry.models import ModelVersion
from review.models import Label, ReviewTask
from tests import factories


def _run(*args, **kwargs) -> str:
    out = StringIO()
    call_command(*args, stdout=out, **kwargs)
    return out.getvalue()


@pytest.mark.django_db
def test_create_api_client_prints_a_working_scoped_key(loan, make_api):
    out = _run("create_api_client", "shop", "--predictors", "loan-approval")
    key = re.search(r"(oz_\S+)", out).group(1)
    response = make_api(f"Bearer {key}").post("/predict/loan-approval", {"input": factories.loan_input()}, format="json")
    assert response.status_code == 202
    with pytest.raises(CommandError, match="already exists"):
        _run("create_api_client", "shop")
    with pytest.raises(CommandError, match="no such predictor"):
        _run("create_api_client", "other", "--predictors", "nope")
    for empty in ("", " , "):  # an empty scope is refused, not read as "all predictors"
        with pytest.raises(CommandError, match="names no predictor"):
            _run("create_api_client", "other", "--predictors", empty)


@pytest.mark.django_db
def test_create_reviewer_and_operator_print_working_tokens(loan, make_api):
    reviewer_token = re.search(r"(ozu_\S+)", _run("create_reviewer", "ann", "--password", "pw-ann-123")).group(1)
    operator_token = re.search(r"(ozu_\S+)", _run("create_operator", "ola")).group(1)
    assert make_api(f"Token {reviewer_token}").post("/review/claim").status_code == 204
    assert make_api(f"Token {reviewer_token}").patch(
        "/predictors/loan-approval/routing", {"mode": "rule"}, format="json"
    ).status_code == 403
    assert make_api(f"Token {operator_token}").patch(
        "/predictors/loan-approval/routing", {"mode": "rule"}, format="json"
    ).status_code == 200


@pytest.mark.django_db
def test_a_person_commands_password_meets_the_password_rules(client):
    from django.contrib.auth import get_user_model

    for weak in ("short", "password123", "12345678901"):  # too short, too common, all digits
        with pytest.raises(CommandError, match="--password: "):
            _run("create_operator", "ola", "--password", weak)
    assert not get_user_model().objects.filter(username="ola").exists()
    assert "admin login: yes)" in _run("create_operator", "ola", "--password", "sound-Pass-4821")
    # Run again without a password: the one set before still logs in, and the output says so.
    assert "admin login: yes, with the password set before" in _run("create_operator", "ola")
    assert client.login(username="ola", password="sound-Pass-4821")


@pytest.mark.django_db
def test_set_routing(loan):
    out = _run("set_routing", "loan-approval", "--mode", "rule", "--reason", "weekend")
    assert "mode=rule" in out
    policy = RoutingPolicy.objects.get(predictor=loan)
    assert policy.mode == "rule" and policy.version == 2
    assert policy.history.first().history_change_reason == "weekend"
    with pytest.raises(CommandError):
        _run("set_routing", "nope", "--mode", "rule")


@pytest.mark.django_db
def test_demo_traffic_with_simulated_reviewer_produces_labels(loan):
    out = _run("demo_traffic", "loan-approval", "--n", "25", "--simulate-reviewer", "--seed", "4")
    assert "decided 25 tasks" in out
    assert Prediction.objects.filter(predictor=loan, status="answered", source="human").count() == 25
    assert Label.objects.filter(predictor=loan, source="review").count() == 25
    assert set(Label.objects.values_list("target", flat=True)) <= {"approve", "refer"}


@pytest.mark.django_db
def test_demo_traffic_with_consensus_plays_a_panel_that_settles_every_task(loan):
    loan.reviews_required = 2
    loan.save(update_fields=["reviews_required"])
    out = _run("demo_traffic", "loan-approval", "--n", "20", "--simulate-reviewer", "--seed", "4", "--mistake-rate", "0.3")
    assert "3 simulated reviewers" in out
    # Every prediction is answered: agreements settle at once, disagreements via adjudication.
    assert Prediction.objects.filter(predictor=loan, status="answered", source="human").count() == 20
    assert not ReviewTask.objects.exclude(status="decided").exists()
    assert ReviewTask.objects.filter(kind="adjudication").exists()  # 30% mistakes make some disputes


@pytest.mark.django_db(transaction=True)
def test_train_wait_and_promote_through_a_worker(celery_worker_thread, settings):
    settings.OZ_MIN_TRAINING_LABELS = 20
    factories.loan_predictor()
    _run("demo_traffic", "loan-approval", "--n", "60", "--simulate-reviewer", "--seed", "5")
    out = _run("train", "loan-approval", "--wait", "--timeout", "60")
    assert '"status": "succeeded"' in out and "model version 1" in out
    assert "is now the champion" in _run("promote", "loan-approval", "1")
    assert ModelVersion.objects.get(version=1).stage == "champion"
    with pytest.raises(CommandError, match="no model version 7"):
        _run("promote", "loan-approval", "7")
