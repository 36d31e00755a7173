"""Drift and skew: reference statistics kept at training time, the drift check on stable
and shifted live traffic, the alert in the API, the beat task and the command, and
fairness of live answers by group."""
from __future__ import annotations

import random
from datetime import timedelta
from io import StringIO

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.utils import timezone

from gateway.demo import SyntheticPredictor
from gateway.models import Prediction
from models_registry import tasks
from models_registry.drift import (
    MISSING_CATEGORY,
    OUTPUT_KEY,
    drift_check,
    output_mix_series,
    production_fairness,
    psi,
    reference_stats,
)
from models_registry.models import DriftReport, ModelVersion, TrainingRun
from models_registry.services import model_version_promote
from models_registry.training import training_run_execute
from review.models import Appeal, Label
from tests.gateway.helpers import problem_body

pytestmark = pytest.mark.django_db

N_LABELS = 400
ROUTE = {"mode": "model", "reason": "mode", "policy_version": 1}


def _champion(loan) -> ModelVersion:
    """A champion trained on seeded synthetic labels (the same world the live traffic comes from)."""
    world = SyntheticPredictor(loan.schema, loan.output_spec)
    rng = random.Random(3)
    rows = []
    for _ in range(N_LABELS):
        data = world.input(rng)
        rows.append(Label(predictor=loan, schema_version=loan.schema_version, input=data, target=world.truth(data), source="import"))
    Label.objects.bulk_create(rows)
    run = training_run_execute(run_id=TrainingRun.objects.create(predictor=loan).pk)
    assert run.status == "succeeded", run.error
    return model_version_promote(version=run.model_version)


def _live(loan, n: int, *, seed: int, shift=None, source: str = "model", when=None) -> list[Prediction]:
    """n answered live predictions drawn from the training world (seeded), optionally shifted."""
    world = SyntheticPredictor(loan.schema, loan.output_spec)
    rng = random.Random(seed)
    when = when or timezone.now() - timedelta(hours=1)
    rows = []
    for _ in range(n):
        data = world.input(rng)
        if shift:
            data = shift(data)
        rows.append(Prediction(
            predictor=loan, schema_version=loan.schema_version, input=data, status="answered", output=world.truth(data),
            source=source, route=ROUTE, created_at=when, answered_at=when,
        ))
    return Prediction.objects.bulk_create(rows)


def _shifted(data: dict) -> dict:
    return {**data, "amount": data["amount"] * 10, "sector": "food"}


# --- reference statistics -------------------------------------------------------------------------


def test_reference_stats_shapes():
    schema = {
        "x": {"type": "number"}, "k": {"type": "integer"}, "b": {"type": "boolean"},
        "c": {"type": "category", "choices": ["a", "b", "z"]}, "t": {"type": "text"},
    }
    inputs = [{"x": float(i), "k": i % 3, "b": i % 2 == 0, "c": "a" if i < 60 else "b", "t": "w" * (i % 7)} for i in range(100)]
    inputs += [{}] * 5  # every field missing
    stats = reference_stats(schema, inputs, output_spec={"type": "label", "labels": ["yes", "no"]}, targets=["yes"] * 105)
    x = stats["x"]
    assert x["type"] == "numeric" and x["n"] == 105 and x["missing"] == 5
    assert len(x["bins"]) == 9 and x["bins"] == sorted(set(x["bins"]))
    assert len(x["counts"]) == len(x["bins"]) + 1 and sum(x["counts"]) == 100
    assert x["min"] == 0 and x["max"] == 99 and len(x["sample"]) == 100
    k = stats["k"]  # three values: the deciles deduplicate to at most three cut points
    assert len(k["bins"]) <= 3 and sum(k["counts"]) == 100 and k["missing"] == 5
    assert stats["b"]["counts"] == {"true": 50, "false": 50, MISSING_CATEGORY: 5}
    assert stats["c"]["counts"] == {"a": 60, "b": 40, "z": 0, MISSING_CATEGORY: 5}
    assert stats["t"]["of"] == "length" and stats["t"]["max"] == 6 and stats["t"]["missing"] == 5
    assert stats[OUTPUT_KEY]["counts"] == {"yes": 105, "no": 0}


def test_psi_is_zero_for_the_same_mix_and_large_for_a_move():
    assert psi([10, 20, 30], [20, 40, 60]) == pytest.approx(0)
    assert psi([50, 50, 0], [0, 0, 100]) > 5
    assert psi([0, 0], [1, 1]) is None


def test_training_stores_reference_stats_of_the_training_part(loan, settings):
    settings.OZ_MIN_TRAINING_LABELS = 8
    version = _champion(loan)
    stats = ModelVersion.objects.get(pk=version.pk).reference_stats
    n_train = version.run.dataset["n_train"]
    assert set(stats) == {*loan.schema, OUTPUT_KEY}
    amount = stats["amount"]
    assert amount["type"] == "numeric" and amount["n"] == n_train and amount["missing"] == 0  # amount is required
    assert sum(amount["counts"]) == n_train and 5 <= len(amount["bins"]) <= 9
    assert stats["years_trading"]["missing"] > 0  # optional fields are sometimes missing
    sector = stats["sector"]
    assert sector["type"] == "categorical" and set(sector["counts"]) == {"retail", "food", "services", "other", MISSING_CATEGORY}
    assert sum(sector["counts"].values()) == n_train
    assert stats["note"]["of"] == "length"
    assert sum(stats[OUTPUT_KEY]["counts"].values()) == n_train


# --- the drift check ------------------------------------------------------------------------------


def test_a_stable_stream_raises_no_alert(loan):
    version = _champion(loan)
    _live(loan, 500, seed=11)
    report = drift_check(loan)
    assert report.model_version_id == version.pk and report.n_live == 500 and not report.alert
    assert set(report.fields) == set(loan.schema)
    for name, field in report.fields.items():
        assert field["psi"] < 0.2 and not field["drifted"], (name, field)
    assert report.fields["amount"]["test"] == "ks" and report.fields["sector"]["test"] == "chi2"
    assert report.fields["amount"]["p_value"] > 0.001
    outputs = report.outputs
    assert set(outputs["by_source"]) == {"model"} and sum(outputs["by_source"]["model"].values()) == pytest.approx(1)
    assert set(outputs["reference"]) == {"approve", "refer"} and outputs["psi"]["model"] < 0.2
    assert outputs["n_window"] == 500 and not outputs["sampled"]


def test_a_shifted_stream_raises_the_alert_on_the_shifted_fields(loan):
    _champion(loan)
    _live(loan, 500, seed=11, shift=_shifted)
    report = drift_check(loan)
    assert report.alert
    fields = report.fields
    assert fields["amount"]["drifted"] and fields["amount"]["psi"] > 1 and fields["amount"]["p_value"] < 1e-6
    assert fields["sector"]["drifted"] and fields["sector"]["psi"] > 1 and fields["sector"]["p_value"] < 1e-6
    for name in ("years_trading", "has_collateral", "note"):
        assert not fields[name]["drifted"], (name, fields[name])


def test_too_few_rows_never_alert_and_old_rows_are_outside_the_window(loan, settings):
    _champion(loan)
    _live(loan, 30, seed=5, shift=_shifted)
    _live(loan, 300, seed=6, shift=_shifted, when=timezone.now() - timedelta(days=3))
    report = drift_check(loan)
    assert report.n_live == 30 and report.fields["amount"]["psi"] > 1
    assert not report.alert and not report.fields["amount"]["drifted"]
    settings.OZ_DRIFT_MIN_ROWS = 20
    assert drift_check(loan).alert


def test_the_window_is_sampled_to_at_most_max_rows(loan, settings):
    _champion(loan)
    _live(loan, 300, seed=8, shift=_shifted)
    settings.OZ_DRIFT_MAX_ROWS = 120
    report = drift_check(loan)
    assert report.n_live == 120 and report.outputs["n_window"] == 300 and report.outputs["sampled"]
    assert report.alert
    # The sample is the same for the same window: ids are random, the smallest are taken.
    again = drift_check(loan, now=report.window_end)
    assert again.fields == report.fields


def test_no_champion_no_report(loan):
    assert drift_check(loan) is None
    assert not DriftReport.objects.exists()


def test_a_champion_without_reference_gets_one_from_its_label_set(loan):
    version = _champion(loan)
    ModelVersion.objects.filter(pk=version.pk).update(reference_stats={})
    _live(loan, 200, seed=11, shift=_shifted)
    report = drift_check(loan)
    assert report.alert
    assert ModelVersion.objects.get(pk=version.pk).reference_stats["amount"]["n"] == version.run.dataset["n_train"]


# --- the API, the beat task, the command ----------------------------------------------------------


def test_the_alert_shows_in_the_predictor_and_the_history_for_operators(loan, client_api, operator_api, reviewer_api):
    assert client_api.get("/predictors/loan-approval").json()["drift"] is None
    _champion(loan)
    _live(loan, 200, seed=11, shift=_shifted)
    report = drift_check(loan)
    drift = client_api.get("/predictors/loan-approval").json()["drift"]
    assert drift["alert"] is True and drift["checked_at"].startswith(str(report.created_at.year))
    assert drift["fields"]["amount"] == pytest.approx(report.fields["amount"]["psi"])
    listed = client_api.get("/predictors").json()["results"][0]
    assert listed["drift"]["alert"] is True

    second = drift_check(loan)
    response = operator_api.get("/predictors/loan-approval/drift?limit=1")
    assert response.status_code == 200, response.content
    body = response.json()
    assert [r["id"] for r in body["results"]] == [second.pk] and body["results"][0]["alert"] is True
    assert body["results"][0]["model_version"] == 1 and "amount" in body["results"][0]["fields"]
    assert body["next"] == f"/predictors/loan-approval/drift?limit=1&before={second.pk}"
    older = operator_api.get(body["next"]).json()
    assert [r["id"] for r in older["results"]] == [report.pk] and older["next"] is None

    problem_body(operator_api.get("/predictors/loan-approval/drift?limit=0"), 422)
    problem_body(operator_api.get("/predictors/nope/drift"), 404)
    problem_body(reviewer_api.get("/predictors/loan-approval/drift"), 403)
    problem_body(client_api.get("/predictors/loan-approval/drift"), 403)


def test_the_drift_endpoint_is_in_the_openapi_schema(operator_api):
    schema = operator_api.get("/api/schema", HTTP_ACCEPT="application/json").json()
    assert "get" in schema["paths"]["/predictors/{slug}/drift"]
    assert "drift" in schema["components"]["schemas"]["Predictor"]["properties"]


def test_the_beat_task_checks_every_predictor_with_a_champion(loan):
    assert django_settings.CELERY_BEAT_SCHEDULE["drift-check"]["task"] == "models_registry.tasks.drift_check_all"
    assert tasks.drift_check_all() == {"checked": 0, "alerts": 0, "failed": 0}
    _champion(loan)
    _live(loan, 150, seed=11, shift=_shifted)
    assert tasks.drift_check_all.apply().get() == {"checked": 1, "alerts": 1, "failed": 0}
    assert DriftReport.objects.filter(predictor=loan, alert=True).count() == 1


def test_the_command_prints_a_table(loan):
    _champion(loan)
    _live(loan, 150, seed=11, shift=_shifted)
    out = StringIO()
    call_command("drift_check", "loan-approval", stdout=out)
    text = out.getvalue()
    assert "loan-approval (champion v1): 150 live rows" in text
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("field"))
    assert header.split() == ["field", "test", "PSI", "statistic", "p-value", "drifted"]
    amount = next(line for line in lines if line.startswith("amount"))
    assert amount.split()[1] == "ks" and amount.split()[-1] == "DRIFT"
    assert "ALERT: input drift for loan-approval" in text
    out = StringIO()
    call_command("drift_check", stdout=out)  # every predictor with a champion
    assert "loan-approval (champion v1)" in out.getvalue()


# --- fairness in production and the output mix ----------------------------------------------------


def _answer(loan, sector, output, *, source="model", status="answered", provisional=False, when=None):
    when = when or timezone.now() - timedelta(hours=1)
    return Prediction.objects.create(
        predictor=loan, schema_version=1, input={"amount": 1000, "sector": sector} if sector else {"amount": 1000},
        status=status, output=output, source=source, provisional=provisional, route=ROUTE, created_at=when,
        answered_at=when if status != "pending" else None,
    )


def test_production_fairness_by_group(loan):
    food = [_answer(loan, "food", out) for out in ("approve", "approve", "approve", "refer")]
    retail = [_answer(loan, "retail", "refer"), _answer(loan, "retail", "refer", source="human")]
    _answer(loan, None, "approve")
    # Not counted: pending, provisional, before `since`.
    _answer(loan, "retail", None, status="pending")
    _answer(loan, "retail", "approve", provisional=True)
    _answer(loan, "retail", "approve", when=timezone.now() - timedelta(days=10))
    Appeal.objects.create(prediction=food[3], reason="r", status="overturned", original_output="refer", original_source="model")
    Appeal.objects.create(prediction=food[2], reason="r", status="upheld", original_output="approve", original_source="model")
    Appeal.objects.create(prediction=retail[0], reason="r", status="open", original_output="refer", original_source="model")

    report = production_fairness(loan, timezone.now() - timedelta(days=1))
    assert report["attribute"] == "sector" and report["favourable"] == "approve"
    groups = report["groups"]
    assert set(groups) == {"food", "retail", MISSING_CATEGORY}
    f, r = groups["food"], groups["retail"]
    assert (f["answers"], f["favourable"], f["favourable_rate"]) == (4, 3, 0.75)
    assert (f["appeals"], f["appeal_rate"], f["overturned"], f["overturn_rate"]) == (2, 0.5, 1, 0.5)
    assert (r["answers"], r["favourable"], r["favourable_rate"]) == (2, 0, 0.0)
    assert (r["appeals"], r["appeal_rate"], r["overturned"], r["overturn_rate"]) == (1, 0.5, 0, None)
    assert r["by_source"] == {
        "model": {"answers": 1, "favourable": 0, "favourable_rate": 0.0},
        "human": {"answers": 1, "favourable": 0, "favourable_rate": 0.0},
    }
    assert groups[MISSING_CATEGORY]["favourable_rate"] == 1.0
    assert report["demographic_parity_difference"] is None  # no group has OZ_FAIRNESS_MIN_GROUP_SIZE answers


def test_production_fairness_parity_difference_over_large_enough_groups(loan, settings):
    settings.OZ_FAIRNESS_MIN_GROUP_SIZE = 2
    for out in ("approve", "approve", "refer", "refer"):
        _answer(loan, "food", out)
    for out in ("approve", "refer", "refer", "refer"):
        _answer(loan, "retail", out)
    _answer(loan, "other", "approve")  # too small to compare
    report = production_fairness(loan, timezone.now() - timedelta(days=1))
    assert report["demographic_parity_difference"] == pytest.approx(0.25)


def test_output_mix_series_per_day_and_source(loan):
    now = timezone.now()
    today, yesterday = now - timedelta(minutes=1), now - timedelta(days=1)
    for out in ("approve", "approve", "refer"):
        _answer(loan, "food", out, when=today)
    _answer(loan, "food", "refer", source="rule", when=today)
    _answer(loan, "food", "approve", when=yesterday)
    _answer(loan, "food", "approve", when=now - timedelta(days=9))  # outside 7 days
    _answer(loan, "food", None, status="pending", when=today)
    series = output_mix_series(loan, 7, now=now)
    day = timezone.localtime(today).date().isoformat()
    before = timezone.localtime(yesterday).date().isoformat()
    assert series == [
        {"date": before, "source": "model", "total": 1, "counts": {"approve": 1}},
        {"date": day, "source": "model", "total": 3, "counts": {"approve": 2, "refer": 1}},
        {"date": day, "source": "rule", "total": 1, "counts": {"refer": 1}},
    ]
