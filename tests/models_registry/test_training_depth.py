"""Training runs at full depth: what a run records (params, the grid's choice, the exact
label set, environment, memory, logs, metrics with calibration), the champion scored on the
same holdout, the time split, fairness checked against fairlearn computed here, the
label-threshold and schedule triggers, the reaper, and that no artifact outlives a run that
did not register a version."""
from __future__ import annotations

import hashlib
import math
import random
from datetime import timedelta

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.utils import timezone
from fairlearn.metrics import MetricFrame, false_negative_rate, false_positive_rate, selection_rate, true_positive_rate
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve
from sklearn.model_selection import StratifiedKFold

from gateway.models import Predictor
from gateway.services import prediction_create, routing_update
from models_registry import training
from models_registry.artifacts import artifact_load
from models_registry.config import definition_errors
from models_registry.features import feature_rows, pipeline_build
from models_registry.models import ModelVersion, TrainingRun
from models_registry.services import model_version_promote
from models_registry.training import (
    retrain_after_labels_check,
    run_artifact_folder,
    training_run_execute,
    training_runs_reap,
    training_schedule_sweep,
)
from review.models import Label, LabelSource
from review.services import label_record
from tests import factories

pytestmark = pytest.mark.django_db


def _configure(predictor, **training_block) -> Predictor:
    """Set the predictor's `training:` block, checked as the YAML loader checks it."""
    data = {"output": predictor.output_spec, "training": training_block, "sensitive_attribute": predictor.sensitive_attribute}
    assert definition_errors(data) == []
    Predictor.objects.filter(pk=predictor.pk).update(training=training_block)
    predictor.refresh_from_db()
    return predictor


def _train(predictor, trigger=TrainingRun.Trigger.MANUAL) -> TrainingRun:
    run = TrainingRun.objects.create(predictor=predictor, trigger=trigger)
    return training_run_execute(run_id=run.pk)


def _holdout(run: TrainingRun):
    """The run's holdout, rebuilt from the ids it recorded: (inputs, targets)."""
    by_id = {label.pk: label for label in Label.objects.filter(pk__in=run.dataset["holdout_label_ids"])}
    rows = [by_id[pk] for pk in run.dataset["holdout_label_ids"]]
    return [r.input for r in rows], np.asarray([r.target for r in rows], dtype=object)


def _version_pipeline(version: ModelVersion):
    return artifact_load(name=version.artifact.name, sha256=version.artifact_sha256)


def test_run_records_params_grid_choice_dataset_environment_memory_logs_and_metrics(loan):
    _configure(loan, estimator="logistic_regression", params={"solver": "lbfgs"}, grid={"C": [0.001, 1.0, 100.0]},
               holdout_fraction=0.2, seed=7)
    factories.synthetic_labels(loan, 200)
    run = _train(loan)
    assert run.status == "succeeded", run.error

    # The exact label set and the holdout.
    ids = sorted(Label.objects.values_list("id", flat=True))
    assert run.dataset["label_ids"] == ids and run.dataset["max_label_id"] == ids[-1]
    assert run.dataset["label_ids_sha256"] == hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest()
    assert run.dataset["n_holdout"] == math.ceil(200 * 0.2) == len(run.dataset["holdout_label_ids"])
    assert set(run.dataset["holdout_label_ids"]) < set(ids)

    # Estimator, params, the grid and its choice (cross-validated on the training part only).
    params = run.params
    assert run.estimator == params["estimator"] == "logistic_regression"
    assert params["params"] == {"solver": "lbfgs"} and params["grid"] == {"C": [0.001, 1.0, 100.0]}
    assert (params["split"], params["holdout_fraction"], params["seed"]) == ("stratified", 0.2, 7)
    search = params["grid_search"]
    assert search["scoring"] == "f1_macro" and search["cv_folds"] == 3
    assert [c["params"] for c in search["candidates"]] == [{"C": 0.001}, {"C": 1.0}, {"C": 100.0}]
    best = max(search["candidates"], key=lambda c: c["mean_score"])
    assert search["best_params"] == best["params"] and params["chosen_params"] == {"solver": "lbfgs", **best["params"]}
    assert params["hyperparameters"]["C"] == best["params"]["C"] and params["hyperparameters"]["solver"] == "lbfgs"
    # The chosen candidate's cross-validation score, recomputed here.
    holdout = set(run.dataset["holdout_label_ids"])
    train_rows = [label for label in Label.objects.order_by("id") if label.pk not in holdout]
    X = feature_rows(loan.schema, [r.input for r in train_rows])
    y = np.asarray([r.target for r in train_rows], dtype=object)
    scores = []
    for fit, score in StratifiedKFold(n_splits=3, shuffle=True, random_state=7).split(X, y):
        model = pipeline_build(loan.schema, loan.output_spec, estimator="logistic_regression",
                               params={"solver": "lbfgs", **best["params"]}, text_fields=params["text_fields"])
        model.fit(X[fit], y[fit])
        scores.append(skm.f1_score(y[score], model.predict(X[score]), average="macro"))
    assert best["mean_score"] == pytest.approx(np.mean(scores))

    # Where and with what it ran, and what it cost.
    env = run.environment
    assert env["git_commit"] is None or len(env["git_commit"]) == 40
    assert {"scikit-learn", "numpy", "fairlearn", "pandas", "Django"} <= set(env["libraries"])
    assert run.peak_memory_bytes > 0 and run.duration_seconds > 0
    assert run.worker.rsplit(":", 1)[1].isdigit() and run.heartbeat_at is not None
    assert "grid search chose" in run.logs and "holdout metrics" in run.logs and "registered v1" in run.logs

    # Metrics on the holdout, recomputed from the stored artifact.
    inputs, y_test = _holdout(run)
    pipeline = _version_pipeline(run.model_version)
    proba = pipeline.predict_proba(feature_rows(loan.schema, inputs))
    predicted = pipeline.classes_[proba.argmax(axis=1)]
    m = run.metrics
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y_test, predicted))
    assert m["f1_macro"] == pytest.approx(skm.f1_score(y_test, predicted, average="macro"))
    assert m["log_loss"] == pytest.approx(skm.log_loss(y_test, proba, labels=pipeline.classes_))
    positive = pipeline.classes_[1]
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y_test == positive, proba[:, 1]))
    assert m["brier"] == pytest.approx(skm.brier_score_loss(y_test == positive, proba[:, 1]))
    (curve,) = m["calibration"]["curves"]
    assert curve["label"] == "approve"  # the favourable (first) label
    approve = list(pipeline.classes_).index("approve")
    fraction, mean_predicted = calibration_curve(y_test == "approve", proba[:, approve], n_bins=10)
    assert curve["fraction_positive"] == pytest.approx(list(fraction))
    assert curve["mean_predicted"] == pytest.approx(list(mean_predicted))
    assert sum(curve["count"]) == m["n_holdout"] == 40


def test_champion_is_scored_on_the_same_holdout(loan):
    factories.synthetic_labels(loan, 150)
    first = _train(loan)
    assert first.champion_metrics == {} and "no champion" in first.logs
    model_version_promote(version=first.model_version)

    # Same labels, same seed: the same split, so the champion scores exactly its own metrics.
    second = _train(loan)
    assert second.dataset["holdout_label_ids"] == first.dataset["holdout_label_ids"]
    champion = second.champion_metrics
    assert champion["version"] == 1 and champion["holdout_labels_in_champion_training"] == 0
    for name in ("accuracy", "f1_macro", "roc_auc", "log_loss", "brier"):
        assert champion[name] == pytest.approx(first.metrics[name]), name

    # More labels: another holdout; the champion's score there is recomputed here, and the
    # holdout labels it was trained on are counted.
    factories.synthetic_labels(loan, 80, seed=2)
    third = _train(loan)
    inputs, y_test = _holdout(third)
    pipeline = _version_pipeline(first.model_version)
    proba = pipeline.predict_proba(feature_rows(loan.schema, inputs))
    assert third.champion_metrics["accuracy"] == pytest.approx(
        skm.accuracy_score(y_test, pipeline.classes_[proba.argmax(axis=1)])
    )
    assert third.champion_metrics["log_loss"] == pytest.approx(skm.log_loss(y_test, proba, labels=pipeline.classes_))
    trained_on = set(first.dataset["label_ids"]) - set(first.dataset["holdout_label_ids"])
    seen = len(trained_on & set(third.dataset["holdout_label_ids"]))
    assert third.champion_metrics["holdout_labels_in_champion_training"] == seen > 0


def test_champion_of_another_schema_version_is_not_scored(loan):
    factories.synthetic_labels(loan, 100)
    model_version_promote(version=_train(loan).model_version)
    Predictor.objects.filter(pk=loan.pk).update(schema_version=2)
    run = _train(loan)
    assert run.status == "succeeded", run.error
    assert run.champion_metrics["version"] == 1 and "schema version 1" in run.champion_metrics["skipped"]
    assert "not scoring the champion" in run.logs


def test_time_split_holds_out_the_newest_labels(loan):
    _configure(loan, split="time", holdout_fraction=0.3)
    labels = factories.synthetic_labels(loan, 100)
    # Creation times in an order unrelated to the ids.
    start = timezone.now() - timedelta(days=30)
    order = list(range(100))
    random.Random(5).shuffle(order)
    for label, rank in zip(labels, order, strict=True):
        Label.objects.filter(pk=label.pk).update(created_at=start + timedelta(minutes=rank))
    run = _train(loan)
    assert run.status == "succeeded", run.error
    newest = list(Label.objects.order_by("-created_at").values_list("id", flat=True)[:30])
    assert run.params["split"] == "time"
    assert sorted(run.dataset["holdout_label_ids"]) == sorted(newest)
    assert run.dataset["holdout_created_from"] > run.dataset["train_created_until"]


def test_groups_too_small_to_compare_are_reported_but_left_out_of_the_gaps():
    from models_registry.fairness import fairness_report

    # Two big groups with equal selection rates, and a group of two nobody is selected in.
    groups = ["a"] * 20 + ["b"] * 20 + ["c"] * 2
    y_pred = (["approve"] * 10 + ["refer"] * 10) * 2 + ["refer", "refer"]
    y_true = list(y_pred)
    counted = fairness_report(attribute="g", favourable="approve", y_true=y_true, y_pred=y_pred, groups=groups,
                              min_group_size=10)
    assert counted["demographic_parity_difference"] == 0.0
    assert counted["by_group"]["c"] == {**counted["by_group"]["c"], "count": 2, "selection_rate": 0.0, "in_gaps": False}
    everyone = fairness_report(attribute="g", favourable="approve", y_true=y_true, y_pred=y_pred, groups=groups)
    assert everyone["demographic_parity_difference"] == 0.5
    # Fewer than two groups big enough: not measured, so a fairness gate fails, never passes blind.
    alone = fairness_report(attribute="g", favourable="approve", y_true=y_true, y_pred=y_pred, groups=groups,
                            min_group_size=21)
    assert alone["demographic_parity_difference"] is None


def test_fairness_matches_fairlearn_on_the_same_holdout(loan, settings):
    settings.OZ_FAIRNESS_MIN_GROUP_SIZE = 1  # every group compared, as fairlearn does
    assert loan.sensitive_attribute == "sector"
    factories.synthetic_labels(loan, 240, seed=3)
    run = _train(loan)
    assert run.status == "succeeded", run.error
    inputs, y_test = _holdout(run)
    pipeline = _version_pipeline(run.model_version)
    proba = pipeline.predict_proba(feature_rows(loan.schema, inputs))
    y_pred = pipeline.classes_[proba.argmax(axis=1)]
    groups = [row.get("sector") or "(missing)" for row in inputs]
    # Computed here on the raw labels with pos_label, not with the run's 0/1 encoding.
    frame = MetricFrame(
        metrics={
            "selection_rate": lambda t, p: selection_rate(t, p, pos_label="approve"),
            "accuracy": skm.accuracy_score,
            "false_positive_rate": lambda t, p: false_positive_rate(t, p, pos_label="approve"),
            "false_negative_rate": lambda t, p: false_negative_rate(t, p, pos_label="approve"),
            "true_positive_rate": lambda t, p: true_positive_rate(t, p, pos_label="approve"),
        },
        y_true=y_test, y_pred=y_pred, sensitive_features=groups,
    )
    fairness = run.fairness
    assert fairness["attribute"] == "sector" and fairness["favourable"] == "approve"
    assert set(fairness["by_group"]) == set(groups)
    for group, row in frame.by_group.iterrows():
        mine = fairness["by_group"][group]
        assert mine["count"] == groups.count(group)
        for name in ("selection_rate", "accuracy", "false_positive_rate", "false_negative_rate"):
            assert mine[name] == pytest.approx(row[name]), (group, name)
    gaps = frame.difference(method="between_groups")
    assert fairness["demographic_parity_difference"] == pytest.approx(gaps["selection_rate"])
    assert fairness["equalized_odds_difference"] == pytest.approx(max(gaps["true_positive_rate"], gaps["false_positive_rate"]))
    assert "demographic parity difference" in run.logs


def _price(tmp_path) -> Predictor:
    from gateway.definitions import predictors_load

    (tmp_path / "price.yaml").write_text(
        "slug: price\n"
        "input:\n  size: {type: number, minimum: 10, maximum: 500, required: true}\n"
        "  rooms: {type: integer, minimum: 1, maximum: 10}\n"
        "  area: {type: category, choices: [north, south]}\n"
        "output: {type: number, minimum: 0, maximum: 1000}\n"
        "sensitive_attribute: area\n"
        "training: {estimator: ridge, grid: {alpha: [0.1, 10.0]}}\n"
    )
    predictors_load(tmp_path / "price.yaml")
    return Predictor.objects.get(slug="price")


def test_regression_run_records_metrics_and_notes_skipped_fairness(db, tmp_path):
    price = _price(tmp_path)
    factories.synthetic_labels(price, 120)
    run = _train(price)
    assert run.status == "succeeded", run.error
    assert run.params["split"] == "random" and run.params["grid_search"]["scoring"] == "neg_root_mean_squared_error"
    assert run.params["chosen_params"]["alpha"] in (0.1, 10.0)
    inputs, y_test = _holdout(run)
    predicted = np.clip(_version_pipeline(run.model_version).predict(feature_rows(price.schema, inputs)), 0, 1000)
    y_test = y_test.astype(float)
    assert run.metrics["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(y_test, predicted)))
    assert run.metrics["mae"] == pytest.approx(skm.mean_absolute_error(y_test, predicted))
    assert run.metrics["r2"] == pytest.approx(skm.r2_score(y_test, predicted))
    assert run.fairness == {} and "fairness by area skipped" in run.logs


# -- triggers -----------------------------------------------------------------------------


@pytest.fixture
def answered(loan):
    """Makes answered predictions (rule mode) to hang labels on."""
    routing_update(predictor=loan, changes={"mode": "rule"})
    loan.routing.refresh_from_db()
    client, _ = factories.api_client_with_key()
    rng = random.Random(11)

    def make():
        prediction, _ = prediction_create(
            predictor=loan, policy=loan.routing, client=client,
            clean_input=factories.loan_input(amount=rng.randint(100, 90000)),
        )
        return prediction

    return make


def _label(make, django_capture_on_commit_callbacks, target="approve"):
    with django_capture_on_commit_callbacks(execute=True):
        label_record(prediction=make(), target=target, source=LabelSource.OUTCOME)


def test_label_threshold_trigger_fires_once_and_not_while_a_run_is_active(
    loan, answered, django_capture_on_commit_callbacks
):
    _configure(loan, retrain_after_labels=5)
    for i in range(4):
        _label(answered, django_capture_on_commit_callbacks, target=["approve", "refer"][i % 2])
    assert not TrainingRun.objects.exists()
    _label(answered, django_capture_on_commit_callbacks)
    run = TrainingRun.objects.get()
    assert (run.status, run.trigger) == ("queued", "label_threshold")
    # More labels while it is queued (then running): still the one run.
    for _ in range(6):
        _label(answered, django_capture_on_commit_callbacks)
    TrainingRun.objects.filter(pk=run.pk).update(status="running")
    _label(answered, django_capture_on_commit_callbacks)
    assert TrainingRun.objects.count() == 1

    # It finishes (failing on too few labels still records the label set it read): the
    # count starts again from there.
    TrainingRun.objects.filter(pk=run.pk).update(status="queued")
    done = training_run_execute(run_id=run.pk)
    assert done.dataset["max_label_id"] == Label.objects.order_by("-id").first().pk
    for _ in range(4):
        _label(answered, django_capture_on_commit_callbacks)
    assert TrainingRun.objects.count() == 1
    _label(answered, django_capture_on_commit_callbacks)
    assert TrainingRun.objects.filter(trigger="label_threshold").count() == 2


def test_label_threshold_check_ignores_a_run_requested_meanwhile(loan, monkeypatch):
    _configure(loan, retrain_after_labels=3)
    factories.synthetic_labels(loan, 3)
    # Another process requests a run between the check's look and its request.
    real_count = training._new_labels_count

    def count_then_race(predictor, since):
        TrainingRun.objects.create(predictor=predictor)
        return real_count(predictor, since)

    monkeypatch.setattr(training, "_new_labels_count", count_then_race)
    assert retrain_after_labels_check(predictor_id=loan.pk) is None
    assert TrainingRun.objects.count() == 1


def test_no_threshold_no_trigger(loan, answered, django_capture_on_commit_callbacks):
    for _ in range(30):
        _label(answered, django_capture_on_commit_callbacks)
    assert not TrainingRun.objects.exists()


def test_schedule_trigger(loan, tmp_path):
    other = _price(tmp_path)  # no retrain_every_hours: never scheduled
    _configure(loan, retrain_every_hours=24)
    factories.synthetic_labels(loan, 60)
    factories.synthetic_labels(other, 60)
    now = timezone.now()
    assert training_schedule_sweep(now=now)["requested"] == 1
    run = TrainingRun.objects.get()
    assert (run.predictor_id, run.trigger) == (loan.pk, "schedule")
    assert training_schedule_sweep(now=now)["active"] == 1  # queued: no second run
    assert training_run_execute(run_id=run.pk).status == "succeeded"
    assert training_schedule_sweep(now=now + timedelta(hours=2))["not_due"] == 1
    # Due again, but nothing changed since it succeeded: the same model would come out.
    assert training_schedule_sweep(now=now + timedelta(hours=25))["unchanged"] == 1
    factories.synthetic_labels(loan, 5, seed=9)
    assert training_schedule_sweep(now=now + timedelta(hours=25))["requested"] == 1
    assert TrainingRun.objects.filter(predictor=loan, trigger="schedule").count() == 2
    assert not TrainingRun.objects.filter(predictor=other).exists()


# -- the reaper and crash safety ----------------------------------------------------------


def test_reaper_fails_silent_runs_and_long_queued_runs_only(loan, tmp_path, settings):
    settings.OZ_TRAINING_HEARTBEAT_TIMEOUT = 120
    settings.OZ_TRAINING_QUEUED_TIMEOUT = 3600
    price = _price(tmp_path)
    now = timezone.now()
    silent = TrainingRun.objects.create(
        predictor=loan, status="running", started_at=now - timedelta(minutes=10),
        heartbeat_at=now - timedelta(seconds=121), worker="box:123",
    )
    stray = default_storage.save(f"{run_artifact_folder(silent)}/v1.skops", ContentFile(b"half a model"))
    beating = TrainingRun.objects.create(predictor=price, status="running", started_at=now, heartbeat_at=now - timedelta(seconds=60))
    assert training_runs_reap(now=now) == {"running_failed": 1, "queued_failed": 0, "artifacts_deleted": 1}
    silent.refresh_from_db()
    beating.refresh_from_db()
    assert silent.status == "failed" and "stopped responding" in silent.error and "box:123" in silent.error
    assert silent.finished_at == now and silent.duration_seconds == pytest.approx(600 - 121)
    assert not default_storage.exists(stray)
    assert beating.status == "running"

    TrainingRun.objects.filter(pk=beating.pk).update(status="succeeded")
    young = TrainingRun.objects.create(predictor=price)
    old = TrainingRun.objects.create(predictor=loan)
    TrainingRun.objects.filter(pk=old.pk).update(created_at=now - timedelta(seconds=3601))
    assert training_runs_reap(now=now)["queued_failed"] == 1
    old.refresh_from_db()
    young.refresh_from_db()
    assert old.status == "failed" and "no worker started" in old.error and young.status == "queued"
    # A late message for the failed run does nothing.
    assert training_run_execute(run_id=old.pk) is None


def test_an_artifact_written_before_a_crash_never_becomes_a_version(loan, monkeypatch):
    factories.synthetic_labels(loan, 80)

    def crash(*args, **kwargs):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(ModelVersion.objects, "create", crash)
    run = _train(loan)
    assert run.status == "failed" and "the database went away" in run.error
    assert not ModelVersion.objects.exists()
    folder = run_artifact_folder(run)
    assert not default_storage.exists(folder) or default_storage.listdir(folder) == ([], [])
    assert run.logs and run.peak_memory_bytes > 0


def test_a_run_reaped_while_it_worked_registers_nothing(loan, monkeypatch):
    factories.synthetic_labels(loan, 80)
    real = training._champion_scored

    def reaped_meanwhile(predictor, *args):
        TrainingRun.objects.filter(predictor=predictor).update(status="failed", error="the worker stopped responding")
        return real(predictor, *args)

    monkeypatch.setattr(training, "_champion_scored", reaped_meanwhile)
    run = _train(loan)
    assert (run.status, run.error) == ("failed", "the worker stopped responding")
    assert not ModelVersion.objects.exists()
    assert not default_storage.exists(run_artifact_folder(run))


def test_training_block_is_checked_when_loaded():
    def errors(block, output=None):
        data = {"output": output or {"type": "label", "labels": ["a", "b"]}, "training": block}
        return [e.field for e in definition_errors(data)]

    assert errors({"retrain_every_hours": 24, "retrain_after_labels": 100, "seed": 3}) == []
    assert errors({"retrain_every_hours": 0}) == ["training.retrain_every_hours"]
    assert errors({"seed": -1}) == ["training.seed"]
    assert errors({"params": {"C": 1}, "grid": {"C": [1, 2]}}) == ["training.grid.C"]
    # The estimator's own names and ranges, checked at load rather than when a run fails.
    assert errors({"params": {"C": -1}}) == ["training.params.C"]
    assert errors({"params": {"colour": "blue"}}) == ["training.params.colour"]
    assert errors({"estimator": "random_forest", "grid": {"max_depth": [3, "deep"]}}) == ["training.grid.max_depth"]
    assert errors({"estimator": "ridge", "params": {"alpha": 2.0}}, output={"type": "number"}) == []


def test_warnings_and_failures_land_in_the_run_log(loan, settings):
    _configure(loan, params={"max_iter": 1})
    factories.synthetic_labels(loan, 80)
    run = _train(loan)
    assert run.status == "succeeded", run.error
    assert "ConvergenceWarning" in run.logs  # seen during the fit, kept with the run

    settings.OZ_MIN_TRAINING_LABELS = 1000
    failed = _train(loan)
    assert failed.status == "failed" and "at least 1000" in failed.error
    assert "read 80 current labels" in failed.logs and "failed" in failed.logs
    assert failed.dataset["n_labels"] == 80 and failed.peak_memory_bytes > 0 and failed.environment["libraries"]
