"""Drift and skew: how far live traffic has moved from what the champion was trained on,
and how the live answers fall by group of the sensitive attribute.

Reference statistics (`reference_stats`, stored on ModelVersion.reference_stats when the
version is created) describe the TRAINING part of the run's labels (not the holdout), one
entry per input field:

- number and integer: `{"type": "numeric", "bins": [c1, ..., ck], "counts": [k + 1 counts],
  "n", "missing", "min", "max", "mean", "quantiles": {"p01": .., "p99": ..}, "sample": [...]}`.
  `bins` are the cut points: the deduplicated deciles of the training values. They make
  k + 1 open-ended bins, (-inf, c1), [c1, c2), ..., [ck, +inf), so a live value outside the
  training range still lands in a bin (the outer one) and pushes PSI up. `sample` is a
  seeded random subsample of at most REFERENCE_SAMPLE training values, kept for the KS test.
- boolean and category: `{"type": "categorical", "counts": {"true": n, ...}, "n", "missing"}`,
  every choice present (0 when never seen) and missing values counted under `__missing__`.
- text: the length in characters, as a numeric entry with `"of": "length"` (the words
  themselves are not compared: a length histogram is cheap and catches truncation, empty
  text and a change of what is sent).
- `"@output"` (not a field: "@" cannot start a field name): the training targets, as a
  categorical entry for labels, a numeric one for numbers.

The check (`drift_check`) compares a window of live inputs (Prediction.input of the
predictor, schema version of the champion, created in [now - window, now)) with the
champion's reference, field by field:

- PSI over the reference bins (categories for categorical fields) plus a missing bin:
  sum((live - ref) * ln(live / ref)) over proportions, each floored at PSI_FLOOR so an
  empty bin does not make it infinite. PSI < 0.1 is usually read as stable, 0.1-0.2 as a
  moderate shift, > 0.2 as a significant one (OZ_DRIFT_PSI_ALERT, default 0.2).
- A test: numbers, the two-sample Kolmogorov-Smirnov test (scipy.stats.ks_2samp) of the
  live values against the stored sample of real training values (not a sample rebuilt from
  bins); for ties (integers) the test is conservative. A reference without a sample falls
  back to the chi-squared test below on the binned counts. Categories (and booleans): a
  chi-squared test of homogeneity (scipy.stats.chi2_contingency) on the 2 x k table of
  reference and live counts: both sides are samples, so a goodness-of-fit test taking the
  reference proportions as exact (chisquare) would overstate the evidence.
- `drifted`: PSI above OZ_DRIFT_PSI_ALERT with at least OZ_DRIFT_MIN_ROWS live rows. The
  report's `alert` is any field drifted. p-values are reported as evidence, not used for
  the alert: over thousands of rows a test flags shifts too small to matter, and PSI is an
  effect size.

Cost. At most OZ_DRIFT_MAX_ROWS rows of the window are read (default 20000): the window's
rows with the smallest ids. Prediction ids are random UUIDs (uuid4), so that is a uniform
random sample of the window, spread over all of it (not just its last minutes) and the same
sample for the same window when checked again. Only the fields compared are read
(jsonb `->` per field in SQL, the length of text fields computed in SQL), in chunks. The
output mix of labels is counted in SQL over the whole window.

Retention: each run of the periodic check ends by deleting reports older than
OZ_DRIFT_REPORT_KEEP_DAYS, keeping each predictor's newest (`drift_reports_prune`).

Also here: `production_fairness` (outcome, appeal and overturn rates by group of the
sensitive attribute over live answered traffic) and `output_mix_series` (per day, per
source, answers per label) for dashboards."""
from __future__ import annotations

import logging
import math
from collections import Counter
from datetime import datetime, time, timedelta

import numpy as np
from django.conf import settings
from django.db.models import Avg, Count, FloatField, Max, Q
from django.db.models.fields.json import KeyTextTransform, KeyTransform
from django.db.models.functions import Cast, Length, TruncDate
from django.utils import timezone

from gateway.models import Prediction, PredictionStatus, Predictor

from .features import MISSING_CATEGORY
from .jsonsafe import json_ready
from .models import DriftReport, ModelVersion, Stage

logger = logging.getLogger(__name__)

NUMERIC = "numeric"
CATEGORICAL = "categorical"
OUTPUT_KEY = "@output"
N_BINS = 10
REFERENCE_SAMPLE = 1000
PSI_FLOOR = 1e-4
SEED = 0
QUANTILES = {"p01": 0.01, "p05": 0.05, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p95": 0.95, "p99": 0.99}
ANSWERED = (PredictionStatus.ANSWERED, PredictionStatus.REVISED)
PRUNE_BATCH = 5000


def _setting(name: str, default):
    return getattr(settings, name, default)


def psi_alert() -> float:
    return float(_setting("OZ_DRIFT_PSI_ALERT", 0.2))


def min_rows() -> int:
    return int(_setting("OZ_DRIFT_MIN_ROWS", 100))


def max_rows() -> int:
    return int(_setting("OZ_DRIFT_MAX_ROWS", 20000))


# -- reference statistics --------------------------------------------------------------------


def _finite(values) -> np.ndarray:
    out = []
    for v in values:
        if v is None or isinstance(v, bool):
            continue
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            out.append(f)
    return np.asarray(out, dtype=np.float64)


def _category_key(kind: str, value) -> str:
    if value is None:
        return MISSING_CATEGORY
    if kind == "boolean":
        if isinstance(value, str):  # a value read as text from SQL
            return "true" if value.lower() in ("true", "1") else "false"
        return "true" if value else "false"
    return str(value)


def _summary(present: np.ndarray) -> dict:
    if present.size == 0:
        return {"min": None, "max": None, "mean": None, "quantiles": {}}
    return {
        "min": float(present.min()),
        "max": float(present.max()),
        "mean": float(present.mean()),
        "quantiles": {k: float(np.quantile(present, q)) for k, q in QUANTILES.items()},
    }


def _numeric_reference(values: list, **extra) -> dict:
    present = _finite(values)
    missing = len(values) - int(present.size)
    if present.size:
        cuts = np.unique(np.quantile(present, np.linspace(0, 1, N_BINS + 1)[1:-1]))
        counts = np.bincount(np.searchsorted(cuts, present, side="right"), minlength=cuts.size + 1)
        rng = np.random.default_rng(SEED)
        sample = present if present.size <= REFERENCE_SAMPLE else rng.choice(present, REFERENCE_SAMPLE, replace=False)
        bins, counts_list, sample_list = [float(c) for c in cuts], [int(c) for c in counts], sorted(float(v) for v in sample)
    else:
        bins, counts_list, sample_list = [], [], []
    return {
        "type": NUMERIC, **extra, "bins": bins, "counts": counts_list, "n": len(values), "missing": missing,
        **_summary(present), "sample": sample_list,
    }


def _categorical_reference(keys: list[str], choices: list[str]) -> dict:
    counts = Counter(keys)
    full = {c: int(counts.get(c, 0)) for c in [*choices, MISSING_CATEGORY]}
    full.update({k: int(v) for k, v in counts.items() if k not in full})
    return {"type": CATEGORICAL, "counts": full, "n": len(keys), "missing": full[MISSING_CATEGORY]}


def reference_stats(schema: dict, inputs: list[dict], *, output_spec: dict | None = None, targets: list | None = None) -> dict:
    """Reference statistics of training inputs (and, with `output_spec` and `targets`, of
    the training targets under "@output"). See the module docstring for the shapes."""
    out: dict[str, dict] = {}
    for name, spec in schema.items():
        kind = spec["type"]
        column = [row.get(name) for row in inputs]
        if kind in ("number", "integer"):
            out[name] = _numeric_reference(column, kind=kind)
        elif kind == "text":
            out[name] = _numeric_reference([None if v is None else len(str(v)) for v in column], kind=kind, of="length")
        elif kind == "boolean":
            out[name] = {**_categorical_reference([_category_key(kind, v) for v in column], ["true", "false"]), "kind": kind}
        else:
            choices = [str(c) for c in spec.get("choices", [])]
            out[name] = {**_categorical_reference([_category_key(kind, v) for v in column], choices), "kind": kind}
    if output_spec is not None and targets is not None:
        if output_spec.get("type") == "label":
            labels = [str(label) for label in output_spec.get("labels", [])]
            ref = _categorical_reference([_category_key("label", t) for t in targets], labels)
            if not ref["missing"]:  # targets are never missing; no empty bin for them
                ref["counts"].pop(MISSING_CATEGORY)
            out[OUTPUT_KEY] = {**ref, "kind": "label"}
        else:
            out[OUTPUT_KEY] = _numeric_reference(list(targets), kind="number")
    return out


def reference_stats_for_training(predictor: Predictor, inputs: list[dict], targets: list) -> dict:
    """What training stores on the new version: the reference of its training part. Never
    fails the run: a problem here leaves the version without a reference (the drift check
    then builds one from the run's label set)."""
    try:
        return reference_stats(predictor.schema, inputs, output_spec=predictor.output_spec, targets=targets)
    except Exception:
        logger.warning("reference statistics of %s could not be computed", predictor.slug, exc_info=True)
        return {}


def version_reference(version: ModelVersion) -> dict:
    """The version's reference statistics; for a version trained before they were kept,
    built now from its run's training labels (label set minus holdout) and saved."""
    if version.reference_stats:
        return version.reference_stats
    from review.models import Label

    dataset = version.run.dataset or {}
    holdout = set(dataset.get("holdout_label_ids") or [])
    ids = [i for i in dataset.get("label_ids") or [] if i not in holdout]
    if not ids:
        return {}
    inputs, targets = [], []
    chunk = int(_setting("OZ_TRAINING_LABEL_CHUNK", 2000))
    for start in range(0, len(ids), chunk):
        for data, target in Label.objects.filter(id__in=ids[start:start + chunk]).values_list("input", "target"):
            inputs.append(data or {})
            targets.append(target)
    stats_ = reference_stats_for_training(version.predictor, inputs, targets)
    if stats_:
        ModelVersion.objects.filter(pk=version.pk).update(reference_stats=stats_)
        version.reference_stats = stats_
    return stats_


# -- comparing -------------------------------------------------------------------------------


def psi(reference_counts, live_counts, floor: float = PSI_FLOOR) -> float | None:
    """Population stability index of two histograms over the same bins."""
    r = np.asarray(reference_counts, dtype=np.float64)
    m = np.asarray(live_counts, dtype=np.float64)
    if r.sum() <= 0 or m.sum() <= 0:
        return None
    p = np.maximum(r / r.sum(), floor)
    q = np.maximum(m / m.sum(), floor)
    return float(np.sum((q - p) * np.log(q / p)))


def _chi2(reference_counts, live_counts) -> tuple[float | None, float | None]:
    from scipy import stats

    table = np.asarray([reference_counts, live_counts], dtype=np.float64)
    if table[0].sum() <= 0 or table[1].sum() <= 0:
        return None, None
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:  # one category on both sides: nothing differs
        return 0.0, 1.0
    result = stats.chi2_contingency(table)
    return float(result.statistic), float(result.pvalue)


def _number(value):
    return None if value is None or not math.isfinite(value) else round(float(value), 6)


def compare_numeric(reference: dict, values: list) -> dict:
    from scipy import stats

    cuts = np.asarray(reference.get("bins") or [], dtype=np.float64)
    present = _finite(values)
    missing = len(values) - int(present.size)
    live = np.bincount(np.searchsorted(cuts, present, side="right"), minlength=cuts.size + 1) if present.size else np.zeros(cuts.size + 1)
    ref = list(reference.get("counts") or [0] * (cuts.size + 1))
    ref_all, live_all = [*ref, reference.get("missing", 0)], [*[int(c) for c in live], missing]
    sample = reference.get("sample") or []
    if sample and present.size:
        result = stats.ks_2samp(np.asarray(sample, dtype=np.float64), present)
        test, statistic, p_value = "ks", float(result.statistic), float(result.pvalue)
    else:
        test = "chi2"
        statistic, p_value = _chi2(ref_all, live_all)
    return {
        "psi": psi(ref_all, live_all), "test": test, "statistic": statistic, "p_value": p_value,
        "n": len(values), "missing": missing,
        "live_mean": float(present.mean()) if present.size else None, "reference_mean": reference.get("mean"),
    }


def compare_categorical(reference: dict, keys: list[str]) -> dict:
    live = Counter(keys)
    ref_counts = reference.get("counts") or {}
    names = list(ref_counts) + [k for k in live if k not in ref_counts]
    ref_all = [ref_counts.get(k, 0) for k in names]
    live_all = [live.get(k, 0) for k in names]
    statistic, p_value = _chi2(ref_all, live_all)
    n = len(keys)
    return {
        "psi": psi(ref_all, live_all), "test": "chi2", "statistic": statistic, "p_value": p_value,
        "n": n, "missing": live.get(MISSING_CATEGORY, 0),
        "live_shares": {k: live.get(k, 0) / n for k in names} if n else {},
    }


def _clean(value):
    return json_ready(value, digits=6)


# -- reading the live window -------------------------------------------------------------------


def _window_queryset(predictor: Predictor, version: ModelVersion, start, end):
    return Prediction.objects.filter(
        predictor=predictor, schema_version=version.schema_version, created_at__gte=start, created_at__lt=end
    )


def _live_columns(queryset, fields: dict[str, dict], limit: int) -> tuple[dict[str, list], int]:
    """{field: values} over the sample (the `limit` smallest ids of the window; ids are
    uuid4, so a uniform random sample), reading only those fields: jsonb `->` per field,
    the length of text fields in SQL."""
    aliases = {}
    for i, (name, ref) in enumerate(fields.items()):
        alias = f"drift_f{i}"
        if ref.get("of") == "length":
            aliases[alias] = Length(KeyTextTransform(name, "input"))
        else:
            aliases[alias] = KeyTransform(name, "input")
    names = list(fields)
    columns: dict[str, list] = {name: [] for name in names}
    if not aliases:
        return columns, queryset.order_by("id")[:limit].count()
    rows = queryset.order_by("id").annotate(**aliases).values_list(*aliases)[:limit]
    n = 0
    for row in rows.iterator(chunk_size=2000):
        n += 1
        for name, value in zip(names, row, strict=True):
            columns[name].append(value)
    return columns, n


def _shares(counts: dict) -> dict:
    total = sum(counts.values())
    return {str(k): v / total for k, v in counts.items()} if total else {}


def _label_key(value) -> str:
    return MISSING_CATEGORY if value is None else str(value)


def _outputs(predictor: Predictor, version: ModelVersion, reference: dict, window, limit: int) -> dict:
    """The output mix over the window by source (answered and revised predictions), the
    reference from the training targets, and the PSI of each source's mix against it."""
    answered = window.filter(status__in=ANSWERED, output__isnull=False)
    if predictor.is_classification:
        counts: dict[str, Counter] = {}
        for row in answered.order_by().values("source", "output").annotate(n=Count("id")):
            counts.setdefault(row["source"] or "unknown", Counter())[_label_key(row["output"])] += row["n"]
        ref = reference.get(OUTPUT_KEY)
        if ref and ref.get("type") == CATEGORICAL:
            ref_counts = {k: v for k, v in ref["counts"].items() if not (k == MISSING_CATEGORY and not v)}
        else:  # an older version: the run's counts per class (train and holdout together)
            ref_counts = dict((version.run.dataset or {}).get("class_counts") or {})
        labels = [str(label) for label in predictor.output_spec.get("labels", [])]
        labels += [k for k in ref_counts if k not in labels]
        total = Counter()
        for c in counts.values():
            total.update(c)
        psis = {}
        for source, c in [*counts.items(), ("all", total)]:
            keys = labels + [k for k in c if k not in labels]
            psis[source] = psi([ref_counts.get(k, 0) for k in keys], [c.get(k, 0) for k in keys]) if ref_counts else None
        return _clean({
            "type": "label",
            "by_source": {s: _shares(c) for s, c in sorted(counts.items())},
            "counts_by_source": {s: dict(c) for s, c in sorted(counts.items())},
            "all": _shares(total),
            "reference": _shares(ref_counts),
            "reference_n": sum(ref_counts.values()),
            "psi": psis,
        })
    by_source: dict[str, list] = {}
    for source, value in answered.order_by("id").values_list("source", "output")[:limit].iterator(chunk_size=2000):
        by_source.setdefault(source or "unknown", []).append(value)
    ref = reference.get(OUTPUT_KEY) or {}

    def summary(values) -> dict:
        described = _summary(_finite(values))
        quantiles = described.pop("quantiles")
        return {"n": len(values), **described, **quantiles}

    psis = {}
    if ref.get("type") == NUMERIC:
        for source, values in [*by_source.items(), ("all", [v for vs in by_source.values() for v in vs])]:
            psis[source] = compare_numeric(ref, values)["psi"] if values else None
    return _clean({
        "type": "number",
        "by_source": {s: summary(v) for s, v in sorted(by_source.items())},
        "reference": {"n": ref.get("n"), "min": ref.get("min"), "max": ref.get("max"), "mean": ref.get("mean"),
                      **(ref.get("quantiles") or {})} if ref else {},
        "psi": psis,
    })


# -- the check ---------------------------------------------------------------------------------


def champion_of(predictor: Predictor) -> ModelVersion | None:
    return ModelVersion.objects.select_related("run", "predictor").filter(predictor=predictor, stage=Stage.CHAMPION).first()


def drift_check(predictor: Predictor, *, now=None, window: timedelta = timedelta(hours=24)) -> DriftReport | None:
    """Compare the live inputs (and outputs) of the window ending `now` with the champion's
    reference and store a DriftReport. None when the predictor has no champion."""
    now = now or timezone.now()
    version = champion_of(predictor)
    if version is None:
        return None
    reference = version_reference(version)
    start = now - window
    queryset = _window_queryset(predictor, version, start, now)
    limit = max_rows()
    n_window = queryset.count()
    fields_ref = {name: ref for name, ref in reference.items() if name != OUTPUT_KEY and name in predictor.schema}
    columns, n_live = _live_columns(queryset, fields_ref, limit) if n_window else ({n: [] for n in fields_ref}, 0)
    threshold, needed = psi_alert(), min_rows()
    fields = {}
    for name, ref in fields_ref.items():
        values = columns[name]
        if not values:
            fields[name] = {"psi": None, "test": "ks" if ref["type"] == NUMERIC else "chi2", "statistic": None,
                            "p_value": None, "drifted": False, "n": 0}
            continue
        if ref["type"] == NUMERIC:
            result = compare_numeric(ref, values)
        else:
            result = compare_categorical(ref, [_category_key(ref.get("kind", "category"), v) for v in values])
        result["drifted"] = bool(result["psi"] is not None and result["psi"] > threshold and n_live >= needed)
        fields[name] = result
    outputs = _outputs(predictor, version, reference, queryset, limit) if n_window else {}
    outputs.update({"n_window": n_window, "n_compared": n_live, "sampled": n_live < n_window})
    alert = any(f["drifted"] for f in fields.values())
    report = DriftReport.objects.create(
        predictor=predictor, model_version=version, window_start=start, window_end=now, n_live=n_live,
        fields=_clean(fields), outputs=_clean(outputs), alert=alert,
    )
    if alert:
        logger.warning(
            "drift alert for %s (champion v%s): %s", predictor.slug, version.version,
            ", ".join(f"{k} PSI {v['psi']:.3f}" for k, v in fields.items() if v["drifted"]),
        )
    else:
        logger.info("drift check of %s (champion v%s): %s live rows, no alert", predictor.slug, version.version, n_live)
    return report


def drift_check_all(*, now=None, window: timedelta | None = None) -> dict:
    """The beat task's work: a drift check for every predictor with a champion, then the
    pruning of old reports (drift_reports_prune), so retention needs no beat entry of its
    own. One predictor's failure is logged and does not stop the others."""
    if window is None:
        window = timedelta(hours=float(_setting("OZ_DRIFT_WINDOW_HOURS", 24)))
    counts = {"checked": 0, "alerts": 0, "failed": 0}
    ids = ModelVersion.objects.filter(stage=Stage.CHAMPION).values_list("predictor_id", flat=True)
    for predictor in Predictor.objects.filter(pk__in=ids).order_by("pk"):
        try:
            report = drift_check(predictor, now=now, window=window)
        except Exception:
            logger.exception("drift check of %s failed", predictor.slug)
            counts["failed"] += 1
            continue
        if report is not None:
            counts["checked"] += 1
            counts["alerts"] += int(report.alert)
    try:
        drift_reports_prune(now=now)
    except Exception:  # the checks are stored; old reports wait for the next run
        logger.exception("pruning drift reports failed")
    return counts


def drift_reports_prune(*, now=None) -> int:
    """Delete reports created more than OZ_DRIFT_REPORT_KEEP_DAYS days before `now` (0: keep
    them all) and return how many. Each predictor's newest report stays however old, so a
    predictor whose champion saw no traffic for months still shows its last check. "Newest"
    by id (drift_latest, the history) and by created_at (the dashboard, metrics) name the
    same report unless clocks disagree; both are kept, so every view still finds one.
    Deleted PRUNE_BATCH ids per statement: a first run over years of reports holds no long
    transaction and no huge lock."""
    keep_days = int(_setting("OZ_DRIFT_REPORT_KEEP_DAYS", 90))
    if keep_days <= 0:
        return 0
    cutoff = (now or timezone.now()) - timedelta(days=keep_days)
    keep = set(DriftReport.objects.order_by().values("predictor_id").annotate(last=Max("id")).values_list("last", flat=True))
    # Newest by time per predictor: one small query each (DISTINCT ON is PostgreSQL's alone,
    # and `make run` is SQLite); there are as many as predictors with reports.
    for predictor_id in DriftReport.objects.order_by().values_list("predictor_id", flat=True).distinct():
        keep.add(DriftReport.objects.filter(predictor_id=predictor_id).order_by("-created_at", "-id").values_list("id", flat=True)[0])
    old = DriftReport.objects.filter(created_at__lt=cutoff).exclude(id__in=keep).order_by("id").values_list("id", flat=True)
    deleted = 0
    while batch := list(old[:PRUNE_BATCH]):
        deleted += DriftReport.objects.filter(id__in=batch).delete()[0]
    if deleted:
        logger.info("pruned %s drift reports older than %s days", deleted, keep_days)
    return deleted


# -- presenting ----------------------------------------------------------------------------------


def _iso(value):
    return value.isoformat().replace("+00:00", "Z") if value else None


def drift_latest(predictor_ids) -> dict[int, DriftReport]:
    """The newest report of each predictor, in one query."""
    newest = (
        DriftReport.objects.filter(predictor_id__in=list(predictor_ids))
        .values("predictor_id").annotate(last=Max("id")).values("last")
    )
    return {r.predictor_id: r for r in DriftReport.objects.filter(id__in=newest).only(
        "id", "predictor_id", "alert", "created_at", "fields", "n_live", "window_end",
    )}


def drift_summary(report: DriftReport | None) -> dict | None:
    """What GET /predictors/<slug> shows: the latest report's alert and PSI per field."""
    if report is None:
        return None
    return {
        "alert": report.alert,
        "checked_at": _iso(report.created_at),
        "n_live": report.n_live,
        "fields": {name: f.get("psi") for name, f in (report.fields or {}).items()},
    }


def drift_report_as_dict(report: DriftReport) -> dict:
    return {
        "id": report.pk,
        "predictor": report.predictor.slug,
        "model_version": report.model_version.version if report.model_version_id else None,
        "window_start": _iso(report.window_start),
        "window_end": _iso(report.window_end),
        "n_live": report.n_live,
        "alert": report.alert,
        "fields": report.fields,
        "outputs": report.outputs,
        "created_at": _iso(report.created_at),
    }


# -- fairness in production ----------------------------------------------------------------------


def _rate(numerator: int, denominator: int):
    return numerator / denominator if denominator else None


def _group_key(value) -> str:
    return MISSING_CATEGORY if value is None else str(value)


def production_fairness(predictor: Predictor, since, until=None) -> dict:
    """Outcome rates by group of the predictor's sensitive attribute over live answered
    traffic (answered or revised, not provisional, created in [since, until)), with the
    favourable outcome the first label; appeal and overturn rates by the same groups
    (appeals of those predictions; overturn rate = overturned / decided appeals, as in
    review.appeals.appeal_rates). All counted in SQL, grouped by the attribute's value
    read from the input (`input ->> attribute`). `demographic_parity_difference` compares
    groups with at least OZ_FAIRNESS_MIN_GROUP_SIZE answers."""
    from review.models import Appeal, AppealStatus

    attribute = predictor.sensitive_attribute
    result = {"attribute": attribute or None, "since": _iso(since), "until": _iso(until), "groups": {}}
    if not attribute or not predictor.is_classification:
        result["note"] = "no sensitive attribute" if not attribute else "outcome rates are measured for label outputs"
        return result
    favourable = predictor.output_spec["labels"][0]
    result["favourable"] = favourable
    answered = Prediction.objects.filter(
        predictor=predictor, created_at__gte=since, status__in=ANSWERED, provisional=False, output__isnull=False
    )
    appeals = Appeal.objects.filter(prediction__predictor=predictor, prediction__created_at__gte=since)
    if until is not None:
        answered = answered.filter(created_at__lt=until)
        appeals = appeals.filter(prediction__created_at__lt=until)
    groups: dict[str, dict] = {}

    def group(key) -> dict:
        return groups.setdefault(_group_key(key), {"answers": 0, "favourable": 0, "appeals": 0, "overturned": 0,
                                                   "open_appeals": 0, "by_source": {}})

    rows = (
        answered.order_by().annotate(group=KeyTextTransform(attribute, "input"))
        .values("group", "source")
        .annotate(answers=Count("id"), favourable=Count("id", filter=Q(output=favourable)))
    )
    for row in rows:
        g = group(row["group"])
        g["answers"] += row["answers"]
        g["favourable"] += row["favourable"]
        g["by_source"][row["source"] or "unknown"] = {
            "answers": row["answers"], "favourable": row["favourable"],
            "favourable_rate": _rate(row["favourable"], row["answers"]),
        }
    rows = (
        appeals.order_by().annotate(group=KeyTextTransform(attribute, "prediction__input"))
        .values("group")
        .annotate(
            n=Count("id"),
            overturned=Count("id", filter=Q(status=AppealStatus.OVERTURNED)),
            open=Count("id", filter=Q(status=AppealStatus.OPEN)),
        )
    )
    for row in rows:
        g = group(row["group"])
        g["appeals"] += row["n"]
        g["overturned"] += row["overturned"]
        g["open_appeals"] += row["open"]
    for g in groups.values():
        g["favourable_rate"] = _rate(g["favourable"], g["answers"])
        g["appeal_rate"] = _rate(g["appeals"], g["answers"])
        g["overturn_rate"] = _rate(g["overturned"], g["appeals"] - g["open_appeals"])
    minimum = int(_setting("OZ_FAIRNESS_MIN_GROUP_SIZE", 10))
    rates = [g["favourable_rate"] for g in groups.values() if g["answers"] >= minimum and g["favourable_rate"] is not None]
    result["groups"] = dict(sorted(groups.items()))
    result["min_group_size"] = minimum
    result["demographic_parity_difference"] = max(rates) - min(rates) if len(rates) >= 2 else None
    return result


def output_mix_series(predictor: Predictor, days: int = 30, *, now=None) -> list[dict]:
    """Answers per day (in the current time zone), per source: counts per label, or for
    number outputs the count and mean. Days without answers are left out. Oldest first:
    [{"date": "2025-01-31", "source": "model", "total": 13, "counts": {"approve": 10, ...}}]."""
    now = now or timezone.now()
    first_day = timezone.localtime(now).date() - timedelta(days=max(int(days), 1) - 1)
    since = timezone.make_aware(datetime.combine(first_day, time.min))
    answered = Prediction.objects.filter(
        predictor=predictor, created_at__gte=since, created_at__lte=now, status__in=ANSWERED, output__isnull=False
    ).order_by()
    out: dict[tuple, dict] = {}
    if predictor.is_classification:
        rows = answered.annotate(day=TruncDate("created_at")).values("day", "source", "output").annotate(n=Count("id"))
        for row in rows:
            entry = out.setdefault((row["day"], row["source"]), {"total": 0, "counts": {}})
            label = _label_key(row["output"])
            entry["counts"][label] = entry["counts"].get(label, 0) + row["n"]
            entry["total"] += row["n"]
    else:
        rows = (
            answered.annotate(day=TruncDate("created_at")).values("day", "source")
            .annotate(n=Count("id"), mean=Avg(Cast("output", FloatField())))
        )
        for row in rows:
            out[(row["day"], row["source"])] = {"total": row["n"], "mean": row["mean"]}
    return [
        {"date": day.isoformat(), "source": source or "unknown", **entry}
        for (day, source), entry in sorted(out.items(), key=lambda item: (item[0][0], item[0][1] or ""))
    ]
