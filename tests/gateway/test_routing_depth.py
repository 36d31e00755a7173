"""The routing flag at full depth: canary, fallback (no model, model error, low confidence,
rule error), queue overflow, QA sampling and shadow traffic, each recorded in the
prediction's `route`; the flag's new fields validated field by field wherever it is set
(PATCH, YAML, admin, set_routing), shown on the predictor, and revertible from the history."""
from __future__ import annotations

import json
import math
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from config.celery_app import app as celery_app
from gateway import routing as routing_module
from gateway.definitions import definition_parse, predictors_load
from gateway.models import Prediction, Predictor, RoutingPolicy
from gateway.services import prediction_create, routing_update
from gateway.serving_cache import serving_forget
from models_registry import serving
from models_registry.models import ShadowPrediction
from models_registry.services import model_version_challenge, model_version_promote
from models_registry.shadow import shadow_agreement, shadow_run
from review.models import Label, ReviewTask, TaskKind
from review.services import review_task_claim_next, review_task_decide
from tests import factories

from .helpers import error_fields, post_json, problem_body

pytestmark = pytest.mark.django_db

PREDICTION_KEYS = {
    "id", "predictor", "status", "output", "confidence", "scores", "source", "provisional", "model_version",
    "explanation", "route", "created_at", "answered_at", "appeal_url", "links",
}


@pytest.fixture(autouse=True)
def _fresh_serving_cache():
    serving_forget()
    yield
    serving_forget()


def _policy(loan, **changes) -> RoutingPolicy:
    routing_update(predictor=loan, changes=changes)
    return RoutingPolicy.objects.get(predictor=loan)


@pytest.fixture
def champion(loan):
    return model_version_promote(version=factories.trained_version(loan))


@pytest.fixture
def challenger(loan, champion):
    return model_version_challenge(version=factories.trained_version(loan, seed=11))


@pytest.fixture
def predict(client_api, loan):
    def call(body, api=None, **extra):
        return post_json(api or client_api, "/predict/loan-approval", body, **extra)

    return call


@pytest.fixture
def eager_celery():
    """Celery tasks run in-process when their message is sent (as `make run` does)."""
    before = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = before


def _create(loan, **kwargs):
    policy = RoutingPolicy.objects.get(predictor=loan)
    prediction, _ = prediction_create(
        predictor=loan, policy=policy, client=None, clean_input=kwargs.pop("clean_input", factories.loan_input()), **kwargs
    )
    return prediction


def _key_in_canary(percent: float, inside: bool, prefix: str = "key") -> str:
    for i in range(10_000):
        key = f"{prefix}-{i}"
        if routing_module.in_share(percent, "canary", "loan-approval", key) == inside:
            return key
    raise AssertionError("no such key")


def _broken_model(monkeypatch, only_version: int | None = None):
    real = serving.model_answer

    def answer(*, predictor, version, clean_input):
        if only_version is None or version.version == only_version:
            raise RuntimeError("the model fell over")
        return real(predictor=predictor, version=version, clean_input=clean_input)

    monkeypatch.setattr(serving, "model_answer", answer)


# ---------------------------------------------------------------------------------------
# Canary
# ---------------------------------------------------------------------------------------

def test_the_canary_share_over_2000_requests_is_within_binomial_bounds(loan, champion):
    _policy(loan, mode="rule", canary_percent=20)
    n, p = 2000, 0.20
    sources = [_create(loan, routing_key=f"customer-{i}").source for i in range(n)]
    by_model = sources.count("model")
    # Binomial(2000, 0.2): mean 400, sigma ~17.9; four sigma either side.
    assert abs(by_model - n * p) <= 4 * math.sqrt(n * p * (1 - p)), by_model
    assert sources.count("rule") == n - by_model
    canaries = Prediction.objects.filter(source="model")
    assert all(c.route == {"mode": "rule", "reason": "canary", "policy_version": 2, "canary": True} for c in canaries)
    assert not ReviewTask.objects.exists()


def test_the_canary_route_is_stable_per_request_key(loan, champion, predict):
    _policy(loan, mode="human", canary_percent=30)
    inside, outside = _key_in_canary(30, True), _key_in_canary(30, False)
    for _ in range(5):
        answered = predict({"input": factories.loan_input(), "routing_key": inside})
        assert answered.status_code == 200
        body = answered.json()
        assert body["source"] == "model" and body["model_version"] == champion.version
        assert body["route"] == {"mode": "human", "reason": "canary", "policy_version": 2, "canary": True}
        queued = predict({"input": factories.loan_input(), "routing_key": outside})
        assert queued.status_code == 202 and queued.json()["route"]["reason"] == "mode"
        assert "canary" not in queued.json()["route"]


def test_without_a_routing_key_the_idempotency_key_picks_the_canary_bucket(loan, champion, predict):
    _policy(loan, mode="human", canary_percent=50)
    inside = _key_in_canary(50, True, prefix="order")
    response = predict({"input": factories.loan_input()}, HTTP_IDEMPOTENCY_KEY=inside)
    assert response.status_code == 200 and response.json()["route"]["reason"] == "canary"
    # routing_key is part of the question asked: the same Idempotency-Key with another one is 409.
    other = predict({"input": factories.loan_input(), "routing_key": "x"}, HTTP_IDEMPOTENCY_KEY=inside)
    problem_body(other, 409)


@pytest.mark.parametrize("routing_key", ["k" * 256, 17, None, "tab\there", ""])
def test_a_bad_routing_key_is_a_422_naming_it(loan, predict, routing_key):
    response = predict({"input": factories.loan_input(), "routing_key": routing_key})
    assert error_fields(problem_body(response, 422)) == {"routing_key"}
    assert not Prediction.objects.exists()


def test_no_canary_without_a_champion(loan, predict):
    _policy(loan, mode="human", canary_percent=100)
    response = predict({"input": factories.loan_input()})
    assert response.status_code == 202
    assert response.json()["route"] == {"mode": "human", "reason": "mode", "policy_version": 2}


def test_a_canary_the_model_cannot_answer_goes_back_to_the_mode(loan, champion, predict, monkeypatch):
    _policy(loan, mode="rule", canary_percent=100)
    _broken_model(monkeypatch)
    body = predict({"input": factories.loan_input()}).json()
    assert body["source"] == "rule"
    assert body["route"] == {"mode": "rule", "reason": "model_error", "policy_version": 2, "canary": True}


# ---------------------------------------------------------------------------------------
# Fallback: no model, model error, low confidence, rule error
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("fallback", "status", "source"), [("human", 202, None), ("rule", 200, "rule"), ("none", 202, None)])
def test_no_champion_goes_to_the_fallback(loan, predict, fallback, status, source):
    _policy(loan, mode="model", fallback=fallback)
    response = predict({"input": factories.loan_input()})
    assert response.status_code == status
    body = response.json()
    assert body["source"] == source
    assert body["route"] == {"mode": "model", "reason": "no_model", "policy_version": 2}
    if status == 202:  # never dropped: a reviewer gets it
        task = ReviewTask.objects.get(prediction_id=body["id"])
        assert task.kind == TaskKind.ROUTED and "no champion" in task.reason


@pytest.mark.parametrize(("fallback", "status", "source"), [("human", 202, None), ("rule", 200, "rule"), ("none", 202, None)])
def test_a_model_error_goes_to_the_fallback(loan, champion, predict, monkeypatch, fallback, status, source):
    _policy(loan, mode="model", fallback=fallback)
    _broken_model(monkeypatch)
    response = predict({"input": factories.loan_input()})
    assert response.status_code == status
    body = response.json()
    assert body["source"] == source and body["route"]["reason"] == "model_error"
    assert ReviewTask.objects.filter(prediction_id=body["id"]).count() == (1 if status == 202 else 0)


def test_a_confident_model_answers(loan, champion, predict):
    _policy(loan, mode="model", confidence_threshold=0.0)
    body = predict({"input": factories.loan_input()}).json()
    assert body["source"] == "model" and body["route"]["reason"] == "mode"


def test_low_confidence_with_human_fallback_queues_a_task_with_the_suggestion(
    loan, champion, predict, reviewer, reviewer_api
):
    _policy(loan, mode="model", fallback="human", confidence_threshold=1.0)
    response = predict({"input": factories.loan_input()})
    assert response.status_code == 202
    body = response.json()
    assert body["output"] is None and body["confidence"] is None  # nothing answered yet
    assert body["route"] == {"mode": "model", "reason": "low_confidence", "policy_version": 2}
    task = ReviewTask.objects.get(prediction_id=body["id"])
    assert task.kind == TaskKind.LOW_CONFIDENCE and "below the threshold" in task.reason
    suggestion = task.suggestion
    assert set(suggestion) == {"output", "confidence", "scores", "model_version"}
    assert suggestion["model_version"] == champion.version and suggestion["confidence"] < 1.0
    assert suggestion["output"] in ("approve", "refer") and set(suggestion["scores"]) == {"approve", "refer"}
    # Written once: no history row on the hot path (it begins with the task's first change).
    assert task.history.count() == 0

    # The reviewer API's task payload carries it.
    claimed = reviewer_api.post("/review/claim")
    assert claimed.status_code == 200
    assert claimed.json()["suggestion"] == {"source": "model", **suggestion}

    # And the decision page shows it.
    browser = Client()
    browser.force_login(reviewer[0])
    page = browser.get(reverse("admin:review_reviewtask_decide", args=[task.pk])).content.decode()
    block = page[page.index('id="oz-task-suggestion"'):]
    block = block[:block.index("</div>")]
    assert f"<strong>{suggestion['output']}</strong>" in block
    assert f"{round(suggestion['confidence'] * 100)}%" in block
    assert f"version {champion.version}" in block


def test_low_confidence_with_rule_fallback_takes_the_rules_answer(loan, champion, predict):
    _policy(loan, mode="model", fallback="rule", confidence_threshold=1.0)
    body = predict({"input": factories.loan_input(amount=3000, has_collateral=True)}).json()
    assert body["source"] == "rule" and body["output"] == "approve"
    assert body["route"]["reason"] == "low_confidence"


def test_low_confidence_with_no_fallback_lets_the_model_answer_stand(loan, champion, predict):
    _policy(loan, mode="model", fallback="none", confidence_threshold=1.0)
    response = predict({"input": factories.loan_input()})
    assert response.status_code == 200
    body = response.json()
    assert body["source"] == "model" and body["confidence"] < 1.0
    assert body["route"]["reason"] == "low_confidence"
    assert not ReviewTask.objects.exists()


def test_no_rule_matching_goes_to_reviewers(loan, predict):
    _policy(loan, mode="rule")
    # Rules of an older definition, without a default (load_predictors refuses those now).
    Predictor.objects.filter(pk=loan.pk).update(rules=[{"when": {"amount": {"lt": 1}}, "then": "approve"}])
    serving_forget()
    response = predict({"input": factories.loan_input()})
    assert response.status_code == 202
    assert response.json()["route"]["reason"] == "rule_error"
    assert ReviewTask.objects.get().reason == "no rule matched"


# ---------------------------------------------------------------------------------------
# Queue overflow
# ---------------------------------------------------------------------------------------

def test_an_overfull_queue_sends_human_traffic_to_the_rules(loan, predict):
    _policy(loan, mode="human", fallback="rule", max_queue_depth=2)
    statuses = [predict({"input": factories.loan_input()}).status_code for _ in range(3)]
    assert statuses == [202, 202, 202]  # 0, 1 and 2 open tasks: not over the cap
    overflow = predict({"input": factories.loan_input()})
    assert overflow.status_code == 200
    assert overflow.json()["source"] == "rule"
    assert overflow.json()["route"] == {"mode": "human", "reason": "queue_full", "policy_version": 2}
    assert ReviewTask.objects.count() == 3


def test_an_overfull_queue_lets_the_champion_stand_in_when_the_fallback_is_human(loan, champion, predict):
    _policy(loan, mode="human", fallback="human", max_queue_depth=1)
    predict({"input": factories.loan_input()})
    predict({"input": factories.loan_input()})
    body = predict({"input": factories.loan_input()}).json()
    assert body["source"] == "model" and body["route"]["reason"] == "queue_full"


def test_an_overfull_queue_with_nobody_to_fall_back_on_still_queues(loan, predict):
    _policy(loan, mode="human", fallback="none", max_queue_depth=1)
    responses = [predict({"input": factories.loan_input()}) for _ in range(3)]
    assert [r.status_code for r in responses] == [202, 202, 202]
    assert responses[-1].json()["route"]["reason"] == "queue_full"
    assert ReviewTask.objects.count() == 3  # never dropped


def test_the_queue_depth_is_one_count_and_only_when_capped(loan, predict):
    _policy(loan, mode="human")
    predict({"input": factories.loan_input()})
    with CaptureQueriesContext(connection) as ctx:
        predict({"input": factories.loan_input()})
    uncapped = [q["sql"] for q in ctx.captured_queries]  # copied now: the next request resets the log
    _policy(loan, max_queue_depth=50)
    predict({"input": factories.loan_input()})
    with CaptureQueriesContext(connection) as ctx:
        predict({"input": factories.loan_input()})
    capped = [q["sql"] for q in ctx.captured_queries]

    def counts(queries):
        return [sql for sql in queries if "COUNT(" in sql and "review_reviewtask" in sql]

    assert counts(uncapped) == []
    assert len(counts(capped)) == 1 and "LIMIT 51" in counts(capped)[0]
    assert len(capped) == len(uncapped) + 1


# ---------------------------------------------------------------------------------------
# QA sampling
# ---------------------------------------------------------------------------------------

def test_a_share_of_rule_answers_also_goes_to_review(loan):
    _policy(loan, mode="rule", qa_sample_percent=30)
    n, p = 400, 0.30
    predictions = [_create(loan) for _ in range(n)]
    sampled = [x for x in predictions if x.route.get("qa_sample")]
    assert abs(len(sampled) - n * p) <= 4 * math.sqrt(n * p * (1 - p)), len(sampled)
    tasks = ReviewTask.objects.filter(kind=TaskKind.QA_SAMPLE)
    assert {t.prediction_id for t in tasks} == {x.pk for x in sampled}
    assert all(x.status == "answered" and x.source == "rule" for x in predictions)  # the answer still stands


def test_qa_samples_model_answers_and_a_reviewer_can_revise_them(loan, champion, predict, reviewer):
    _policy(loan, mode="model", qa_sample_percent=100)
    body = predict({"input": factories.loan_input()}).json()
    assert body["status"] == "answered" and body["route"]["qa_sample"] is True
    task = review_task_claim_next(reviewer=reviewer[0])
    assert task.kind == TaskKind.QA_SAMPLE and str(task.prediction_id) == body["id"]
    other = "approve" if body["output"] == "refer" else "refer"
    review_task_decide(task_id=task.pk, reviewer=reviewer[0], output=other)
    prediction = Prediction.objects.get(pk=body["id"])
    assert prediction.status == "revised" and prediction.output == other
    assert Label.objects.get(prediction=prediction).source == "qa"


def test_human_answers_are_not_qa_sampled(loan, predict):
    _policy(loan, mode="human", qa_sample_percent=100)
    body = predict({"input": factories.loan_input()}).json()
    assert "qa_sample" not in body["route"]
    assert list(ReviewTask.objects.values_list("kind", flat=True)) == [TaskKind.ROUTED]


# ---------------------------------------------------------------------------------------
# Shadow
# ---------------------------------------------------------------------------------------

def test_shadow_runs_every_live_version_stores_it_and_never_returns_it(
    loan, champion, challenger, predict, reviewer, eager_celery, django_capture_on_commit_callbacks
):
    _policy(loan, mode="human", shadow=True)
    with django_capture_on_commit_callbacks(execute=True):
        response = predict({"input": factories.loan_input()})
    assert response.status_code == 202
    body = response.json()
    assert set(body) == PREDICTION_KEYS
    assert body["output"] is None and body["model_version"] is None and body["scores"] is None
    assert body["route"]["shadow"] == [champion.version, challenger.version]
    shadows = {s.model_version_id: s for s in ShadowPrediction.objects.filter(prediction_id=body["id"])}
    assert set(shadows) == {champion.pk, challenger.pk}
    assert all(s.error == "" and s.output in ("approve", "refer") and 0 < s.confidence <= 1 for s in shadows.values())

    # Once a reviewer decides, shadow_agreement counts the pair.
    task = review_task_claim_next(reviewer=reviewer[0])
    review_task_decide(task_id=task.pk, reviewer=reviewer[0], output=shadows[champion.pk].output)
    assert shadow_agreement(version=champion) == {"n": 1, "agreeing": 1, "rate": 1.0}
    agreeing = int(shadows[challenger.pk].output == shadows[champion.pk].output)
    assert shadow_agreement(version=challenger) == {"n": 1, "agreeing": agreeing, "rate": float(agreeing)}


def test_shadow_skips_the_version_that_answered_and_stores_errors(
    loan, champion, challenger, predict, eager_celery, django_capture_on_commit_callbacks, monkeypatch
):
    _policy(loan, mode="model", shadow=True)
    _broken_model(monkeypatch, only_version=challenger.version)
    with django_capture_on_commit_callbacks(execute=True):
        body = predict({"input": factories.loan_input()}).json()
    assert body["source"] == "model" and body["model_version"] == champion.version
    assert body["route"]["shadow"] == [challenger.version]
    shadow = ShadowPrediction.objects.get(prediction_id=body["id"])
    assert shadow.model_version_id == challenger.pk
    assert shadow.output is None and "the model fell over" in shadow.error
    # Idempotent: running it again stores nothing new.
    shadow_run(prediction_id=body["id"], version_ids=[challenger.pk, champion.pk])
    assert ShadowPrediction.objects.filter(prediction_id=body["id"], model_version=challenger).count() == 1


def test_without_shadow_nothing_is_sent(loan, champion, challenger, predict, django_capture_on_commit_callbacks, settings):
    settings.OZ_EXPLAIN_SAMPLE_PERCENT = 0  # else one answer in ten sends an explanation task
    _policy(loan, mode="model")
    with django_capture_on_commit_callbacks() as callbacks:
        body = predict({"input": factories.loan_input()}).json()
    assert "shadow" not in body["route"]
    assert callbacks == []  # no webhook (no callback_url), no shadow task


# ---------------------------------------------------------------------------------------
# The hot path
# ---------------------------------------------------------------------------------------

def test_predict_reads_predictor_flag_and_models_from_the_serving_cache(loan, champion, predict):
    _policy(loan, mode="model")
    predict({"input": factories.loan_input()})
    with CaptureQueriesContext(connection) as ctx:
        assert predict({"input": factories.loan_input()}).status_code == 200
        tables = " ".join(q["sql"] for q in ctx.captured_queries if q["sql"].lstrip().upper().startswith("SELECT"))
    for table in ("gateway_predictor", "gateway_routingpolicy", "models_registry_modelversion"):
        assert f'FROM "{table}"' not in tables


def test_a_warm_model_answer_costs_one_insert_and_no_other_query(loan, champion, predict, settings):
    settings.OZ_EXPLAIN_SAMPLE_PERCENT = 0
    _policy(loan, mode="model")
    predict({"input": factories.loan_input()})  # the key is verified and the serving cache filled
    with CaptureQueriesContext(connection) as ctx:
        assert predict({"input": factories.loan_input()}).status_code == 200
    statements = [q["sql"] for q in ctx.captured_queries]
    # No key lookup, no history row, no BEGIN/COMMIT around a single row.
    assert len(statements) == 1 and statements[0].startswith('INSERT INTO "gateway_prediction"'), statements


def test_a_routing_change_in_this_process_applies_to_the_next_request(loan, champion, predict, operator_api):
    _policy(loan, mode="model")
    assert predict({"input": factories.loan_input()}).status_code == 200
    operator_api.patch("/predictors/loan-approval/routing", {"mode": "human"}, format="json")
    assert predict({"input": factories.loan_input()}).status_code == 202


# ---------------------------------------------------------------------------------------
# Setting the flag: PATCH, YAML, set_routing, admin (and its revert); field by field
# ---------------------------------------------------------------------------------------

NEW_FIELDS = {
    "confidence_threshold": 0.7, "canary_percent": 12.5, "shadow": True, "qa_sample_percent": 5, "max_queue_depth": 40,
}

BAD_VALUES = [
    ("confidence_threshold", -0.1), ("confidence_threshold", 1.5), ("confidence_threshold", "high"),
    ("confidence_threshold", True), ("canary_percent", -1), ("canary_percent", 100.01), ("canary_percent", None),
    ("canary_percent", "5"), ("shadow", "yes"), ("shadow", 1), ("shadow", None), ("qa_sample_percent", 101),
    ("qa_sample_percent", False), ("max_queue_depth", 0), ("max_queue_depth", 2.5), ("max_queue_depth", "10"),
    ("max_queue_depth", -3), ("max_queue_depth", 2**31),
]


def test_patch_sets_every_new_field_and_the_predictor_shows_them(loan, operator_api):
    response = operator_api.patch("/predictors/loan-approval/routing", {**NEW_FIELDS, "reason": "ramp up"}, format="json")
    assert response.status_code == 200, response.content
    routing = response.json()
    assert {k: routing[k] for k in NEW_FIELDS} == NEW_FIELDS and routing["version"] == 2
    shown = operator_api.get("/predictors/loan-approval").json()["routing"]
    assert {k: shown[k] for k in NEW_FIELDS} == NEW_FIELDS
    policy = RoutingPolicy.objects.get(predictor=loan)
    record = policy.history.first()
    assert record.history_change_reason == "ramp up" and record.history_user.username == "otto"
    # Clearing the nullable ones.
    cleared = operator_api.patch(
        "/predictors/loan-approval/routing", {"confidence_threshold": None, "max_queue_depth": None}, format="json"
    ).json()
    assert cleared["confidence_threshold"] is None and cleared["max_queue_depth"] is None and cleared["version"] == 3


@pytest.mark.parametrize(("field", "value"), BAD_VALUES)
def test_patch_refuses_bad_values_field_by_field(loan, operator_api, field, value):
    response = operator_api.patch("/predictors/loan-approval/routing", {field: value, "mode": "rule"}, format="json")
    body = problem_body(response, 422)
    assert error_fields(body) == {field}
    assert RoutingPolicy.objects.get(predictor=loan).version == 1  # nothing changed, not even mode


def test_patch_reports_every_bad_field_at_once(loan, operator_api):
    response = operator_api.patch(
        "/predictors/loan-approval/routing",
        {"confidence_threshold": 2, "canary_percent": -5, "shadow": "on", "qa_sample_percent": 500, "max_queue_depth": 0},
        format="json",
    )
    assert error_fields(problem_body(response, 422)) == set(NEW_FIELDS)


PRICE = """\
slug: price
input:
  rooms: {type: integer, minimum: 1}
output: {type: number, minimum: 0}
"""


def test_a_confidence_threshold_is_refused_for_a_number_output(tmp_path, operator_api):
    (tmp_path / "price.yaml").write_text(PRICE)
    predictors_load(tmp_path / "price.yaml")
    body = problem_body(operator_api.patch("/predictors/price/routing", {"confidence_threshold": 0.5}, format="json"), 422)
    assert body["errors"] == [{"field": "confidence_threshold",
                               "message": "only for label outputs: a number output's model gives no confidence"}]
    # null is fine: there is nothing to refuse.
    assert operator_api.patch("/predictors/price/routing", {"confidence_threshold": None}, format="json").status_code == 200
    (tmp_path / "bad.yaml").write_text(PRICE + "routing: {mode: model, confidence_threshold: 0.5}\n")
    with pytest.raises(Exception) as excinfo:
        definition_parse(tmp_path / "bad.yaml")
    assert [(e.field, e.message) for e in excinfo.value.errors] == [
        ("routing.confidence_threshold", "only for label outputs: a number output's model gives no confidence")
    ]


@pytest.mark.parametrize(("field", "value"), BAD_VALUES)
def test_the_yaml_routing_block_refuses_bad_values_field_by_field(tmp_path, field, value):
    text = (factories.DEMO_PREDICTORS / "loan-approval.yaml").read_text()
    text = text.replace("routing: {mode: human}", f"routing: {{mode: human, {field}: {json.dumps(value)}}}")
    path = tmp_path / "loan.yaml"
    path.write_text(text)
    with pytest.raises(Exception) as excinfo:
        definition_parse(path)
    assert [e.field for e in excinfo.value.errors] == [f"routing.{field}"]


def test_the_yaml_routing_block_sets_the_initial_flag(tmp_path):
    text = (factories.DEMO_PREDICTORS / "loan-approval.yaml").read_text()
    fields = ", ".join(f"{k}: {json.dumps(v)}" for k, v in NEW_FIELDS.items())
    path = tmp_path / "loan.yaml"
    path.write_text(text.replace("routing: {mode: human}", f"routing: {{mode: human, {fields}}}"))
    predictors_load(path)
    policy = RoutingPolicy.objects.get(predictor__slug="loan-approval")
    assert {k: getattr(policy, k) for k in NEW_FIELDS} == NEW_FIELDS


def test_set_routing_sets_and_clears_the_new_fields(loan):
    out = StringIO()
    call_command(
        "set_routing", "loan-approval", "--confidence-threshold", "0.6", "--canary", "10", "--shadow", "on",
        "--qa-sample", "2.5", "--max-queue-depth", "30", "--reason", "pilot", stdout=out,
    )
    policy = RoutingPolicy.objects.get(predictor=loan)
    assert (policy.confidence_threshold, policy.canary_percent, policy.shadow, policy.qa_sample_percent,
            policy.max_queue_depth, policy.version) == (0.6, 10, True, 2.5, 30, 2)
    assert "canary=10%" in out.getvalue() and "shadow=on" in out.getvalue()
    call_command("set_routing", "loan-approval", "--confidence-threshold", "none", "--max-queue-depth", "none",
                 "--shadow", "off", stdout=StringIO())
    policy.refresh_from_db()
    assert (policy.confidence_threshold, policy.max_queue_depth, policy.shadow) == (None, None, False)
    with pytest.raises(CommandError, match="canary_percent: must be a number from 0 to 100"):
        call_command("set_routing", "loan-approval", "--canary", "150", stdout=StringIO())
    with pytest.raises(CommandError, match="max_queue_depth"):
        call_command("set_routing", "loan-approval", "--max-queue-depth", "0", stdout=StringIO())


def test_the_openapi_schema_documents_the_new_fields(anon_api):
    schema = anon_api.get("/api/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    components = schema["components"]["schemas"]
    for name in ("PatchedRoutingRequestRequest", "Routing"):
        assert set(NEW_FIELDS) <= set(components[name]["properties"]), name
    assert "routing_key" in components["PredictRequestRequest"]["properties"]
    assert {"canary", "qa_sample", "shadow"} <= set(components["Route"]["properties"])


def _admin_form(policy: RoutingPolicy, **overrides) -> dict:
    data = {
        "mode": policy.mode, "fallback": policy.fallback, "human_sla_seconds": policy.human_sla_seconds or "",
        "confidence_threshold": "" if policy.confidence_threshold is None else policy.confidence_threshold,
        "canary_percent": policy.canary_percent, "qa_sample_percent": policy.qa_sample_percent,
        "max_queue_depth": policy.max_queue_depth or "", "reason": "",
    }
    if policy.shadow:
        data["shadow"] = "on"
    data.update(overrides)
    return data


def test_the_admin_form_refuses_bad_values_next_to_the_field(loan, operator):
    browser = Client()
    browser.force_login(operator[0])
    policy = RoutingPolicy.objects.get(predictor=loan)
    url = reverse("admin:gateway_routingpolicy_change", args=[policy.pk])
    response = browser.post(url, _admin_form(policy, confidence_threshold="1.5", canary_percent="-2"))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert {"confidence_threshold", "canary_percent"} <= set(errors)
    assert RoutingPolicy.objects.get(pk=policy.pk).version == 1


def test_reverting_from_the_history_is_validated_audited_and_bumps_the_version(loan, operator):
    user = operator[0]
    browser = Client()
    browser.force_login(user)
    routing_update(predictor=loan, changes={"mode": "rule", "canary_percent": 10}, reason="pilot")  # v2
    routing_update(predictor=loan, changes={"mode": "human", "canary_percent": 50}, reason="ramp")  # v3
    policy = RoutingPolicy.objects.get(predictor=loan)
    v2 = policy.history.get(version=2)
    url = reverse("admin:gateway_routingpolicy_simple_history", args=[policy.pk, v2.history_id])
    page = browser.get(url)
    assert page.status_code == 200 and page.context["revert_disabled"] is False

    response = browser.post(url, _admin_form(v2.instance))
    assert response.status_code == 302, response.content[:2000]
    policy.refresh_from_db()
    assert (policy.mode, policy.canary_percent, policy.version) == ("rule", 10, 4)
    latest = policy.history.first()
    assert latest.history_user == user and latest.history_change_reason == "reverted to v2"

    # A revert to a state that is no longer valid is refused like any change: the predictor
    # lost its rules since v2, so mode rule cannot come back.
    Predictor.objects.filter(pk=loan.pk).update(rules=[])
    refused = browser.post(url, _admin_form(v2.instance))
    assert refused.status_code == 200
    assert "no rules to answer with" in str(refused.context["adminform"].form.errors)
    assert RoutingPolicy.objects.get(pk=policy.pk).version == 4


def test_reviewers_cannot_revert_the_flag(loan, reviewer):
    browser = Client()
    browser.force_login(reviewer[0])
    routing_update(predictor=loan, changes={"mode": "rule"})
    policy = RoutingPolicy.objects.get(predictor=loan)
    url = reverse("admin:gateway_routingpolicy_simple_history", args=[policy.pk, policy.history.last().history_id])
    response = browser.post(url, _admin_form(policy, mode="human"))
    assert response.status_code in (302, 403)
    assert RoutingPolicy.objects.get(pk=policy.pk).version == 2
