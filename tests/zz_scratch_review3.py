import json
import pytest
from unittest import mock

from gateway.models import RoutingPolicy
from gateway.routing import Answer, route_decide
from models_registry.models import ModelVersion, Stage, ShadowPrediction
from models_registry.gates import version_gates_apply, gates_evaluate
from models_registry import gates as gates_mod
from models_registry.services import model_version_promote
from tests.models_registry.test_gates import _version, _gates
from tests.gateway.helpers import post_json

pytestmark = pytest.mark.django_db


def test_B_unevaluated_gates_do_not_block_promotion(loan, operator_api, capsys):
    # Predictor demands accuracy >= 0.99; v1 scored 0.9. Its gates were never applied
    # (worker died after the commit, or version_gates_apply raised and was logged).
    _gates(loan, {"min_metrics": {"accuracy": 0.99}})
    parity = {"gate": "onnx_parity", "passed": True, "value": 0, "threshold": 1e-4, "detail": "x", "informational": True}
    _version(loan, 1, gates=[parity])
    r = post_json(operator_api, "/predictors/loan-approval/models/1/promote", {})
    with capsys.disabled():
        print("\nB:", r.status_code, r.json().get("stage"), r.json().get("gates_passed"))
    # for contrast, evaluated:
    v2 = version_gates_apply(version=_version(loan, 2))
    r2 = post_json(operator_api, "/predictors/loan-approval/models/2/promote", {})
    with capsys.disabled():
        print("B contrast (evaluated):", v2.stage, r2.status_code)


def test_A_null_body_promotes(loan, operator_api, capsys):
    _version(loan, 1)
    r = operator_api.post("/predictors/loan-approval/models/1/promote", data="null", content_type="application/json")
    r2 = operator_api.patch("/predictors/loan-approval/routing", data="null", content_type="application/json")
    with capsys.disabled():
        print("\nA: promote null ->", r.status_code, r.json().get("stage"), "| routing null ->", r2.status_code)


def test_C_kill_switch_still_lets_model_answer(loan, capsys):
    policy = RoutingPolicy(predictor=loan, mode="human", fallback="human", canary_percent=0.0, max_queue_depth=5, version=9)
    calls = []
    def ask_model():
        calls.append(1)
        return Answer(output="approve", source="model", confidence=0.9, model_version=3)
    d = route_decide(policy=policy, slug="loan-approval", request_key="k", prediction_key="p", has_champion=True,
                     ask_rule=lambda: None, ask_model=ask_model, queue_depth=lambda: 6)
    with capsys.disabled():
        print("\nC:", d.route.as_dict(), d.answer)


def test_C2_canary_model_error_asks_model_twice(loan, capsys):
    policy = RoutingPolicy(predictor=loan, mode="human", fallback="human", canary_percent=100.0, max_queue_depth=5, version=9)
    calls = []
    def ask_model():
        calls.append(1)
        raise RuntimeError("boom")
    d = route_decide(policy=policy, slug="loan-approval", request_key="k", prediction_key="p", has_champion=True,
                     ask_rule=lambda: None, ask_model=ask_model, queue_depth=lambda: 6)
    with capsys.disabled():
        print("\nC2: model calls", len(calls), d.route.as_dict(), d.task_kind)


def test_D_stale_gate_evaluation_overwrites(loan, capsys):
    from gateway.services import prediction_create
    from review.models import Label
    from tests import factories
    _gates(loan, {"min_shadow_agreement": {"rate": 0.5, "min_requests": 1}}, auto_promote=True)
    v1 = version_gates_apply(version=_version(loan, 1))
    assert v1.stage == Stage.CHALLENGER
    stale = gates_evaluate(version=ModelVersion.objects.select_related("predictor", "run").get(pk=v1.pk))  # "worker A" reads: pending
    # evidence arrives; "worker B" applies and auto-promotes
    p, _ = prediction_create(predictor=loan, policy=loan.routing, client=None, clean_input=factories.loan_input(), live_versions=(None, None))
    ShadowPrediction.objects.create(prediction=p, model_version=v1, output="approve")
    Label.objects.create(predictor=loan, prediction=p, schema_version=1, input=p.input, target="approve", source="review")
    v1 = version_gates_apply(version=v1)
    with capsys.disabled():
        print("\nD after fresh apply:", v1.stage, v1.gates_passed)
    # worker A now takes the lock with its stale evaluation
    with mock.patch.object(gates_mod, "gates_evaluate", return_value=stale):
        v1 = version_gates_apply(version=v1)
    with capsys.disabled():
        print("D after stale apply:", v1.stage, v1.gates_passed, [g["passed"] for g in v1.gates])


def test_E_regression_agreement(capsys):
    from review.services import _same_answer
    with capsys.disabled():
        print("\nE:", _same_answer(41999.87, 42000), _same_answer(42000.0, 42000))
