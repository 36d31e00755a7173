"""Serving at depth: every allow-listed estimator trains and answers, the ONNX export answers
as the skops pipeline does, artifacts are verified and allow-listed before they are trusted,
and a version is read from storage once per process."""
from __future__ import annotations

import hashlib
import io
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import skops.io as sio
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.preprocessing import FunctionTransformer

from gateway.demo import SyntheticPredictor
from gateway.services import routing_update
from models_registry import serving
from models_registry.artifacts import ArtifactIntegrityError, UntrustedArtifactError, artifact_save, onnx_artifact_save
from models_registry.features import ESTIMATORS, estimator_params_errors, feature_rows, pipeline_build, usable_text_fields
from models_registry.models import ModelVersion, TrainingRun
from models_registry.onnx import PARITY_THRESHOLD, onnx_evaluate
from models_registry.services import PromotionRefused, model_version_promote
from review.models import Label
from tests import factories

pytestmark = pytest.mark.django_db

PRICE_YAML = (
    "slug: price\n"
    "input:\n  size: {type: number, minimum: 10, maximum: 500, required: true}\n"
    "  rooms: {type: integer, minimum: 1, maximum: 10}\n"
    "  area: {type: category, choices: [north, south]}\n"
    "  garden: {type: boolean}\n"
    "  note: {type: text}\n"
    "output: {type: number, minimum: 0, maximum: 1000}\n"
)

# Rows that exercise the edges: missing values, an unknown category, text with accents,
# capitals, unseen words, empty text.
LOAN_EDGES = [
    {"amount": 12000},
    {"amount": 250, "years_trading": 0, "sector": "mining", "has_collateral": True},
    {"amount": 90000, "note": "CAFÉ Bakery — Family run, ÉTABLI 1990!"},
    {"amount": 4000, "years_trading": 30, "sector": "food", "has_collateral": False, "note": ""},
    {"amount": 15000, "years_trading": 2, "sector": "retail", "note": "zzz unseen words only"},
    {"amount": 33333.33, "sector": "other", "note": "café café café export lease equipment"},
]
PRICE_EDGES = [
    {"size": 120},
    {"size": 40, "rooms": 9, "area": "west", "garden": True, "note": "Café nearby"},
    {"size": 480, "rooms": 1, "area": "south", "garden": False, "note": ""},
]


@pytest.fixture(autouse=True)
def _fresh_serving():
    serving.loaded_clear()
    yield
    serving.loaded_clear()


@pytest.fixture
def price(db, tmp_path):
    from gateway.definitions import predictors_load
    from gateway.models import Predictor

    (tmp_path / "price.yaml").write_text(PRICE_YAML)
    predictors_load(tmp_path / "price.yaml")
    return Predictor.objects.select_related("routing").get(slug="price")


def _data(predictor, n: int, seed: int = 1):
    world = SyntheticPredictor(predictor.schema, predictor.output_spec)
    rng = random.Random(seed)
    inputs = [world.input(rng) for _ in range(n)]
    classification = predictor.output_spec["type"] == "label"
    y = np.asarray([world.truth(x) for x in inputs], dtype=object if classification else np.float64)
    return world, inputs, y


def _version(predictor, estimator: str, *, n: int = 200, params: dict | None = None, number: int | None = None) -> ModelVersion:
    """Train `estimator` on synthetic labels the way training does and register the version:
    skops artifact always, ONNX export when it converts and passes parity."""
    _, inputs, y = _data(predictor, n)
    X = feature_rows(predictor.schema, inputs)
    cut = int(n * 0.75)
    spec = predictor.output_spec
    pipeline = pipeline_build(
        predictor.schema, spec, estimator=estimator, params=params or {}, text_fields=usable_text_fields(predictor.schema, X[:cut])
    )
    pipeline.fit(X[:cut], y[:cut])
    number = number or (ModelVersion.objects.filter(predictor=predictor).count() + 1)
    name, digest = artifact_save(pipeline=pipeline, name=f"models/{predictor.slug}/v{number}.skops")
    onnx_bytes, gate = onnx_evaluate(pipeline, predictor.schema, spec, X[cut:])
    onnx_name = onnx_digest = ""
    if onnx_bytes is not None:
        onnx_name, onnx_digest = onnx_artifact_save(data=onnx_bytes, name=f"models/{predictor.slug}/v{number}.onnx")
    run = TrainingRun.objects.create(predictor=predictor, status=TrainingRun.Status.SUCCEEDED, estimator=estimator)
    return ModelVersion.objects.create(
        predictor=predictor,
        version=number,
        run=run,
        schema_version=predictor.schema_version,
        artifact=name,
        artifact_sha256=digest,
        onnx_artifact=onnx_name,
        onnx_sha256=onnx_digest,
        serving_format="onnx" if onnx_bytes else "skops",
        gates=[gate],
    )


def _skops_twin(version: ModelVersion) -> ModelVersion:
    """The same version row, told to serve its skops artifact (a fresh cache key)."""
    twin = ModelVersion.objects.get(pk=version.pk)
    twin.serving_format = "skops"
    return twin


def _assert_same_answer(a, b):
    assert a.version == b.version
    if a.scores is None:
        assert b.scores is None and a.confidence is None and b.confidence is None
        assert abs(a.output - b.output) <= PARITY_THRESHOLD * max(1.0, abs(b.output))
        return
    assert a.output == b.output
    assert a.scores.keys() == b.scores.keys()
    assert all(abs(a.scores[k] - b.scores[k]) <= PARITY_THRESHOLD for k in a.scores)
    assert abs(a.confidence - b.confidence) <= PARITY_THRESHOLD


class _Opens:
    """Counts default_storage.open calls (what a load from storage costs)."""

    def __init__(self, monkeypatch):
        self.count = 0
        self._lock = threading.Lock()
        original = default_storage.open

        def counting(name, mode="rb"):
            with self._lock:
                self.count += 1
            return original(name, mode)

        monkeypatch.setattr(default_storage, "open", counting)


# -- the allow-list ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "estimator"), [(kind, name) for kind, names in ESTIMATORS.items() for name in names]
)
def test_every_allow_listed_estimator_trains_and_serves(kind, estimator, loan, price):
    predictor = loan if kind == "label" else price
    version = _version(predictor, estimator)
    gate = version.gates[0]
    assert gate["gate"] == "onnx_parity" and gate["informational"] is True and gate["threshold"] == 1e-4
    assert version.serving_format == ("onnx" if gate["passed"] else "skops")
    assert serving.served_format(version) == version.serving_format
    _, inputs, _ = _data(predictor, 20, seed=5)
    edges = LOAN_EDGES if kind == "label" else PRICE_EDGES
    for clean_input in [*inputs, *edges]:
        answer = serving.model_answer(predictor=predictor, version=version, clean_input=clean_input)
        assert answer.version == version.version
        if kind == "label":
            assert answer.output in predictor.output_spec["labels"]
            assert set(answer.scores) == set(predictor.output_spec["labels"])
            assert answer.output == max(answer.scores, key=answer.scores.get)
            assert answer.confidence == answer.scores[answer.output]
            assert all(round(p, 6) == p for p in answer.scores.values())
        else:
            assert isinstance(answer.output, float) and 0 <= answer.output <= 1000 and answer.scores is None
        if version.serving_format == "onnx":
            twin = serving.model_answer(predictor=predictor, version=_skops_twin(version), clean_input=clean_input)
            _assert_same_answer(answer, twin)


def test_the_defaults_serve_onnx(loan, price):
    # The default estimators (logistic regression, ridge) convert and pass parity.
    for predictor, estimator in ((loan, "logistic_regression"), (price, "ridge")):
        version = _version(predictor, estimator)
        assert version.serving_format == "onnx", version.gates
        assert version.gates[0]["passed"] is True and version.gates[0]["value"] <= 1e-4
        assert len(version.onnx_sha256) == 64


@pytest.mark.parametrize("estimator", ["logistic_regression", "linear_svm"])
def test_onnx_and_skops_agree_on_missing_values_unknown_categories_and_text(estimator, loan):
    version = _version(loan, estimator, n=300)
    assert version.serving_format == "onnx", version.gates
    for clean_input in LOAN_EDGES:
        onnx_answer = serving.model_answer(predictor=loan, version=version, clean_input=clean_input)
        skops_answer = serving.model_answer(predictor=loan, version=_skops_twin(version), clean_input=clean_input)
        _assert_same_answer(onnx_answer, skops_answer)
    assert serving.served_format(version) == "onnx" and serving.served_format(_skops_twin(version)) == "skops"


def test_regression_onnx_agrees_with_skops_on_edges(price):
    version = _version(price, "gradient_boosting")
    assert version.serving_format == "onnx", version.gates
    for clean_input in PRICE_EDGES:
        _assert_same_answer(
            serving.model_answer(predictor=price, version=version, clean_input=clean_input),
            serving.model_answer(predictor=price, version=_skops_twin(version), clean_input=clean_input),
        )


# -- hyperparameters -----------------------------------------------------------------------


def test_estimator_params_are_checked_against_the_estimator():
    assert estimator_params_errors("label", "logistic_regression", {"C": 0.5, "max_iter": 200}) == []
    assert estimator_params_errors("label", "linear_svm", {"C": 2.0}) == []
    assert estimator_params_errors("number", "random_forest", {"n_estimators": 20, "max_depth": None}) == []
    errors = estimator_params_errors("label", "logistic_regression", {"Cee": 0.5})
    assert len(errors) == 1 and errors[0].startswith("Cee:") and "not a hyperparameter" in errors[0]
    assert estimator_params_errors("label", "random_forest", {"n_estimators": -3})[0].startswith("n_estimators:")
    assert "unknown estimator" in estimator_params_errors("number", "logistic_regression", {})[0]


def test_params_reach_the_estimator_and_estimators_are_seeded(loan):
    version = _version(loan, "random_forest", params={"n_estimators": 7})
    from models_registry.artifacts import artifact_load

    first = artifact_load(name=version.artifact.name, sha256=version.artifact_sha256)
    fitted = first.named_steps["estimator"]
    assert fitted.n_estimators == 7 and fitted.random_state == 0
    again = _version(loan, "random_forest", params={"n_estimators": 7})
    second = artifact_load(name=again.artifact.name, sha256=again.artifact_sha256)
    X = feature_rows(loan.schema, _data(loan, 30, seed=4)[1])
    assert (first.predict_proba(X) == second.predict_proba(X)).all()  # same labels, same seed, same model


# -- integrity and the allow-list ----------------------------------------------------------


def _tamper(name: str) -> None:
    with default_storage.open(name, "rb") as handle:
        data = bytearray(handle.read())
    data[len(data) // 2] ^= 0xFF
    default_storage.delete(name)
    default_storage.save(name, io.BytesIO(bytes(data)))


@pytest.mark.parametrize("estimator", ["logistic_regression", "hist_gradient_boosting"])
def test_a_tampered_artifact_is_refused_and_predict_falls_back(estimator, loan, client_api):
    version = _version(loan, estimator)
    name = version.onnx_artifact.name if version.serving_format == "onnx" else version.artifact.name
    _tamper(name)
    with pytest.raises(ArtifactIntegrityError):
        serving.model_answer(predictor=loan, version=version, clean_input=factories.loan_input())
    assert not serving._loaded  # a refused artifact is never kept as loaded
    # A tampered file cannot be promoted, forced or not: no process could serve it.
    with pytest.raises(PromotionRefused, match=r"cannot be served: its model file is corrupt"):
        model_version_promote(version=version, force=True, reason="ship it anyway")
    assert ModelVersion.objects.get(pk=version.pk).stage == "candidate"
    # One tampered after its promotion is refused where it is loaded: /predict falls back.
    _tamper(name)  # the same byte flipped back: the recorded file again
    model_version_promote(version=version)
    _tamper(name)
    routing_update(predictor=loan, changes={"mode": "model"})
    response = client_api.post("/predict/loan-approval", {"input": factories.loan_input()}, format="json")
    # The gateway diverts to its fallback (the queue, or the rules): never a 500.
    assert response.status_code in (200, 202), response.content
    body = response.json()
    assert body["route"]["reason"] == "model_error" and body.get("source") != "model"


class Sneaky(BaseEstimator, TransformerMixin):
    """A class of our own: skops must not import and build it from an artifact."""

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return X


@pytest.mark.parametrize("payload", [FunctionTransformer(func=eval), Sneaky()], ids=["builtins.eval", "custom-class"])
def test_a_skops_artifact_with_an_untrusted_type_is_refused(payload, loan):
    data = sio.dumps(payload)
    name = default_storage.save("models/loan-approval/evil.skops", ContentFile(data))
    run = TrainingRun.objects.create(predictor=loan, status=TrainingRun.Status.SUCCEEDED)
    version = ModelVersion.objects.create(
        predictor=loan, version=1, run=run, schema_version=1, artifact=name, artifact_sha256=hashlib.sha256(data).hexdigest()
    )
    for _ in range(2):  # refused again (from memory), never cached as loaded
        with pytest.raises(UntrustedArtifactError, match="untrusted"):
            serving.model_answer(predictor=loan, version=version, clean_input=factories.loan_input())
    assert not serving._loaded


def test_skops_serves_when_onnx_conversion_is_impossible(loan, monkeypatch, client_api):
    import skl2onnx

    def unconvertible(*args, **kwargs):
        raise NotImplementedError("no converter for this pipeline")

    monkeypatch.setattr(skl2onnx, "convert_sklearn", unconvertible)
    version = _version(loan, "logistic_regression")
    assert version.serving_format == "skops" and not version.onnx_artifact and not version.onnx_sha256
    gate = version.gates[0]
    assert gate["passed"] is False and gate["value"] is None and "conversion failed" in gate["detail"]
    assert serving.served_format(version) == "skops"
    model_version_promote(version=version)  # informational: it never blocks promotion
    routing_update(predictor=loan, changes={"mode": "model"})
    body = client_api.post("/predict/loan-approval", {"input": factories.loan_input()}, format="json").json()
    assert body["source"] == "model" and body["model_version"] == version.version
    assert body["output"] in ("approve", "refer")


def test_an_export_onnxruntime_cannot_run_is_served_from_skops(loan, monkeypatch):
    version = _version(loan, "logistic_regression")
    assert version.serving_format == "onnx"

    def broken(data):
        raise RuntimeError("this onnxruntime cannot load the graph")

    monkeypatch.setattr(serving, "OnnxModel", broken)
    answer = serving.model_answer(predictor=loan, version=version, clean_input=factories.loan_input())
    assert answer.output in ("approve", "refer") and serving.served_format(version) == "skops"


# -- loading once --------------------------------------------------------------------------


@pytest.mark.parametrize("estimator", ["logistic_regression", "random_forest"])
def test_a_version_is_loaded_from_storage_once_across_many_answers(estimator, loan, monkeypatch):
    version = _version(loan, estimator)
    opens = _Opens(monkeypatch)
    _, inputs, _ = _data(loan, 64, seed=11)
    with ThreadPoolExecutor(max_workers=8) as pool:  # first use from many threads at once
        answers = list(pool.map(lambda x: serving.model_answer(predictor=loan, version=version, clean_input=x), inputs * 3))
    assert len(answers) == 192 and opens.count == 1
    # A fresh row object for the same version (as each request gets) is still served from memory.
    again = ModelVersion.objects.get(pk=version.pk)
    serving.model_answer(predictor=loan, version=again, clean_input=inputs[0])
    assert opens.count == 1


def test_a_failed_load_is_remembered_for_a_while_not_retried_per_request(loan, monkeypatch):
    version = _version(loan, "logistic_regression")
    _tamper(version.onnx_artifact.name)
    opens = _Opens(monkeypatch)
    for _ in range(20):
        with pytest.raises(ArtifactIntegrityError):
            serving.model_answer(predictor=loan, version=version, clean_input=factories.loan_input())
    assert opens.count == 1 and not serving._loaded
    # Once the memory lapses, storage is read again (an operator may have fixed the file).
    clock = time.monotonic() + serving.FAILURE_MEMORY_SECONDS + 1
    monkeypatch.setattr(time, "monotonic", lambda: clock)
    with pytest.raises(ArtifactIntegrityError):
        serving.model_answer(predictor=loan, version=version, clean_input=factories.loan_input())
    assert opens.count == 2


# -- training writes it all ----------------------------------------------------------------


def test_training_exports_onnx_checks_parity_and_records_the_gate(loan, client_api):
    world = SyntheticPredictor(loan.schema, loan.output_spec)
    rng = random.Random(2)
    Label.objects.bulk_create(
        Label(predictor=loan, schema_version=1, input=(x := world.input(rng)), target=world.truth(x), source="import")
        for _ in range(160)
    )
    from models_registry.training import training_run_execute

    run = training_run_execute(run_id=TrainingRun.objects.create(predictor=loan).pk)
    assert run.status == "succeeded", run.error
    version = run.model_version
    gate = next(g for g in version.gates if g["gate"] == "onnx_parity")
    assert gate["informational"] is True and gate["passed"] is True and gate["value"] <= gate["threshold"] == 1e-4
    assert version.serving_format == "onnx" and version.onnx_artifact.name.endswith(".onnx")
    with default_storage.open(version.onnx_artifact.name, "rb") as handle:
        assert hashlib.sha256(handle.read()).hexdigest() == version.onnx_sha256
    model_version_promote(version=version)
    routing_update(predictor=loan, changes={"mode": "model"})
    body = client_api.post("/predict/loan-approval", {"input": world.input(rng)}, format="json").json()
    assert body["source"] == "model" and body["output"] == max(body["scores"], key=body["scores"].get)
    assert serving.served_format(version) == "onnx"
