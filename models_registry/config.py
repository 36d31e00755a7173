"""The `training:`, `gates:` and `auto_promote:` blocks of a predictor definition: what may
be written there, checked field by field when the YAML is loaded, so a typo in a gate can
never silently switch it off.

    training:
      estimator: logistic_regression   # from ESTIMATOR_NAMES for the output type
      params: {C: 0.5}                 # hyperparameters of that estimator
      grid: {C: [0.1, 1, 10]}          # optional small grid search (at most MAX_GRID_SIZE fits)
      split: stratified                # or `time`: the newest labels are the holdout
      holdout_fraction: 0.25
      retrain_after_labels: 200        # train again after this many new labels (absent: never)
      retrain_every_hours: 24          # and on a schedule, when new labels came in (absent: never)
      seed: 42                         # the holdout split, CV folds and seeded estimators
    gates:
      min_labels: 100
      min_metrics: {accuracy: 0.8}     # higher is better
      max_metrics: {log_loss: 0.5}     # lower is better
      beat_champion: {metric: f1_macro, margin: 0.0}
      max_fairness_gaps: {demographic_parity_difference: 0.1, equalized_odds_difference: 0.2}
      min_shadow_agreement: {rate: 0.85, min_requests: 50}   # number outputs add `tolerance: T`
    auto_promote: true
"""
from __future__ import annotations

import math
from itertools import product

from gateway.schema import FieldError

# The allow-list of estimators by output type; the first is the default.
ESTIMATOR_NAMES = {
    "label": ("logistic_regression", "linear_svm", "random_forest", "hist_gradient_boosting"),
    "number": ("ridge", "random_forest", "gradient_boosting"),
}
METRICS = {
    "label": ("accuracy", "f1_macro", "roc_auc", "log_loss", "brier"),
    "number": ("rmse", "mae", "r2"),
}
FAIRNESS_GAPS = ("demographic_parity_difference", "equalized_odds_difference")
SPLITS = ("stratified", "time")
MAX_GRID_SIZE = 24
DEFAULT_HOLDOUT_FRACTION = 0.25
DEFAULT_SEED = 42
CV_FOLDS = 3
TRAINING_KEYS = (
    "estimator", "params", "grid", "split", "holdout_fraction", "retrain_after_labels", "retrain_every_hours", "seed",
)
GATE_KEYS = ("min_labels", "min_metrics", "max_metrics", "beat_champion", "max_fairness_gaps", "min_shadow_agreement")


def training_settings(predictor) -> dict:
    """The predictor's `training:` block with every default filled in (loading checked it)."""
    block = dict(predictor.training or {})
    kind = predictor.output_spec.get("type")
    return {
        "estimator": block.get("estimator") or ESTIMATOR_NAMES[kind][0],
        "params": dict(block.get("params") or {}),
        "grid": {k: list(v) for k, v in (block.get("grid") or {}).items()},
        "split": block.get("split", "stratified"),
        "holdout_fraction": float(block.get("holdout_fraction", DEFAULT_HOLDOUT_FRACTION)),
        "retrain_after_labels": block.get("retrain_after_labels"),
        "retrain_every_hours": block.get("retrain_every_hours"),
        "seed": block.get("seed", DEFAULT_SEED),
    }


def _number(value) -> bool:
    """A finite int or float (a NaN threshold would make its gate pass or fail at random)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return isinstance(value, int) or math.isfinite(value)  # ints are finite, however large


def _whole(value, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _scalar(value) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def definition_errors(data: dict) -> list[FieldError]:
    """Problems with the training, gates and auto_promote blocks of a definition."""
    errors: list[FieldError] = []
    output = data.get("output") if isinstance(data.get("output"), dict) else {}
    kind = output.get("type") if isinstance(output.get("type"), str) and output["type"] in ESTIMATOR_NAMES else None
    _training_errors(data.get("training", {}), kind, errors)
    _gate_errors(data.get("gates", {}), kind, bool(data.get("sensitive_attribute")), errors)
    if "auto_promote" in data and not isinstance(data["auto_promote"], bool):
        errors.append(FieldError("auto_promote", "must be true or false"))
    return errors


def _training_errors(training, kind: str | None, errors: list[FieldError]) -> None:
    if not isinstance(training, dict):
        errors.append(FieldError("training", "must be a mapping"))
        return
    for key in training:
        if key not in TRAINING_KEYS:
            errors.append(FieldError(f"training.{key}", f"unknown key; one of: {', '.join(TRAINING_KEYS)}"))
    if "estimator" in training and kind and training["estimator"] not in ESTIMATOR_NAMES[kind]:
        errors.append(FieldError("training.estimator", f"must be one of: {', '.join(ESTIMATOR_NAMES[kind])}"))
    params = training.get("params", {})
    if not isinstance(params, dict) or not all(isinstance(k, str) and _scalar(v) for k, v in params.items()):
        errors.append(FieldError("training.params", "must map hyperparameter names to numbers, strings, booleans or null"))
    grid = training.get("grid", {})
    if not isinstance(grid, dict) or not all(
        isinstance(k, str) and isinstance(v, list) and v and all(_scalar(x) for x in v) for k, v in grid.items()
    ):
        errors.append(FieldError("training.grid", "must map hyperparameter names to non-empty lists of values"))
    elif grid and len(list(product(*grid.values()))) > MAX_GRID_SIZE:
        errors.append(FieldError("training.grid", f"at most {MAX_GRID_SIZE} combinations"))
    if "split" in training and training["split"] not in SPLITS:
        errors.append(FieldError("training.split", f"must be one of: {', '.join(SPLITS)}"))
    if "holdout_fraction" in training and not (
        _number(training["holdout_fraction"]) and 0.05 <= training["holdout_fraction"] <= 0.5
    ):
        errors.append(FieldError("training.holdout_fraction", "must be a number from 0.05 to 0.5"))
    if training.get("retrain_after_labels") is not None and not _whole(training["retrain_after_labels"], 1, 10_000_000):
        errors.append(FieldError("training.retrain_after_labels", "must be a whole number of at least 1, or null"))
    every = training.get("retrain_every_hours")
    if every is not None and not (_number(every) and 0.25 <= every <= 24 * 366):
        errors.append(FieldError("training.retrain_every_hours", "must be a number of hours from 0.25 to 8784, or null"))
    if "seed" in training and not _whole(training["seed"], 0, 2**32 - 1):
        errors.append(FieldError("training.seed", "must be a whole number from 0 to 4294967295"))
    grid = training.get("grid", {})
    params = training.get("params", {})
    if isinstance(grid, dict) and isinstance(params, dict):
        for key in sorted(set(grid) & set(params), key=str):  # YAML keys need not all be strings
            errors.append(FieldError(f"training.grid.{key}", "is also fixed in training.params; name it in one place"))
    if kind and not errors:
        _hyperparameter_errors(kind, training.get("estimator") or ESTIMATOR_NAMES[kind][0], params, grid, errors)


def _hyperparameter_errors(kind: str, estimator: str, params: dict, grid: dict, errors: list[FieldError]) -> None:
    """Names and values the estimator itself refuses, found when the definition is loaded
    rather than when a training run fails hours later."""
    from .features import estimator_params_errors  # scikit-learn: loaded only when a definition is checked

    problems = estimator_params_errors(kind, estimator, params)
    for message in problems:
        key, _, rest = message.partition(": ")
        field = f"training.params.{key}" if key in params else "training.params"
        errors.append(FieldError(field, rest if key in params else message))
    if problems:
        return
    for key, values in grid.items():
        for value in values:
            problems = estimator_params_errors(kind, estimator, {**params, key: value})
            if problems:
                errors.append(FieldError(f"training.grid.{key}", problems[0]))
                break


def _gate_errors(gates, kind: str | None, has_sensitive: bool, errors: list[FieldError]) -> None:
    if not isinstance(gates, dict):
        errors.append(FieldError("gates", "must be a mapping"))
        return
    for key in gates:
        if key not in GATE_KEYS:
            errors.append(FieldError(f"gates.{key}", f"unknown gate; one of: {', '.join(GATE_KEYS)}"))
    if "min_labels" in gates and not _whole(gates["min_labels"], 1, 100_000_000):
        errors.append(FieldError("gates.min_labels", "must be a whole number of at least 1"))
    metric_names = METRICS[kind] if kind else ()
    for key in ("min_metrics", "max_metrics"):
        if key not in gates:
            continue
        block = gates[key]
        if not isinstance(block, dict):
            errors.append(FieldError(f"gates.{key}", "must map metric names to numbers"))
            continue
        for name, value in block.items():
            if kind and name not in metric_names:
                errors.append(FieldError(f"gates.{key}.{name}", f"unknown metric; one of: {', '.join(metric_names)}"))
            elif not _number(value):
                errors.append(FieldError(f"gates.{key}.{name}", "must be a number"))
    if "beat_champion" in gates:
        block = gates["beat_champion"]
        if not isinstance(block, dict) or set(block) - {"metric", "margin"} or "metric" not in block:
            errors.append(FieldError("gates.beat_champion", "must be {metric: NAME, margin: NUMBER}"))
        else:
            if kind and block["metric"] not in metric_names:
                errors.append(FieldError("gates.beat_champion.metric", f"must be one of: {', '.join(metric_names)}"))
            if "margin" in block and not _number(block["margin"]):
                errors.append(FieldError("gates.beat_champion.margin", "must be a number"))
    if "max_fairness_gaps" in gates:
        block = gates["max_fairness_gaps"]
        if not has_sensitive:
            errors.append(FieldError("gates.max_fairness_gaps", "needs a sensitive_attribute to measure"))
        if not isinstance(block, dict):
            errors.append(FieldError("gates.max_fairness_gaps", "must map gap names to numbers"))
        else:
            for name, value in block.items():
                if name not in FAIRNESS_GAPS:
                    errors.append(FieldError(f"gates.max_fairness_gaps.{name}", f"one of: {', '.join(FAIRNESS_GAPS)}"))
                elif not (_number(value) and 0 <= value <= 1):
                    errors.append(FieldError(f"gates.max_fairness_gaps.{name}", "must be a number from 0 to 1"))
    if "min_shadow_agreement" in gates:
        block = gates["min_shadow_agreement"]
        keys = {"rate", "min_requests", "tolerance"} if kind == "number" else {"rate", "min_requests"}
        if not isinstance(block, dict) or set(block) != keys:
            shape = "{rate: 0..1, min_requests: N, tolerance: T}" if kind == "number" else "{rate: 0..1, min_requests: N}"
            why = " (a number agrees with the human's when within `tolerance`)" if kind == "number" else ""
            errors.append(FieldError("gates.min_shadow_agreement", f"must be {shape}{why}"))
        else:
            if kind == "number" and not (_number(block["tolerance"]) and 0 <= block["tolerance"] < float("inf")):
                errors.append(FieldError("gates.min_shadow_agreement.tolerance", "must be a number of at least 0"))
            if not (_number(block["rate"]) and 0 <= block["rate"] <= 1):
                errors.append(FieldError("gates.min_shadow_agreement.rate", "must be a number from 0 to 1"))
            if not _whole(block["min_requests"], 1, 10_000_000):
                errors.append(FieldError("gates.min_shadow_agreement.min_requests", "must be a whole number of at least 1"))
