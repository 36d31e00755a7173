"""Training runs: request one (at most one active per predictor), execute it in a worker,
register the result as a candidate model version."""
from __future__ import annotations

import hashlib
import logging
import platform
import subprocess
import time
import traceback
from collections import Counter
from importlib import metadata

import numpy as np
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone
from sklearn import metrics as skm
from sklearn.model_selection import train_test_split

from gateway.messaging import task_send_on_commit
from gateway.models import Predictor
from gateway.schema import input_validate, output_error
from review.selectors import labels_current

from .artifacts import artifact_save
from .features import ESTIMATORS, feature_rows, pipeline_build, usable_text_fields
from .models import ModelVersion, TrainingRun

logger = logging.getLogger(__name__)

HOLDOUT_FRACTION = 0.25
SPLIT_SEED = 42


class TrainingAlreadyActive(Exception):
    def __init__(self, run: TrainingRun | None):
        self.run = run
        super().__init__("a training run is already queued or running for this predictor")


class NotEnoughLabels(Exception):
    pass


def training_run_request(*, predictor: Predictor, requested_by=None, trigger=TrainingRun.Trigger.MANUAL) -> TrainingRun:
    """Queue a run and send it to a worker once committed. At most one queued or running
    run per predictor, enforced by a partial unique index (safe across processes)."""
    try:
        with transaction.atomic():
            run = TrainingRun.objects.create(predictor=predictor, requested_by=requested_by, trigger=trigger)
            from .tasks import training_run_execute_task

            task_send_on_commit(training_run_execute_task, run.pk)
    except IntegrityError:
        active = TrainingRun.objects.filter(
            predictor=predictor, status__in=[TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING]
        ).first()
        raise TrainingAlreadyActive(active) from None
    return run


def _environment() -> dict:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    libs = {}
    for name in ("scikit-learn", "numpy", "scipy", "skops", "Django"):
        try:
            libs[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return {"git_commit": commit or None, "python": platform.python_version(), "libraries": libs}


def _dataset(predictor: Predictor):
    """The current labels whose input and target fit the current schema, in id order."""
    ids, inputs, targets, dropped = [], [], [], 0
    for label in labels_current(predictor=predictor).only("id", "input", "target").order_by("id").iterator(chunk_size=2000):
        _, errors = input_validate(predictor.schema, label.input)
        if errors or output_error(predictor.output_spec, label.target):
            dropped += 1
            continue
        ids.append(label.id)
        inputs.append(label.input)
        targets.append(label.target)
    return ids, inputs, targets, dropped


def _jsonable(params: dict) -> dict:
    return {k: v if isinstance(v, (int, float, str, bool, type(None))) else repr(v) for k, v in params.items()}


def _classification_metrics(pipeline, X, y) -> dict:
    proba = pipeline.predict_proba(X)
    predicted = pipeline.classes_[proba.argmax(axis=1)]
    out = {
        "accuracy": float(skm.accuracy_score(y, predicted)),
        "f1_macro": float(skm.f1_score(y, predicted, average="macro")),
        "log_loss": float(skm.log_loss(y, proba, labels=pipeline.classes_)),
    }
    try:
        if len(pipeline.classes_) == 2:
            out["roc_auc"] = float(skm.roc_auc_score(y == pipeline.classes_[1], proba[:, 1]))
        else:
            out["roc_auc"] = float(skm.roc_auc_score(y, proba, multi_class="ovr", labels=pipeline.classes_))
    except ValueError:
        out["roc_auc"] = None  # a holdout missing a class
    return out


def _regression_metrics(pipeline, X, y) -> dict:
    predicted = pipeline.predict(X)
    return {
        "rmse": float(np.sqrt(skm.mean_squared_error(y, predicted))),
        "mae": float(skm.mean_absolute_error(y, predicted)),
        "r2": float(skm.r2_score(y, predicted)),
    }


def training_run_execute(*, run_id: int) -> TrainingRun | None:
    """Run a queued training run. Idempotent: only a `queued` run is started, so a duplicate
    message does nothing. A failure marks the run failed with its error; the version row is
    written only after the artifact is stored, in the same transaction as the run's success."""
    started = TrainingRun.objects.filter(pk=run_id, status=TrainingRun.Status.QUEUED).update(
        status=TrainingRun.Status.RUNNING, started_at=timezone.now()
    )
    if not started:
        return None
    run = TrainingRun.objects.select_related("predictor").get(pk=run_id)
    predictor = run.predictor
    clock = time.monotonic()
    try:
        run.environment = _environment()
        ids, inputs, targets, dropped = _dataset(predictor)
        minimum = settings.OZ_MIN_TRAINING_LABELS
        if len(ids) < minimum:
            raise NotEnoughLabels(f"{len(ids)} usable labels; at least {minimum} are needed")
        classification = predictor.is_classification
        y = np.asarray(targets, dtype=object if classification else np.float64)
        counts = Counter(targets) if classification else None
        if classification and (len(counts) < 2 or min(counts.values()) < 2):
            raise NotEnoughLabels(f"need at least two labels of each of two classes; have {dict(counts)}")
        run.dataset = {
            "label_ids": ids,
            "label_ids_sha256": hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest(),
            "n_labels": len(ids),
            "n_dropped_not_matching_schema": dropped,
            "class_counts": dict(counts) if counts else None,
            "schema_version": predictor.schema_version,
        }
        X = feature_rows(predictor.schema, inputs)
        X_train, X_test, y_train, y_test = train_test_split(
            X, y, test_size=HOLDOUT_FRACTION, random_state=SPLIT_SEED, stratify=y if classification else None
        )
        estimator = next(iter(ESTIMATORS[predictor.output_spec["type"]]))
        params: dict = {}
        text_fields = usable_text_fields(predictor.schema, X_train)
        pipeline = pipeline_build(
            predictor.schema, predictor.output_spec, estimator=estimator, params=params, text_fields=text_fields
        )
        pipeline.fit(X_train, y_train)
        run.estimator = estimator
        run.params = {
            "estimator": estimator,
            "hyperparameters": _jsonable(pipeline.named_steps["estimator"].get_params()),
            "holdout_fraction": HOLDOUT_FRACTION,
            "split": "stratified" if classification else "random",
            "split_seed": SPLIT_SEED,
            "text_fields": text_fields,
        }
        metrics = (_classification_metrics if classification else _regression_metrics)(pipeline, X_test, y_test)
        metrics.update({"n_train": len(y_train), "n_holdout": len(y_test)})
        run.metrics = metrics
        with transaction.atomic():
            predictor_locked = Predictor.objects.select_for_update().get(pk=predictor.pk)
            number = (ModelVersion.objects.filter(predictor=predictor_locked).aggregate(n=Max("version"))["n"] or 0) + 1
            name, digest = artifact_save(pipeline=pipeline, name=f"models/{predictor.slug}/v{number}.skops")
            run.status = TrainingRun.Status.SUCCEEDED
            run.finished_at = timezone.now()
            run.duration_seconds = time.monotonic() - clock
            run.save()
            ModelVersion.objects.create(
                predictor=predictor_locked,
                version=number,
                run=run,
                schema_version=predictor.schema_version,
                artifact=name,
                artifact_sha256=digest,
                metrics=metrics,
            )
    except Exception as exc:  # any failure is the run's result, not the worker's crash
        logger.warning("training run %s failed: %s", run_id, exc)
        run.status = TrainingRun.Status.FAILED
        run.error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        if not isinstance(exc, NotEnoughLabels):
            run.error += "\n\n" + traceback.format_exc()
        run.finished_at = timezone.now()
        run.duration_seconds = time.monotonic() - clock
        run.save()
    return run
