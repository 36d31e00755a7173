"""Fairness of a classifier on a training run's holdout, by group of the predictor's
`sensitive_attribute`, measured with fairlearn.

The predictor's first label (output_spec["labels"][0]) is the favourable outcome, the
positive class throughout: the selection rate is the share of a group predicted it, a
false positive is someone predicted it who should not have been, a false negative someone
denied it who should have had it. For more than two labels it is that label against the
rest. The two gaps are the largest differences between any two groups (fairlearn's
`between_groups`): demographic parity (selection rates) and equalized odds (the larger of
the true- and false-positive-rate gaps).

A rate over a handful of rows says little, so the gaps are taken over the groups with at
least `min_group_size` holdout rows (OZ_FAIRNESS_MIN_GROUP_SIZE); smaller groups are still
reported, marked `"in_gaps": false`. With fewer than two such groups the gaps are null
(not measured), and a fairness gate on them fails rather than passing blind."""
from __future__ import annotations

import math
import warnings

import numpy as np
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    equalized_odds_difference,
    false_negative_rate,
    false_positive_rate,
    selection_rate,
)
from sklearn.metrics import accuracy_score

MISSING_GROUP = "(missing)"


def group_of(value) -> str:
    """The group an input's sensitive value puts it in (missing values form their own)."""
    if value is None or value == "":
        return MISSING_GROUP
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _finite(value):
    value = float(value)
    return value if math.isfinite(value) else None


def fairness_report(*, attribute: str, favourable, y_true, y_pred, groups, min_group_size: int = 1) -> dict:
    """By-group rates and the two gaps, JSON-ready (an undefined rate, e.g. a false
    positive rate in a group with no negatives, is null)."""
    y_true_fav = (np.asarray(y_true, dtype=object) == favourable).astype(int)
    y_pred_fav = (np.asarray(y_pred, dtype=object) == favourable).astype(int)
    groups = np.asarray([group_of(g) for g in groups], dtype=object)
    with warnings.catch_warnings():
        # A group without negatives (or positives) has an undefined rate: null, not a warning.
        warnings.simplefilter("ignore")
        frame = MetricFrame(
            metrics={
                "selection_rate": selection_rate,
                "accuracy": accuracy_score,
                "false_positive_rate": lambda t, p: false_positive_rate(t, p, pos_label=1),
                "false_negative_rate": lambda t, p: false_negative_rate(t, p, pos_label=1),
                "count": lambda t, p: len(t),
            },
            y_true=y_true_fav,
            y_pred=y_pred_fav,
            sensitive_features=groups,
        )
        sizes = {g: int((groups == g).sum()) for g in set(groups)}
        counted = np.asarray([sizes[g] >= min_group_size for g in groups], dtype=bool)
        if len({g for g, n in sizes.items() if n >= min_group_size}) >= 2:
            dpd = demographic_parity_difference(y_true_fav[counted], y_pred_fav[counted], sensitive_features=groups[counted])
            eod = equalized_odds_difference(y_true_fav[counted], y_pred_fav[counted], sensitive_features=groups[counted])
        else:
            dpd = eod = float("nan")
    by_group = {}
    for group, row in frame.by_group.iterrows():
        by_group[str(group)] = {
            "count": int(row["count"]),
            "selection_rate": _finite(row["selection_rate"]),
            "accuracy": _finite(row["accuracy"]),
            "false_positive_rate": _finite(row["false_positive_rate"]),
            "false_negative_rate": _finite(row["false_negative_rate"]),
            "in_gaps": int(row["count"]) >= min_group_size,
        }
    return {
        "attribute": attribute,
        "favourable": favourable,
        "n_holdout": len(y_true_fav),
        "min_group_size": min_group_size,
        "by_group": by_group,
        "demographic_parity_difference": _finite(dpd),
        "equalized_odds_difference": _finite(eod),
    }
