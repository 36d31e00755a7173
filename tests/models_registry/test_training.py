"""Training runs record what went in and what came out; artifacts are verified before
they are trusted; promotion keeps one champion."""
from __future__ import annotations

import random

import pytest
import skops.io as sio
from django.core.files.storage import default_storage
from django.db import IntegrityError

from gateway.demo import SyntheticPredictor
from gateway.services import routing_update
from models_registry import serving
from models_registry.artifacts import ArtifactIntegrityError, artifact_load
from models_registry.models import ModelVersion, Stage, TrainingRun
from models_registry.services import model_version_promote
from models_registry.training import TrainingAlreadyActive, training_run_execute, training_run_request
from review.models import Label
from tests import factories

pytestmark = pytest.mark.django_db


def _labels(predictor, n: int, seed: int = 1):
    factories.synthetic_labels(predictor, n, seed=seed)
    return SyntheticPredictor(predictor.schema, predictor.output_spec)


def _train(predictor) -> TrainingRun:
    run = TrainingRun.objects.create(predictor=predictor)
    return training_run_execute(run_id=run.pk)


def test_run_records_dataset_params_metrics_and_version(loan):
    _labels(loan, 120)
    run = _train(loan)
    assert run.status == "succeeded", run.error
    ids = sorted(Label.objects.values_list("id", flat=True))
    assert run.dataset["label_ids"] == ids and run.dataset["n_labels"] == 120
    assert sum(run.dataset["class_counts"].values()) == 120
    assert run.params["estimator"] == "logistic_regression" and run.params["split"] == "stratified"
    assert {"accuracy", "f1_macro", "roc_auc", "log_loss", "n_train", "n_holdout"} <= set(run.metrics)
    assert run.metrics["n_holdout"] == 30
    assert run.environment["libraries"]["scikit-learn"]
    version = run.model_version
    assert (version.version, version.stage) == (1, Stage.CANDIDATE)
    assert len(version.artifact_sha256) == 64
    assert version.history.count() == 1


def test_runs_are_reproducible_on_the_same_labels(loan):
    _labels(loan, 80)
    first, second = _train(loan), _train(loan)
    assert first.metrics == second.metrics
    assert first.dataset["label_ids_sha256"] == second.dataset["label_ids_sha256"]
    assert second.model_version.version == 2


def test_superseded_labels_are_left_out(loan):
    _labels(loan, 60)
    old, new = Label.objects.order_by("id")[:2]
    old.superseded_by = new
    old.save()
    run = _train(loan)
    assert old.pk not in run.dataset["label_ids"] and run.dataset["n_labels"] == 59


def test_a_label_beyond_the_number_limit_is_left_out_and_training_still_runs(loan):
    # Was: /predict took amounts up to 1e308; one such reviewed prediction overflowed the
    # scaler to NaN and failed every later run. Such a label, stored before the limit, is
    # not valid under the schema now, so training leaves it out.
    _labels(loan, 60)
    huge = Label.objects.order_by("id").first()
    huge.input = {**huge.input, "amount": 1e308}
    huge.save()
    run = _train(loan)
    assert run.status == "succeeded", run.error
    assert huge.pk not in run.dataset["label_ids"] and run.dataset["n_labels"] == 59


def test_too_few_labels_fails_cleanly(loan, settings):
    settings.OZ_MIN_TRAINING_LABELS = 20
    _labels(loan, 5)
    run = _train(loan)
    assert run.status == "failed" and "usable labels" in run.error
    assert not ModelVersion.objects.exists()


def test_one_active_run_per_predictor(loan):
    training_run_request(predictor=loan)
    with pytest.raises(TrainingAlreadyActive):
        training_run_request(predictor=loan)
    with pytest.raises(IntegrityError):
        TrainingRun.objects.create(predictor=loan)


def test_duplicate_execution_is_a_no_op(loan):
    _labels(loan, 60)
    run = TrainingRun.objects.create(predictor=loan)
    assert training_run_execute(run_id=run.pk).status == "succeeded"
    assert training_run_execute(run_id=run.pk) is None
    assert ModelVersion.objects.count() == 1


def test_tampered_artifact_is_refused_and_requests_fall_back_to_humans(loan, client_api):
    _labels(loan, 80)
    version = _train(loan).model_version
    model_version_promote(version=version)
    routing_update(predictor=loan, changes={"mode": "model", "fallback": "human"})
    # Tamper with whatever this version serves from (the ONNX export when it has one).
    served = [(version.artifact.name, version.artifact_sha256)]
    if version.serving_format == "onnx":
        served.append((version.onnx_artifact.name, version.onnx_sha256))
    for name, _ in served:
        with default_storage.open(name, "rb") as handle:
            data = bytearray(handle.read())
        data[-10] ^= 0xFF
        default_storage.delete(name)
        default_storage.save(name, __import__("io").BytesIO(bytes(data)))
    serving.loaded_clear()
    with pytest.raises(ArtifactIntegrityError):
        artifact_load(name=version.artifact.name, sha256=version.artifact_sha256)
    response = client_api.post("/predict/loan-approval", {"input": factories.loan_input()}, format="json")
    assert response.status_code == 202
    assert response.json()["route"]["reason"] == "model_error"


def test_untrusted_types_in_an_artifact_are_not_loaded(tmp_path):
    import hashlib

    from django.core.files.base import ContentFile
    from sklearn.preprocessing import FunctionTransformer

    # A function skops does not trust (could be anything an attacker names).
    pipeline = FunctionTransformer(func=random.random)
    data = sio.dumps(pipeline)
    name = default_storage.save("models/evil.skops", ContentFile(data))
    with pytest.raises(Exception, match=r"[Uu]ntrusted"):
        artifact_load(name=name, sha256=hashlib.sha256(data).hexdigest())


def test_model_answers_with_scores_and_promotion_keeps_one_champion(loan, client_api):
    world = _labels(loan, 120)
    v1 = _train(loan).model_version
    v2 = _train(loan).model_version
    model_version_promote(version=v1)
    routing_update(predictor=loan, changes={"mode": "model"})
    data = world.input(random.Random(9))
    body = client_api.post("/predict/loan-approval", {"input": data}, format="json").json()
    assert body["source"] == "model" and body["model_version"] == 1
    assert body["output"] == max(body["scores"], key=body["scores"].get)
    model_version_promote(version=v2, reason="better")
    v1.refresh_from_db()
    assert v1.stage == Stage.ARCHIVED
    assert ModelVersion.objects.filter(stage=Stage.CHAMPION).get() == v2
    body = client_api.post("/predict/loan-approval", {"input": data}, format="json").json()
    assert body["model_version"] == 2


def test_regression_predictor_trains_and_answers(db, tmp_path, client_api):
    from gateway.definitions import predictors_load

    (tmp_path / "price.yaml").write_text(
        "slug: price\n"
        "input:\n  size: {type: number, minimum: 10, maximum: 500, required: true}\n"
        "  rooms: {type: integer, minimum: 1, maximum: 10}\n"
        "  area: {type: category, choices: [north, south]}\n"
        "  note: {type: text}\n"
        "output: {type: number, minimum: 0, maximum: 1000}\n"
    )
    predictors_load(tmp_path / "price.yaml")
    from gateway.models import Predictor

    price = Predictor.objects.select_related("routing").get(slug="price")
    _labels(price, 100)
    run = _train(price)
    assert run.status == "succeeded", run.error
    assert {"rmse", "mae", "r2"} <= set(run.metrics)
    model_version_promote(version=run.model_version)
    routing_update(predictor=price, changes={"mode": "model"})
    body = client_api.post("/predict/price", {"input": {"size": 120, "rooms": 3}}, format="json").json()
    assert body["source"] == "model" and isinstance(body["output"], float)
    assert 0 <= body["output"] <= 1000 and body["scores"] is None
