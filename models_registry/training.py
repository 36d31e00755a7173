"""Training runs, tracked like MLflow runs: request one (at most one active per predictor),
execute it in a worker, register the result as a candidate model version, and the three
ways a run starts (manual, label threshold, schedule) plus the reaper for runs whose worker
died.

What a run records: the trigger; the estimator, its hyperparameters and, with a `grid`, the
3-fold cross-validation on the training part (every candidate's score and the choice); the
exact label set (ids, their hash, counts per class, the holdout's ids); code and library
versions; duration; peak memory; holdout metrics with a calibration curve; the champion of
the time scored on the same holdout; fairness by group of the sensitive attribute; its own
log lines; status and error.

Crash safety. A run beats (`heartbeat_at`, and `worker` = host:pid) from a small thread
while it works; `training_runs_reap` (beat) fails a running run whose beat stopped. The
artifact is written only at the very end, under a folder of the run's own
(`models/<slug>/run-<id>/`), in the transaction that creates the version and marks the run
succeeded, and only while the run is still `running` (a reaped run never registers a
version). A crash after the file was written but before the commit leaves a file no version
names and no later run can reuse (every run has its own folder); the reaper deletes it.

Peak memory is the worker process's resident set at its highest during the run (labels
read, features, fit, evaluation, export): on Linux the kernel's high-water mark (VmHWM) is
reset when the run starts (/proc/self/clear_refs) and read at the end, so the figure is this
run's peak, native buffers (liblinear, OpenMP, onnxruntime) included, and what the worker
already held (Django, the libraries, cached models) counted in it: what a worker needs to
run it. The resident set when the run began is written to the run's log beside it, so the
run's own share shows. Where the mark cannot be reset, the figure is the process's lifetime
peak (getrusage), an upper bound. (tracemalloc, used before, multiplied a 100,000-label run's
time by four and its memory by two, bench/training.py showed: it traces every allocation.)"""
from __future__ import annotations

import hashlib
import logging
import math
import os
import platform
import resource
import socket
import subprocess
import sys
import threading
import time
import traceback
import warnings
from collections import Counter
from datetime import timedelta
from importlib import metadata

import numpy as np
from django.conf import settings
from django.core.files.storage import default_storage
from django.db import IntegrityError, connection, transaction
from django.db.models import Max, Q
from django.utils import timezone
from sklearn import metrics as skm
from sklearn.calibration import CalibratedClassifierCV, calibration_curve
from sklearn.model_selection import KFold, ParameterGrid, StratifiedKFold, train_test_split

from gateway.messaging import task_send_on_commit
from gateway.models import Predictor
from gateway.schema import input_validate, output_error
from review.selectors import labels_current

from .artifacts import artifact_load, artifact_save
from .config import CV_FOLDS, training_settings
from .drift import reference_stats_for_training
from .features import ESTIMATORS, feature_rows, pipeline_build, usable_text_fields
from .jsonsafe import json_ready
from .models import ModelVersion, TrainingRun

logger = logging.getLogger(__name__)

ACTIVE = (TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING)
CALIBRATION_BINS = 10
LIBRARIES = (
    "scikit-learn", "numpy", "scipy", "pandas", "fairlearn", "skops", "joblib", "threadpoolctl",
    "skl2onnx", "onnx", "onnxruntime", "Django", "celery",
)
GRID_SCORING = {"label": "f1_macro", "number": "neg_root_mean_squared_error"}


class TrainingAlreadyActive(Exception):
    def __init__(self, run: TrainingRun | None):
        self.run = run
        super().__init__("a training run is already queued or running for this predictor")


class NotEnoughLabels(Exception):
    pass


class RunLost(Exception):
    """The run is no longer `running` (the reaper failed it): its result must not register."""


# -- requesting ---------------------------------------------------------------------------


def training_run_request(*, predictor: Predictor, requested_by=None, trigger=TrainingRun.Trigger.MANUAL) -> TrainingRun:
    """Queue a run and send it to a worker once committed. At most one queued or running
    run per predictor, enforced by a partial unique index (safe across processes)."""
    try:
        with transaction.atomic():
            run = TrainingRun.objects.create(predictor=predictor, requested_by=requested_by, trigger=trigger)
            from .tasks import training_run_execute_task

            task_send_on_commit(training_run_execute_task, run.pk)
    except IntegrityError:
        active = TrainingRun.objects.filter(predictor=predictor, status__in=ACTIVE).first()
        raise TrainingAlreadyActive(active) from None
    logger.info("training run %s queued for %s (%s)", run.pk, predictor.slug, trigger)
    return run


def _last_label_set(predictor_id: int):
    """(the latest run's status or None, the highest label id of the latest run that read
    its labels, or 0). Reads the newest few runs only."""
    latest_status, baseline = None, None
    recent = (
        TrainingRun.objects.filter(predictor_id=predictor_id)
        .order_by("-created_at", "-id")
        .values("status", "created_at", "dataset__max_label_id")[:5]
    )
    for i, row in enumerate(recent):
        if i == 0:
            latest_status = row
        if row["dataset__max_label_id"] is not None:
            baseline = row["dataset__max_label_id"]
            break
    return latest_status, int(baseline or 0)


def _new_labels_count(predictor: Predictor, since_label_id: int) -> int:
    # One count over the partial index (predictor, id) of current labels.
    return labels_current(predictor=predictor).filter(id__gt=since_label_id).count()


def retrain_after_labels_check(*, predictor_id: int) -> TrainingRun | None:
    """The label-threshold trigger (called on commit of every label): queue a run once the
    predictor has `training.retrain_after_labels` current labels newer than the last run's
    label set. Nothing while a run is queued or running; cheap otherwise (the newest runs
    and one indexed count)."""
    predictor = Predictor.objects.filter(pk=predictor_id).first()
    threshold = (predictor.training or {}).get("retrain_after_labels") if predictor else None
    if not threshold:
        return None
    latest, baseline = _last_label_set(predictor_id)
    if latest and latest["status"] in ACTIVE:
        return None
    new = _new_labels_count(predictor, baseline)
    if new < threshold:
        return None
    try:
        run = training_run_request(predictor=predictor, trigger=TrainingRun.Trigger.LABEL_THRESHOLD)
    except TrainingAlreadyActive:
        return None
    logger.info("run %s for %s: %s new labels since label #%s (threshold %s)", run.pk, predictor.slug, new, baseline, threshold)
    return run


def training_schedule_sweep(*, now=None) -> dict:
    """The schedule trigger (beat): every predictor with `training.retrain_every_hours`
    whose latest run is at least that old gets a run, unless one is active or the latest
    run succeeded on a label set that has not changed since (it would train the same
    model again)."""
    now = now or timezone.now()
    counts = {"requested": 0, "not_due": 0, "active": 0, "unchanged": 0}
    for predictor in Predictor.objects.filter(training__has_key="retrain_every_hours").order_by("pk"):
        hours = (predictor.training or {}).get("retrain_every_hours")
        if not hours:
            continue
        latest = (
            TrainingRun.objects.filter(predictor=predictor)
            .order_by("-created_at", "-id")
            .values("status", "created_at", "dataset__max_label_id", "dataset__n_labels", "dataset__schema_version")
            .first()
        )
        if latest and latest["status"] in ACTIVE:
            counts["active"] += 1
            continue
        if latest and latest["created_at"] > now - timedelta(hours=hours):
            counts["not_due"] += 1
            continue
        if (
            latest
            and latest["status"] == TrainingRun.Status.SUCCEEDED
            and latest["dataset__schema_version"] == predictor.schema_version
            and _new_labels_count(predictor, int(latest["dataset__max_label_id"] or 0)) == 0
            and labels_current(predictor=predictor).count() == latest["dataset__n_labels"]
        ):
            counts["unchanged"] += 1
            continue
        try:
            training_run_request(predictor=predictor, trigger=TrainingRun.Trigger.SCHEDULE)
            counts["requested"] += 1
        except TrainingAlreadyActive:
            counts["active"] += 1
    return counts


# -- the reaper ---------------------------------------------------------------------------


def run_artifact_folder(run: TrainingRun) -> str:
    return f"{settings.OZ_ARTIFACT_PREFIX}/{run.predictor.slug}/run-{run.pk}"


def run_artifacts_discard(run: TrainingRun) -> list[str]:
    """Delete whatever a run that registered no version left in its artifact folder (a
    crash between writing the file and committing the version). Never touches a folder
    whose run has a version. Best effort: returns the names deleted."""
    if ModelVersion.objects.filter(run_id=run.pk).exists():
        return []
    folder = run_artifact_folder(run)
    try:
        _, files = default_storage.listdir(folder)
    except (FileNotFoundError, NotADirectoryError, OSError):
        return []
    deleted = []
    for name in files:
        try:
            default_storage.delete(f"{folder}/{name}")
            deleted.append(f"{folder}/{name}")
        except OSError:
            logger.warning("could not delete stray artifact %s/%s", folder, name, exc_info=True)
    try:  # an empty folder on a file system storage; object stores have none
        os.rmdir(default_storage.path(folder))
    except (NotImplementedError, OSError):
        pass
    return deleted


def training_runs_reap(*, now=None) -> dict:
    """Fail runs whose worker is gone (beat runs this), freeing their predictor:

    - `running` with no heartbeat for OZ_TRAINING_HEARTBEAT_TIMEOUT seconds: the worker was
      killed (SIGKILL, OOM, a hard time limit) or lost its database. Failed, not re-queued:
      a run that killed its worker would most likely kill the next one too, and the
      triggers (or an operator) request a fresh run. Its stray artifact, if any, is deleted.
    - `queued` for longer than OZ_TRAINING_QUEUED_TIMEOUT: re-sending is the outbox
      sweeper's job (gateway.outbox re-sends queued runs every minute), so the reaper never
      re-sends; it only gives up on a run that no worker took in all that time, so the
      one-active-run rule does not block the predictor forever. Failed, not re-sent. A late
      message for it is a no-op (only a queued run starts).

    Each row is failed by a conditional UPDATE, so a run that finishes at that moment is
    left alone (its final transaction holds the row and checks it is still running)."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.OZ_TRAINING_HEARTBEAT_TIMEOUT)
    silent = Q(status=TrainingRun.Status.RUNNING) & (
        Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, started_at__lt=cutoff)
    )
    result = {"running_failed": 0, "queued_failed": 0, "artifacts_deleted": 0}
    for run in TrainingRun.objects.filter(silent).select_related("predictor"):
        last = run.heartbeat_at or run.started_at
        error = (
            f"the worker stopped responding: no heartbeat from {run.worker or 'its worker'} since "
            f"{last.isoformat() if last else 'it started'} (timeout {settings.OZ_TRAINING_HEARTBEAT_TIMEOUT} s); "
            "it was probably killed (out of memory, a time limit, a restart). Request a new run."
        )
        duration = (last - run.started_at).total_seconds() if last and run.started_at else None
        if TrainingRun.objects.filter(silent, pk=run.pk).update(
            status=TrainingRun.Status.FAILED, error=error, finished_at=now, duration_seconds=duration
        ):
            result["running_failed"] += 1
            logger.warning("training run %s failed by the reaper: %s", run.pk, error)
            result["artifacts_deleted"] += len(run_artifacts_discard(run))
    queued_cutoff = now - timedelta(seconds=settings.OZ_TRAINING_QUEUED_TIMEOUT)
    stuck = Q(status=TrainingRun.Status.QUEUED, created_at__lt=queued_cutoff)
    for pk in TrainingRun.objects.filter(stuck).values_list("pk", flat=True):
        error = (
            f"no worker started this run within {settings.OZ_TRAINING_QUEUED_TIMEOUT} s of its request "
            "(are the Celery workers running?). Request a new run."
        )
        if TrainingRun.objects.filter(stuck, pk=pk).update(status=TrainingRun.Status.FAILED, error=error, finished_at=now):
            result["queued_failed"] += 1
            logger.warning("training run %s failed by the reaper: %s", pk, error)
    return result


# -- what a run records -------------------------------------------------------------------


def _environment() -> dict:
    commit, dirty = settings.OZ_CODE_VERSION or None, None
    if not commit:
        try:
            git = ["git", "-C", str(settings.BASE_DIR)]
            commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5).stdout.strip()
            if commit:
                dirty = subprocess.run([*git, "diff", "--quiet", "HEAD"], capture_output=True, timeout=5).returncode == 1
        except (OSError, subprocess.SubprocessError):
            commit = None
    libs = {}
    for name in LIBRARIES:
        try:
            libs[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return {
        "git_commit": commit or None,
        "git_dirty": dirty,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "libraries": libs,
    }


_clean = json_ready


class _RunLog(logging.Handler):
    """This run's log records (from its own thread), kept for `TrainingRun.logs`."""

    def __init__(self, thread_id: int):
        super().__init__(level=logging.INFO)
        self.thread_id = thread_id
        self.lines: list[str] = []
        self.lock_lines = threading.Lock()
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))

    def emit(self, record):
        if record.thread != self.thread_id:
            return
        try:
            line = self.format(record)
        except Exception:  # a bad format string must not fail the run
            line = str(record.msg)
        with self.lock_lines:
            self.lines.append(line)

    def text(self) -> str:
        with self.lock_lines:
            return "\n".join(self.lines)


class _Heartbeat(threading.Thread):
    """Writes `heartbeat_at` (and the log so far, so a running run can be followed) every
    OZ_TRAINING_HEARTBEAT_SECONDS while the run works; notices when the run was reaped."""

    def __init__(self, run_id: int, log: _RunLog):
        super().__init__(name=f"training-run-{run_id}-heartbeat", daemon=True)
        self.run_id, self.log = run_id, log
        self.stopped = threading.Event()
        self.lost = False

    def run(self):
        try:
            while not self.stopped.wait(settings.OZ_TRAINING_HEARTBEAT_SECONDS):
                try:
                    beat = TrainingRun.objects.filter(pk=self.run_id, status=TrainingRun.Status.RUNNING).update(
                        heartbeat_at=timezone.now(), logs=self.log.text()
                    )
                    if not beat:  # not running any more (reaped), or not visible to this connection
                        status = TrainingRun.objects.filter(pk=self.run_id).values_list("status", flat=True).first()
                        self.lost = self.lost or (status is not None and status != TrainingRun.Status.RUNNING)
                except Exception:  # a database hiccup: the next beat tries again
                    logger.debug("heartbeat of training run %s failed", self.run_id, exc_info=True)
        finally:
            connection.close()  # this thread's own connection

    def stop(self):
        self.stopped.set()
        self.join(timeout=30)


class _PeakMemory:
    """The process's peak resident set over the run (see the module docstring): `peak`
    once the block has ended, `read()` so far; `start` is the resident set at the start."""

    def __enter__(self):
        self.start = _status_bytes("VmRSS")
        try:
            with open("/proc/self/clear_refs", "w") as clear_refs:
                clear_refs.write("5")  # resets VmHWM to the current resident set
            self.reset = _status_bytes("VmHWM") is not None
        except OSError:
            self.reset = False
        self.peak = 0
        return self

    def read(self) -> int:
        hwm = _status_bytes("VmHWM") if self.reset else None
        return hwm if hwm is not None else _max_rss_bytes()

    def __exit__(self, *exc):
        self.peak = self.read()
        return False


def _status_bytes(field: str) -> int | None:
    """A size from /proc/self/status (VmRSS, VmHWM), in bytes; None where there is none."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


# -- data, split, fit, evaluation ---------------------------------------------------------


def _dataset(predictor: Predictor):
    """The current labels whose input and target fit the current schema, in id order, read
    in chunks through a server-side cursor (never every label object at once)."""
    ids, inputs, targets, created, dropped = [], [], [], [], 0
    rows = (
        labels_current(predictor=predictor)
        .order_by("id")
        .values_list("id", "input", "target", "created_at")
        .iterator(chunk_size=settings.OZ_TRAINING_LABEL_CHUNK)
    )
    for pk, data, target, created_at in rows:
        _, errors = input_validate(predictor.schema, data)
        if errors or output_error(predictor.output_spec, target):
            dropped += 1
            continue
        ids.append(pk)
        inputs.append(data)
        targets.append(target)
        created.append(created_at)
    return ids, inputs, targets, created, dropped


def _split(n: int, y, created, *, classification: bool, split: str, fraction: float, seed: int):
    """(train indices, holdout indices). `time`: the newest labels (by creation, then id)
    are the holdout. Otherwise a seeded split, stratified by class for labels."""
    if split == "time":
        order = sorted(range(n), key=lambda i: (created[i], i))  # ids ascend with i
        n_test = math.ceil(n * fraction)
        return np.array(sorted(order[: n - n_test])), np.array(sorted(order[n - n_test:]))
    train, test = train_test_split(
        np.arange(n), test_size=fraction, random_state=seed, stratify=y if classification else None
    )
    return np.sort(train), np.sort(test)


def _effective_hyperparameters(pipeline) -> dict:
    final = pipeline.steps[-1][1]
    if isinstance(final, CalibratedClassifierCV) and final.estimator is not None:
        final = final.estimator  # the calibrated SVM: its hyperparameters are the SVM's
    return _clean(final.get_params(deep=False))


def _grid_search(predictor, settings_, X_train, y_train, text_fields, classification: bool) -> dict:
    """Cross-validate every combination of the grid (each on top of the fixed params) on
    the training part; the best mean score wins, the first in grid order on a tie."""
    kind = predictor.output_spec["type"]
    scoring = GRID_SCORING[kind]
    scorer = skm.get_scorer(scoring)
    seed = settings_["seed"]
    folds = (StratifiedKFold if classification else KFold)(n_splits=CV_FOLDS, shuffle=True, random_state=seed)
    candidates = []
    for combination in ParameterGrid(settings_["grid"]):
        params = {**settings_["params"], **combination}
        scores, error = [], None
        for fit_idx, score_idx in folds.split(X_train, y_train if classification else None):
            try:
                model = pipeline_build(
                    predictor.schema, predictor.output_spec, estimator=settings_["estimator"], params=params,
                    text_fields=text_fields,
                )
                model.fit(X_train[fit_idx], y_train[fit_idx])
                scores.append(float(scorer(model, X_train[score_idx], y_train[score_idx])))
            except Exception as exc:  # a combination that cannot fit loses, the others go on
                error = f"{type(exc).__name__}: {exc}"
                break
        mean = float(np.mean(scores)) if scores and error is None else None
        candidates.append({
            "params": _clean(combination),
            "mean_score": mean,
            "std_score": float(np.std(scores)) if mean is not None else None,
            "fold_scores": _clean(scores),
            **({"error": error} if error else {}),
        })
        logger.info("grid %s: %s = %s%s", _clean(combination), scoring, mean, f" ({error})" if error else "")
    scored = [c for c in candidates if c["mean_score"] is not None and math.isfinite(c["mean_score"])]
    if not scored:
        raise ValueError(f"every grid combination failed; the first: {candidates[0].get('error')}")
    best = max(scored, key=lambda c: c["mean_score"])  # max keeps the first of equals
    return {
        "scoring": scoring,
        "cv_folds": CV_FOLDS,
        "candidates": candidates,
        "best_params": best["params"],
        "best_score": best["mean_score"],
    }


def _favourable_index(classes, labels: list) -> int:
    """The column of the predictor's first label (the favourable outcome) when present,
    else the second class (scikit-learn's positive)."""
    classes = list(classes)
    return classes.index(labels[0]) if labels and labels[0] in classes else len(classes) - 1


def _calibration(y, proba, classes, labels: list) -> dict:
    """Reliability curves on the holdout (uniform bins): binary, one for the favourable
    label; more labels, one per label against the rest."""
    classes = list(classes)
    targets = [classes[_favourable_index(classes, labels)]] if len(classes) == 2 else classes
    bins = np.linspace(0.0, 1.0, CALIBRATION_BINS + 1)
    curves = []
    for label in targets:
        p = proba[:, classes.index(label)]
        hit = np.asarray(y == label)
        fraction, mean_predicted = calibration_curve(hit, p, n_bins=CALIBRATION_BINS, strategy="uniform")
        counts = np.bincount(np.searchsorted(bins[1:-1], p), minlength=CALIBRATION_BINS)
        curves.append({
            "label": label,
            "mean_predicted": _clean(mean_predicted),
            "fraction_positive": _clean(fraction),
            "count": _clean(counts[counts > 0]),
        })
    return {"strategy": "uniform", "n_bins": CALIBRATION_BINS, "curves": curves}


def _try(fn):
    try:
        return fn()
    except ValueError:  # e.g. a holdout missing a class, a label the model never saw
        return None


def classification_metrics(pipeline, X, y, labels: list) -> tuple[dict, np.ndarray]:
    """Holdout metrics of a classifier, and its predicted labels (the argmax, as served)."""
    proba = pipeline.predict_proba(X)
    classes = pipeline.classes_
    predicted = classes[proba.argmax(axis=1)]
    out = {
        "accuracy": float(skm.accuracy_score(y, predicted)),
        "f1_macro": float(skm.f1_score(y, predicted, average="macro")),
        "log_loss": _try(lambda: float(skm.log_loss(y, proba, labels=classes))),
    }
    if len(classes) == 2:
        out["roc_auc"] = _try(lambda: float(skm.roc_auc_score(y == classes[1], proba[:, 1])))
        out["brier"] = _try(lambda: float(skm.brier_score_loss(y == classes[1], proba[:, 1])))
    else:
        out["roc_auc"] = _try(lambda: float(skm.roc_auc_score(y, proba, multi_class="ovr", labels=classes)))
    out["calibration"] = _try(lambda: _calibration(y, proba, classes, labels))
    return _clean(out), predicted


def regression_metrics(pipeline, X, y, output_spec: dict) -> dict:
    """Holdout metrics of a regressor, on its answers as served (clipped to the output's
    minimum and maximum)."""
    predicted = pipeline.predict(X).astype(np.float64)
    predicted = np.clip(predicted, output_spec.get("minimum", -np.inf), output_spec.get("maximum", np.inf))
    return _clean({
        "rmse": float(np.sqrt(skm.mean_squared_error(y, predicted))),
        "mae": float(skm.mean_absolute_error(y, predicted)),
        "r2": _try(lambda: float(skm.r2_score(y, predicted))),
    })


def _evaluate(predictor, pipeline, X, y):
    if predictor.is_classification:
        return classification_metrics(pipeline, X, y, predictor.output_spec.get("labels") or [])
    return regression_metrics(pipeline, X, y, predictor.output_spec), None


def _champion_scored(predictor, X_test, y_test, holdout_ids) -> dict:
    """The current champion on this run's holdout: {} when there is none; {"version",
    "skipped"} when it cannot be compared (another schema version, an artifact that does
    not load)."""
    from . import serving

    champion = serving.champion_get(predictor)
    if champion is None:
        logger.info("no champion to compare with")
        return {}
    if champion.schema_version != predictor.schema_version:
        note = f"champion v{champion.version} has schema version {champion.schema_version}, this run {predictor.schema_version}"
        logger.info("not scoring the champion: %s", note)
        return {"version": champion.version, "skipped": note}
    try:
        pipeline = artifact_load(name=champion.artifact.name, sha256=champion.artifact_sha256)
        metrics, _ = _evaluate(predictor, pipeline, X_test, y_test)
    except Exception as exc:
        logger.warning("could not score champion v%s on the holdout: %s", champion.version, exc)
        return {"version": champion.version, "skipped": f"{type(exc).__name__}: {exc}"}
    # Labels of this holdout the champion was trained on make its score optimistic.
    trained = (
        TrainingRun.objects.filter(model_version__pk=champion.pk)
        .values_list("dataset__label_ids", "dataset__holdout_label_ids")
        .first()
    )
    seen = None
    if trained and trained[0] is not None and trained[1] is not None:
        seen = len(set(holdout_ids) & (set(trained[0]) - set(trained[1])))
    logger.info("champion v%s on this holdout: %s", champion.version, {k: v for k, v in metrics.items() if k != "calibration"})
    return {**metrics, "version": champion.version, "holdout_labels_in_champion_training": seen}


def _fairness(predictor, inputs_test, y_test, predicted) -> dict:
    attribute = predictor.sensitive_attribute
    if not attribute:
        return {}
    if not predictor.is_classification:
        logger.info("fairness by %s skipped: it is measured for labels, and this predictor outputs numbers", attribute)
        return {}
    if attribute not in predictor.schema:
        logger.warning("fairness skipped: sensitive attribute %r is not an input field", attribute)
        return {}
    from .fairness import fairness_report

    report = fairness_report(
        attribute=attribute,
        favourable=predictor.output_spec["labels"][0],
        y_true=y_test,
        y_pred=predicted,
        groups=[row.get(attribute) for row in inputs_test],
        min_group_size=settings.OZ_FAIRNESS_MIN_GROUP_SIZE,
    )
    logger.info(
        "fairness by %s: demographic parity difference %s, equalized odds difference %s",
        attribute, report["demographic_parity_difference"], report["equalized_odds_difference"],
    )
    return _clean(report)


# -- executing ----------------------------------------------------------------------------


def training_run_execute(*, run_id: int) -> TrainingRun | None:
    """Run a queued training run. Idempotent: only a `queued` run is started, so a duplicate
    message does nothing. A failure marks the run failed with its error; the version row and
    its artifact are written only at the end, together with the run's success."""
    now = timezone.now()
    worker = f"{socket.gethostname()}:{os.getpid()}"
    started = TrainingRun.objects.filter(pk=run_id, status=TrainingRun.Status.QUEUED).update(
        status=TrainingRun.Status.RUNNING, started_at=now, heartbeat_at=now, worker=worker
    )
    if not started:
        return None
    run = TrainingRun.objects.select_related("predictor").get(pk=run_id)
    log = _RunLog(threading.get_ident())
    root = logging.getLogger()
    root.addHandler(log)
    # The run's own INFO lines are kept in its log even when the console shows only warnings.
    level = logger.level
    if not logger.isEnabledFor(logging.INFO):
        logger.setLevel(logging.INFO)
    heartbeat = _Heartbeat(run_id, log)
    heartbeat.start()
    clock = time.monotonic()
    stored: list[str] = []
    version = None
    try:
        with _PeakMemory() as memory, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                version = _execute(run, heartbeat, memory, stored, caught)
            finally:
                _log_warnings(caught)
    except Exception as exc:  # any failure is the run's result, not the worker's crash
        for name in stored:  # an artifact whose version was never committed
            try:
                default_storage.delete(name)
            except OSError:
                logger.warning("could not delete %s", name, exc_info=True)
        if isinstance(exc, RunLost):
            logger.warning("training run %s: %s", run_id, exc)
        else:
            logger.warning("training run %s failed: %s", run_id, exc)
            run.status = TrainingRun.Status.FAILED
            run.error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            if not isinstance(exc, NotEnoughLabels):
                run.error += "\n\n" + traceback.format_exc()
            run.finished_at = timezone.now()
            run.duration_seconds = time.monotonic() - clock
            run.peak_memory_bytes = memory.peak if "memory" in locals() else None
            run.logs = log.text()
            TrainingRun.objects.filter(pk=run_id, status=TrainingRun.Status.RUNNING).update(
                status=run.status, error=run.error, finished_at=run.finished_at, duration_seconds=run.duration_seconds,
                peak_memory_bytes=run.peak_memory_bytes, logs=run.logs, params=run.params, metrics=run.metrics,
                dataset=run.dataset, environment=run.environment, estimator=run.estimator,
                champion_metrics=run.champion_metrics, fairness=run.fairness,
            )
        run.refresh_from_db()
    finally:
        heartbeat.stop()
        root.removeHandler(log)
        logger.setLevel(level)
    if version is not None:
        _gates_apply(run, version, log)
    return run


def _log_warnings(caught: list) -> None:
    """Warnings raised so far (ConvergenceWarning and the like), once each with a count."""
    seen = Counter(f"{w.category.__name__}: {w.message}" for w in caught)
    del caught[:]
    for message, count in seen.items():
        logger.warning("%s%s", message, f" (x{count})" if count > 1 else "")


def _execute(run: TrainingRun, heartbeat: _Heartbeat, memory: _PeakMemory, stored: list[str], caught: list) -> ModelVersion:
    predictor = run.predictor
    clock = time.monotonic()
    config = training_settings(predictor)
    kind = predictor.output_spec["type"]
    classification = predictor.is_classification
    logger.info("training run %s for %s (%s) on %s", run.pk, predictor.slug, run.trigger, run.worker)
    run.environment = _environment()

    ids, inputs, targets, created, dropped = _dataset(predictor)
    logger.info("read %s current labels (%s left out: not valid under schema version %s)", len(ids), dropped, predictor.schema_version)
    y = np.asarray(targets, dtype=object if classification else np.float64)
    counts = Counter(targets) if classification else None
    # Recorded before anything can refuse it: the label set this run saw (the label-threshold
    # trigger counts new labels from here, whether the run succeeds or not).
    run.dataset = {
        "label_ids": ids,
        "label_ids_sha256": hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest(),
        "n_labels": len(ids),
        "max_label_id": max(ids, default=0),
        "n_dropped_not_matching_schema": dropped,
        "class_counts": dict(counts) if counts else None,
        "schema_version": predictor.schema_version,
    }
    TrainingRun.objects.filter(pk=run.pk).update(dataset=run.dataset, environment=run.environment)
    minimum = settings.OZ_MIN_TRAINING_LABELS
    if len(ids) < minimum:
        raise NotEnoughLabels(f"{len(ids)} usable labels; at least {minimum} are needed")
    if classification and (len(counts) < 2 or min(counts.values()) < 2):
        raise NotEnoughLabels(f"need at least two labels of each of two classes; have {dict(counts)}")
    split = config["split"] if config["split"] == "time" or classification else "random"
    train_idx, test_idx = _split(
        len(ids), y, created, classification=classification, split=split,
        fraction=config["holdout_fraction"], seed=config["seed"],
    )
    holdout_ids = [ids[i] for i in test_idx]
    run.dataset.update({"holdout_label_ids": holdout_ids, "n_train": len(train_idx), "n_holdout": len(test_idx)})
    if split == "time":
        run.dataset["holdout_created_from"] = min(created[i] for i in test_idx).isoformat()
        run.dataset["train_created_until"] = max(created[i] for i in train_idx).isoformat()
    logger.info("split %s: %s training, %s holdout (fraction %s, seed %s)", split, len(train_idx), len(test_idx),
                config["holdout_fraction"], config["seed"])

    X = feature_rows(predictor.schema, inputs)
    X_train, X_test, y_train, y_test = X[train_idx], X[test_idx], y[train_idx], y[test_idx]
    if classification and len(set(y_train)) < 2:
        raise NotEnoughLabels(f"the training part has only one class ({set(y_train)}); use a larger holdout or more labels")
    estimator = config["estimator"]
    if estimator not in ESTIMATORS.get(kind, {}):
        raise ValueError(f"estimator {estimator!r} is not available for {kind} outputs; one of: {', '.join(ESTIMATORS[kind])}")
    text_fields = usable_text_fields(predictor.schema, X_train)
    params = dict(config["params"])
    grid = None
    if config["grid"]:
        logger.info("grid search over %s (%s-fold cross-validation on the training part)", config["grid"], CV_FOLDS)
        grid = _grid_search(predictor, config, X_train, y_train, text_fields, classification)
        params.update(grid["best_params"])
        logger.info("grid search chose %s (%s %s)", grid["best_params"], grid["scoring"], grid["best_score"])
    logger.info("fitting %s with %s", estimator, params)
    pipeline = pipeline_build(predictor.schema, predictor.output_spec, estimator=estimator, params=params, text_fields=text_fields)
    pipeline.fit(X_train, y_train)
    run.estimator = estimator
    run.params = _clean({
        "estimator": estimator,
        "params": config["params"],
        "grid": config["grid"] or None,
        "grid_search": grid,
        "chosen_params": params,
        "hyperparameters": _effective_hyperparameters(pipeline),
        "split": split,
        "holdout_fraction": config["holdout_fraction"],
        "seed": config["seed"],
        "text_fields": text_fields,
    })

    metrics, predicted = _evaluate(predictor, pipeline, X_test, y_test)
    metrics.update({"n_train": len(y_train), "n_holdout": len(y_test)})
    run.metrics = metrics
    logger.info("holdout metrics: %s", {k: v for k, v in metrics.items() if k != "calibration"})
    run.champion_metrics = _champion_scored(predictor, X_test, y_test, holdout_ids)
    run.fairness = _fairness(predictor, [inputs[i] for i in test_idx], y_test, predicted)
    onnx_bytes, onnx_gate = _onnx_export(predictor, pipeline, X_test)
    # What the drift check compares live traffic with: the training part's inputs and targets.
    reference = reference_stats_for_training(predictor, [inputs[i] for i in train_idx], [targets[i] for i in train_idx])
    _log_warnings(caught)
    if heartbeat.lost:
        raise RunLost("the run was failed by the reaper while it worked; its result is discarded")

    with transaction.atomic():
        # Only a run that is still ours registers a version (not one the reaper failed).
        if not TrainingRun.objects.select_for_update().filter(pk=run.pk, status=TrainingRun.Status.RUNNING).exists():
            raise RunLost("the run is no longer running (the reaper failed it); its result is discarded")
        predictor_locked = Predictor.objects.select_for_update().get(pk=predictor.pk)
        number = (ModelVersion.objects.filter(predictor=predictor_locked).aggregate(n=Max("version"))["n"] or 0) + 1
        name, digest = artifact_save(pipeline=pipeline, name=f"{run_artifact_folder(run)}/v{number}.skops")
        stored.append(name)
        onnx_name = onnx_digest = ""
        if onnx_bytes is not None:
            from .artifacts import onnx_artifact_save

            onnx_name, onnx_digest = onnx_artifact_save(data=onnx_bytes, name=f"{run_artifact_folder(run)}/v{number}.onnx")
            stored.append(onnx_name)
        run.peak_memory_bytes = memory.read()
        logger.info(
            "registered v%s; peak memory %s bytes (%s), %s bytes resident when the run began",
            number, run.peak_memory_bytes, "the worker's resident set at its highest during the run" if memory.reset
            else "the worker's lifetime peak resident set", memory.start,
        )
        run.status = TrainingRun.Status.SUCCEEDED
        run.finished_at = timezone.now()
        run.duration_seconds = time.monotonic() - clock
        run.logs = heartbeat.log.text()
        run.heartbeat_at = timezone.now()
        run.save()
        version = ModelVersion.objects.create(
            predictor=predictor_locked,
            version=number,
            run=run,
            schema_version=predictor.schema_version,
            artifact=name,
            artifact_sha256=digest,
            onnx_artifact=onnx_name,
            onnx_sha256=onnx_digest,
            serving_format="onnx" if onnx_name else "skops",
            metrics=metrics,
            gates=[onnx_gate] if onnx_gate else [],
            reference_stats=reference,
        )
    return version


def _onnx_export(predictor, pipeline, X_test) -> tuple[bytes | None, dict | None]:
    """The ONNX export of the pipeline when it converts and agrees with it on the holdout
    (models_registry.onnx), and its informational `onnx_parity` gate result."""
    try:
        from .onnx import onnx_evaluate
    except ImportError:
        return None, None
    try:
        data, gate = onnx_evaluate(pipeline, predictor.schema, predictor.output_spec, X_test)
    except Exception as exc:  # no export: the skops artifact is served
        logger.warning("ONNX export failed: %s: %s", type(exc).__name__, exc)
        return None, {"gate": "onnx_parity", "passed": False, "value": None, "threshold": None, "informational": True,
                      "detail": f"serving skops; the export failed: {type(exc).__name__}: {str(exc)[:300]}"}
    logger.info("ONNX: %s", gate.get("detail"))
    return data, _clean(gate)


def _max_rss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


def _gates_apply(run: TrainingRun, version: ModelVersion, log: _RunLog) -> None:
    """The predictor's gates move the new version's stage (after its row is committed)."""
    try:
        from .gates import version_gates_apply
    except ImportError:
        return
    try:
        version = version_gates_apply(version=version)
        line = f"gates: passed={version.gates_passed}, stage {version.stage}"
    except Exception as exc:  # the run succeeded; a gate problem is reported, not fatal
        logger.exception("gates of %s could not be applied", version)
        line = f"gates could not be applied: {type(exc).__name__}: {exc}"
    run.logs = "\n".join(filter(None, [run.logs, f"{timezone.now().isoformat()} INFO {__name__} {line}"]))
    TrainingRun.objects.filter(pk=run.pk).update(logs=run.logs)
