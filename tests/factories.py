"""Test data, built through the same services production uses wherever one exists."""
from __future__ import annotations

from pathlib import Path

from django.conf import settings

from gateway.definitions import predictors_load
from gateway.models import Predictor
from gateway.roles import OPERATORS, REVIEWERS
from gateway.services import api_client_create, person_create

DEMO_PREDICTORS = Path(settings.BASE_DIR) / "predictors"


def loan_predictor(*, registry_blocks: bool = False) -> Predictor:
    """The shipped demo predictor. Its training, gates and auto_promote blocks are set for the
    demo scenario (a retrain every 100 labels, gates that promote by themselves); a test gets
    them only with `registry_blocks`, and otherwise sets what it tests."""
    predictors_load(DEMO_PREDICTORS / "loan-approval.yaml")
    if not registry_blocks:
        Predictor.objects.filter(slug="loan-approval").update(training={}, gates={}, auto_promote=False)
    return Predictor.objects.select_related("routing").get(slug="loan-approval")


# The hosts the tests' callback_urls name: the documentation domain and local receivers.
TEST_WEBHOOK_HOSTS = ["client.example", "*.client.example", "client.example.com", "127.0.0.1"]


def api_client_with_key(
    name: str = "acme", predictor_slugs: list[str] | None = None, webhook_hosts: list[str] | None = None
):
    hosts = TEST_WEBHOOK_HOSTS if webhook_hosts is None else webhook_hosts
    return api_client_create(name=name, predictor_slugs=predictor_slugs, webhook_hosts=hosts)


def reviewer_with_token(username: str = "rita", password: str | None = "pw-rita-123"):
    return person_create(username=username, group=REVIEWERS, password=password)


def operator_with_token(username: str = "otto", password: str | None = "pw-otto-123"):
    return person_create(username=username, group=OPERATORS, password=password)


def loan_input(**overrides) -> dict:
    data = {"amount": 12000, "years_trading": 4, "sector": "food", "has_collateral": False}
    data.update(overrides)
    return data


def synthetic_labels(predictor, n: int, *, seed: int = 1) -> list:
    """`n` correct labels of the predictor's synthetic world (gateway.demo), imported."""
    import random

    from gateway.demo import SyntheticPredictor
    from review.models import Label

    world = SyntheticPredictor(predictor.schema, predictor.output_spec)
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        data = world.input(rng)
        rows.append(Label(predictor=predictor, schema_version=1, input=data, target=world.truth(data), source="import"))
    return Label.objects.bulk_create(rows)


def trained_version(predictor, *, seed: int = 3, n_labels: int = 80):
    """A model version trained on `n_labels` synthetic, correctly labelled inputs (a real run:
    fit, gates, ONNX export). The run must succeed."""
    from models_registry.models import TrainingRun
    from models_registry.training import training_run_execute

    synthetic_labels(predictor, n_labels, seed=seed)
    run = training_run_execute(run_id=TrainingRun.objects.create(predictor=predictor).pk)
    assert run.status == "succeeded", run.error
    return run.model_version


def stored_artifact(name: str, data: bytes | None = None) -> dict:
    """A stand-in model file stored under `name`, as a ModelVersion's `artifact` and
    `artifact_sha256` fields (a version whose file is missing or differs cannot be promoted)."""
    from models_registry.artifacts import bytes_save

    stored, digest = bytes_save(data=data if data is not None else f"stand-in model file {name}".encode(), name=name)
    return {"artifact": stored, "artifact_sha256": digest}
