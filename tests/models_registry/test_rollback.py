"""Promotion and rollback over HTTP and the command line: who may, what is refused and how
(409 naming the gates, 422 field by field), what the history keeps, and what the operator
API shows of runs and versions."""
from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from gateway.services import routing_update
from models_registry.gates import version_gates_apply
from models_registry.models import ModelVersion, TrainingRun
from models_registry.services import model_version_promote
from models_registry.training import training_run_execute
from review.models import Label
from tests import factories
from tests.gateway.helpers import error_fields, post_json, problem_body

from .test_gates import _gates, _version

pytestmark = pytest.mark.django_db

ROLLBACK = "/predictors/loan-approval/rollback"


def _promote_url(number: int) -> str:
    return f"/predictors/loan-approval/models/{number}/promote"


def _three_champions(loan, user=None) -> list[ModelVersion]:
    """v1, v2, v3 promoted in turn: v3 is the champion, v1 and v2 archived."""
    versions = [_version(loan, n) for n in (1, 2, 3)]
    for version in versions:
        model_version_promote(version=version, user=user, reason=f"ship v{version.version}")
    return [ModelVersion.objects.get(pk=v.pk) for v in versions]


def _stage(number: int) -> str:
    return ModelVersion.objects.get(version=number).stage


# --- rollback over HTTP -------------------------------------------------------------------------

def test_rollback_restores_the_previous_champion_and_a_second_goes_further_back(loan, operator_api, operator):
    _three_champions(loan)
    response = post_json(operator_api, ROLLBACK, {"reason": "v3 refers everyone"})
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["version"], body["stage"]) == (2, "champion")
    assert body["stage_reason"] == "restored by rollback of v3: v3 refers everyone"
    assert body["stage_history"][-1]["by"] == operator[0].username
    assert (_stage(1), _stage(2), _stage(3)) == ("archived", "champion", "rejected")
    rolled = ModelVersion.objects.get(version=3).history.latest("history_date")
    assert (rolled.history_user, rolled.stage, rolled.stage_reason) == (
        operator[0], "rejected", "rolled back to v2: v3 refers everyone",
    )

    # Again: further back, never forth (v3 is rejected, not archived).
    response = post_json(operator_api, ROLLBACK, {})
    assert response.status_code == 200 and response.json()["version"] == 1
    assert (_stage(1), _stage(2), _stage(3)) == ("champion", "rejected", "rejected")

    # Nothing earlier than v1: 409, and nothing changes.
    body = problem_body(post_json(operator_api, ROLLBACK, {}), 409)
    assert "only version" in body["detail"]
    assert _stage(1) == "champion"


def test_rollback_without_a_champion_is_409(loan, operator_api):
    problem_body(operator_api.post(ROLLBACK), 409)
    _version(loan, 1)
    body = problem_body(operator_api.post(ROLLBACK), 409)
    assert "no champion" in body["detail"]


@pytest.mark.parametrize(
    "payload, fields",
    [
        ({"reason": "x", "force": True}, {"force"}),
        ({"because": "x"}, {"because"}),
        ({"reason": 7}, {"reason"}),
        ({"reason": "x" * 1001}, {"reason"}),
        ([], {""}),
    ],
)
def test_rollback_bad_bodies_are_422_field_by_field(loan, operator_api, payload, fields):
    _three_champions(loan)
    body = problem_body(post_json(operator_api, ROLLBACK, payload), 422)
    assert error_fields(body) == fields
    assert _stage(3) == "champion"


def test_rollback_of_an_unknown_predictor_is_404(loan, operator_api):
    problem_body(operator_api.post("/predictors/nope/rollback"), 404)


# --- promote over HTTP ------------------------------------------------------------------------

def test_promote_names_the_gates_that_stop_it_and_force_needs_a_reason(loan, operator_api, operator):
    _gates(loan, {"min_metrics": {"accuracy": 0.95}, "max_metrics": {"log_loss": 0.5}})
    version_gates_apply(version=_version(loan, 1))
    body = problem_body(post_json(operator_api, _promote_url(1), {}), 409)
    assert "min_metrics.accuracy (failed)" in body["detail"] and "log_loss" not in body["detail"]

    body = problem_body(post_json(operator_api, _promote_url(1), {"force": True}), 422)
    assert error_fields(body) == {"reason"}
    body = problem_body(post_json(operator_api, _promote_url(1), {"force": True, "reason": "   "}), 422)
    assert error_fields(body) == {"reason"}
    body = problem_body(post_json(operator_api, _promote_url(1), {"force": "yes", "reason": 3, "extra": 1}), 422)
    assert error_fields(body) == {"force", "reason", "extra"}
    assert _stage(1) == "rejected"

    response = post_json(operator_api, _promote_url(1), {"force": True, "reason": "holdout too small to trust"})
    assert response.status_code == 200
    body = response.json()
    assert body["stage"] == "champion"
    assert body["stage_history"][-1] == {
        "stage": "champion", "reason": "forced past min_metrics.accuracy: holdout too small to trust",
        "by": operator[0].username, "at": body["stage_history"][-1]["at"],
    }


def test_promote_with_a_pending_shadow_gate_is_409(loan, operator_api):
    _gates(loan, {"min_shadow_agreement": {"rate": 0.8, "min_requests": 5}})
    version_gates_apply(version=_version(loan, 1))
    body = problem_body(post_json(operator_api, _promote_url(1), {"reason": "now"}), 409)
    assert "min_shadow_agreement (pending)" in body["detail"]
    assert _stage(1) == "challenger"


# --- who may --------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", [ROLLBACK, _promote_url(1)])
def test_reviewers_and_api_clients_are_403_and_anonymous_401(loan, reviewer_api, client_api, anon_api, path):
    _three_champions(loan)
    problem_body(post_json(reviewer_api, path, {"reason": "x"}), 403)
    problem_body(post_json(client_api, path, {"reason": "x"}), 403)
    problem_body(post_json(anon_api, path, {"reason": "x"}), 401)
    assert (_stage(1), _stage(2), _stage(3)) == ("archived", "archived", "champion")


def test_a_user_with_only_view_permission_is_403(loan, make_api):
    from django.contrib.auth.models import Permission

    from gateway.roles import REVIEWERS
    from gateway.services import person_create

    user, token = person_create(username="vic", group=REVIEWERS)
    user.user_permissions.add(Permission.objects.get(codename="view_modelversion"))
    _three_champions(loan)
    api = make_api(f"Token {token}")
    assert api.get("/predictors/loan-approval/models").status_code == 200
    problem_body(api.post(ROLLBACK), 403)


# --- commands ---------------------------------------------------------------------------------------

def _run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_rollback_command_records_who_and_why(loan, operator):
    _three_champions(loan)
    out = _run("rollback", "loan-approval", "--reason", "alerts fired", "--user", operator[0].username)
    assert "v2 is the champion again" in out
    record = ModelVersion.objects.get(version=2).history.latest("history_date")
    assert (record.history_user, record.stage_reason) == (operator[0], "restored by rollback of v3: alerts fired")
    assert "v1 is the champion again" in _run("rollback", "loan-approval")
    assert ModelVersion.objects.get(version=1).stage_reason.endswith("rolled back with manage.py rollback")
    with pytest.raises(CommandError, match="nothing to roll back"):
        _run("rollback", "loan-approval")
    with pytest.raises(CommandError, match="no predictor"):
        _run("rollback", "nope")
    with pytest.raises(CommandError, match="no active user"):
        _run("rollback", "loan-approval", "--user", "ghost")


def test_promote_command_shows_gates_and_forces_only_with_a_reason(loan):
    _gates(loan, {"min_metrics": {"accuracy": 0.95}})
    version_gates_apply(version=_version(loan, 1))
    with pytest.raises(CommandError, match=r"this version was rejected .*; to promote it anyway, force it with a written reason"):
        _run("promote", "loan-approval", "1")
    with pytest.raises(CommandError, match="--force needs a written --reason"):
        _run("promote", "loan-approval", "1", "--force")
    out = _run("promote", "loan-approval", "1", "--force", "--reason", "manual review says fine")
    assert "gate min_metrics.accuracy: FAILED" in out and "is now the champion" in out
    assert _stage(1) == "champion"


# --- what the operator API shows --------------------------------------------------------------

def test_models_list_and_run_detail_show_everything_the_run_and_version_hold(loan, operator_api, operator):
    _gates(loan, {"min_metrics": {"accuracy": 0.8}, "beat_champion": {"metric": "f1_macro", "margin": 0.0}})
    version = _version(
        loan, 1,
        metrics={"accuracy": 0.9, "f1_macro": 0.88, "calibration": {"brier": 0.1, "ece": 0.03}},
        champion_metrics={"f1_macro": 0.8}, fairness={"demographic_parity_difference": 0.05},
    )
    TrainingRun.objects.filter(pk=version.run_id).update(
        params={"estimator": "logistic_regression", "hyperparameters": {"C": 1.0}},
        dataset={"label_ids": [3, 1, 2], "label_ids_sha256": "ab" * 32, "n_labels": 3},
        environment={"python": "3.12"}, logs="fitting…\ndone", peak_memory_bytes=123456, duration_seconds=1.5,
        requested_by=operator[0],
    )
    version_gates_apply(version=version)
    model_version_promote(version=version, user=operator[0], reason="first")

    listed = operator_api.get("/predictors/loan-approval/models").json()["results"]
    assert len(listed) == 1
    item = listed[0]
    assert (item["version"], item["stage"], item["gates_passed"], item["serving_format"]) == (1, "champion", True, "skops")
    assert [g["gate"] for g in item["gates"]] == ["min_metrics.accuracy", "beat_champion"]
    assert [(h["stage"], h["by"]) for h in item["stage_history"]] == [("candidate", None), ("champion", operator[0].username)]
    run = item["run"]
    assert run["metrics"]["calibration"]["ece"] == 0.03 and run["champion_metrics"] == {"f1_macro": 0.8}
    assert run["fairness"]["demographic_parity_difference"] == 0.05
    assert run["params"]["hyperparameters"] == {"C": 1.0} and run["environment"] == {"python": "3.12"}
    assert run["dataset"] == {"label_ids_sha256": "ab" * 32, "n_labels": 3, "n_label_ids": 3}  # no id list
    assert (run["duration_seconds"], run["peak_memory_bytes"], run["requested_by"]) == (1.5, 123456, operator[0].username)
    assert "logs" not in run

    detail = operator_api.get(f"/training-runs/{version.run_id}").json()
    assert detail["logs"] == "fitting…\ndone"
    assert detail["dataset"]["label_ids"] == [3, 1, 2]
    assert detail["model_version"] == 1 and detail["gates_passed"] is True and len(detail["gates"]) == 2
    assert detail["version"]["stage"] == "champion" and detail["version"]["stage_history"][-1]["reason"] == "first"
    assert detail["peak_memory_bytes"] == 123456


def test_the_schema_documents_rollback_and_the_new_fields(anon_api):
    schema = json.loads(anon_api.get("/api/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json").content)
    operation = schema["paths"]["/predictors/{slug}/rollback"]["post"]
    assert {"200", "401", "403", "404", "409", "422"} <= set(operation["responses"])
    version = schema["components"]["schemas"]["ModelVersion"]["properties"]
    assert {"gates", "gates_passed", "stage_history", "serving_format", "run"} <= set(version)
    run = schema["components"]["schemas"]["TrainingRunDetail"]["properties"]
    assert {"logs", "champion_metrics", "fairness", "peak_memory_bytes", "version", "gates"} <= set(run)


# --- a really trained pair, served --------------------------------------------------------------

def _train(loan, seed: int) -> ModelVersion:
    for i in range(16):
        approve = (i + seed) % 2 == 0
        Label.objects.create(
            predictor=loan, schema_version=loan.schema_version, source="import",
            input=factories.loan_input(amount=5000 + 700 * i + seed, years_trading=8 if approve else 1, has_collateral=approve),
            target="approve" if approve else "refer",
        )
    run = training_run_execute(run_id=TrainingRun.objects.create(predictor=loan).pk)
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    return ModelVersion.objects.get(run=run)


def test_after_a_rollback_the_restored_version_answers(loan, operator_api, operator, client_api, settings):
    settings.OZ_MIN_TRAINING_LABELS = 8
    first, second = _train(loan, 0), _train(loan, 1)
    model_version_promote(version=first, user=operator[0], reason="first model")
    model_version_promote(version=second, user=operator[0], reason="more labels")
    routing_update(predictor=loan, changes={"mode": "model", "fallback": "human"}, user=operator[0], reason="models now")

    def answered_by() -> int:
        response = post_json(client_api, "/predict/loan-approval", {"input": factories.loan_input()})
        assert response.status_code == 200, response.content
        return response.json()["model_version"]

    assert answered_by() == second.version
    assert post_json(operator_api, ROLLBACK, {"reason": "v2 drifted"}).status_code == 200
    settings.OZ_SERVING_CACHE_SECONDS = 0  # other processes see it within the cache lifetime; here at once
    assert answered_by() == first.version
