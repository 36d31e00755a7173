"""Why a model answered as it did: per-field contributions to one answer, in the predictor's
input fields (never one-hot columns or TF-IDF terms: the columns a field becomes are summed
back into that field), and their averages over sampled traffic.

What is explained, by estimator (always for the class the model predicted, so a positive
contribution pushes towards the answer given):

- `logistic_regression`, `ridge` (exact, linear): column j contributes
  coef_j × (z_j − mean_j), where z is the transformed input and mean the column's mean over
  the version's training rows (the labels of its run minus the holdout, read once per
  process). The contributions plus `base_value` (intercept + coef · mean) are the model's
  margin (decision_function; for a binary model and the first class, its negation) or, for
  ridge, its prediction. This is what shap's LinearExplainer computes with the training
  data as background, without needing shap at request time.
- `linear_svm`: the served model is a sigmoid-calibrated ensemble of LinearSVCs, one per
  cross-validation fold; its probability is the average of monotone functions of each
  fold's margin. We explain the folds' average margin (a linear function: mean coef, mean
  intercept) the same way as above. It is exact for that average margin and has the sign
  and ranking of the calibrated probability; it is not in probability units.
- `random_forest`, `hist_gradient_boosting`, `gradient_boosting`: SHAP values of
  shap.TreeExplainer (path-dependent, no background data needed) on the transformed row.
  Units are the trees' own output: probability for forests of classifiers, log-odds for
  the histogram gradient boosting classifier, the output's units for regressors; the
  contributions plus `base_value` (shap's expected value) are that output.

Explanations are computed from the version's skops pipeline (sha256-checked, allow-listed,
models_registry.artifacts) loaded once per process and kept, like models_registry.serving
keeps what it serves. Nothing here runs on /predict unless the client asked (`explain:
true`); the sampled explanations (OZ_EXPLAIN_SAMPLE_PERCENT of model answers, chosen by
prediction id, at most OZ_EXPLAIN_SAMPLES_PER_MINUTE per web process) and those shown to
reviewers beside a low-confidence suggestion are computed by Celery tasks sent once the
request's transaction commits.

`explanation_averages` and `explanation_daily` aggregate the stored samples in SQL."""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.db.models import Avg, Count, FloatField
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Abs, Cast, TruncDate

from .artifacts import artifact_load
from .features import feature_rows
from .loaded_once import LoadedOnce
from .models import ExplanationSample, ModelVersion

logger = logging.getLogger(__name__)

FAILURE_MEMORY_SECONDS = 30.0
BACKGROUND_CHUNK = 2000  # training labels read per query for the linear background
DIGITS = 6  # contributions on the wire are rounded like scores

LINEAR = "linear"
CALIBRATED_SVM = "calibrated_linear_svm"
TREE_SHAP = "tree_shap"

_explainers = LoadedOnce(FAILURE_MEMORY_SECONDS)  # (pk, artifact sha256) -> ModelExplainer


class CannotExplain(Exception):
    """This version (or its pipeline) cannot be explained."""


@dataclass(frozen=True)
class Explanation:
    contributions: dict  # {field: contribution}, every schema field, schema order
    base_value: float  # contributions + base_value = what is explained (see `explained`)
    explained: str  # "margin", "probability", "log_odds" or "value"
    target: object  # the class explained (the one predicted); None for number outputs
    method: str  # linear | calibrated_linear_svm | tree_shap
    model_version: int

    @property
    def total(self) -> float:
        return self.base_value + sum(self.contributions.values())

    def as_list(self) -> list[dict]:
        """The API shape: [{"feature", "contribution"}], strongest (by absolute value) first."""
        rows = [{"feature": name, "contribution": round(float(value), DIGITS)} for name, value in self.contributions.items()]
        return sorted(rows, key=lambda row: -abs(row["contribution"]))


# ---------------------------------------------------------------------------------------
# From transformed columns back to input fields
# ---------------------------------------------------------------------------------------

def column_fields(pipeline, schema: dict) -> np.ndarray:
    """For each column the pipeline's ColumnTransformer outputs, the index (in schema order)
    of the input field it came from."""
    ct = pipeline.steps[0][1]
    n_out = sum(s.stop - s.start for s in ct.output_indices_.values())
    owner = np.full(n_out, -1, dtype=np.int64)
    for name, transformer, columns in ct.transformers_:
        piece = ct.output_indices_.get(name)
        if piece is None or piece.stop == piece.start or transformer == "drop":
            continue
        width = piece.stop - piece.start
        if isinstance(columns, (int, np.integer)):  # a text field's TF-IDF terms: all one field
            owner[piece] = int(columns)
            continue
        columns = [int(c) for c in np.atleast_1d(columns)]
        if width == len(columns):  # one column per field (imputed, scaled numbers; booleans)
            owner[piece] = columns
        elif hasattr(transformer, "categories_") and getattr(transformer, "drop_idx_", None) is None:
            sizes = [len(c) for c in transformer.categories_]  # one-hot: one column per choice
            if sum(sizes) != width:
                raise CannotExplain(f"transformer {name!r}: {width} columns for categories of sizes {sizes}")
            owner[piece] = np.repeat(columns, sizes)
        else:
            raise CannotExplain(f"transformer {name!r}: cannot map its {width} columns to the fields {columns}")
    if (owner < 0).any() or (owner >= len(schema)).any():
        raise CannotExplain("some transformed columns belong to no input field")
    return owner


def _dense_row(Z) -> np.ndarray:
    if hasattr(Z, "toarray"):
        Z = Z.toarray()
    return np.asarray(Z, dtype=np.float64)


# ---------------------------------------------------------------------------------------
# One explainer per model version and process
# ---------------------------------------------------------------------------------------

class ModelExplainer:
    """Everything needed to explain one version's answers, built once: the pipeline, which
    field each column belongs to, and the linear weights and background or the
    TreeExplainer."""

    def __init__(self, *, pipeline, schema: dict, classification: bool, version_number: int, training_rows=None):
        self.pipeline = pipeline
        self.schema = schema
        self.fields = list(schema)
        self.classification = classification
        self.version_number = version_number
        self.owner = column_fields(pipeline, schema)
        self.features = pipeline.steps[0][1]
        estimator = pipeline.steps[-1][1]
        self.classes = [str(c) for c in getattr(estimator, "classes_", [])]
        kind = type(estimator).__name__
        if kind in ("LogisticRegression", "Ridge"):
            self.method = LINEAR
            self.coef = np.atleast_2d(np.asarray(estimator.coef_, dtype=np.float64))
            self.intercept = np.atleast_1d(np.asarray(estimator.intercept_, dtype=np.float64))
        elif kind == "CalibratedClassifierCV":
            folds = [c.estimator for c in estimator.calibrated_classifiers_]
            if not all(type(f).__name__ == "LinearSVC" for f in folds):
                raise CannotExplain(f"a calibrated {type(folds[0]).__name__} is not explained")
            self.method = CALIBRATED_SVM
            self.coef = np.mean([np.atleast_2d(f.coef_) for f in folds], axis=0)
            self.intercept = np.mean([np.atleast_1d(f.intercept_) for f in folds], axis=0)
        elif kind in ("RandomForestClassifier", "RandomForestRegressor", "HistGradientBoostingClassifier",
                      "GradientBoostingRegressor", "HistGradientBoostingRegressor"):
            import shap  # heavy: imported only when a tree model is first explained

            self.method = TREE_SHAP
            self.tree = shap.TreeExplainer(estimator)
            self.explained = "probability" if kind == "RandomForestClassifier" else (
                "log_odds" if classification else "value")
        else:
            raise CannotExplain(f"no explanation for a {kind}")
        if self.method != TREE_SHAP:
            if self.coef.shape[1] != len(self.owner):
                raise CannotExplain(f"{self.coef.shape[1]} weights for {len(self.owner)} columns")
            self.mean = self._background_mean(training_rows)
            self.explained = "margin" if classification else "value"

    def _background_mean(self, training_rows) -> np.ndarray:
        """Mean transformed training row (zeros when the training rows are gone)."""
        total = np.zeros(len(self.owner))
        n = 0
        for chunk in training_rows or ():
            if not chunk:
                continue
            Z = self.features.transform(feature_rows(self.schema, chunk))
            total += np.asarray(Z.sum(axis=0), dtype=np.float64).reshape(-1)
            n += len(chunk)
        if n == 0:
            logger.warning("v%s: no training rows left for the explanation background; using zeros", self.version_number)
            return total
        return total / n

    def _target_row(self, output) -> tuple[int, float]:
        """(row of coef / output index, sign) for the class explained: the predicted one."""
        if not self.classification:
            return 0, 1.0
        k = self.classes.index(str(output)) if str(output) in self.classes else None
        if len(self.classes) == 2 and self.coef_rows() == 1:
            if k is None:
                return 0, 1.0
            return 0, 1.0 if k == 1 else -1.0  # one margin, for classes_[1]
        if k is None:
            raise CannotExplain(f"{output!r} is not one of the model's classes {self.classes}")
        return k, 1.0

    def coef_rows(self) -> int:
        return self.coef.shape[0] if self.method != TREE_SHAP else 0

    def explain(self, schema: dict, clean_input: dict, output) -> Explanation:
        z = _dense_row(self.features.transform(feature_rows(schema, [clean_input])))
        if self.method == TREE_SHAP:
            per_column, base, target = self._tree(z, output)
        else:
            k, sign = self._target_row(output)
            w = self.coef[k]
            per_column = sign * w * (z[0] - self.mean)
            base = float(sign * (self.intercept[k] + w @ self.mean))
            target = str(output) if self.classification else None
        sums = np.bincount(self.owner, weights=per_column, minlength=len(self.fields))
        contributions = {name: float(sums[i]) for i, name in enumerate(self.fields)}
        return Explanation(contributions=contributions, base_value=float(base), explained=self.explained,
                           target=target, method=self.method, model_version=self.version_number)

    def _tree(self, z: np.ndarray, output) -> tuple[np.ndarray, float, object]:
        values = np.asarray(self.tree.shap_values(z), dtype=np.float64)
        expected = np.atleast_1d(np.asarray(self.tree.expected_value, dtype=np.float64))
        if not self.classification:
            return values.reshape(-1), float(expected[0]), None
        k = self.classes.index(str(output)) if str(output) in self.classes else None
        if k is None:
            raise CannotExplain(f"{output!r} is not one of the model's classes {self.classes}")
        if values.ndim == 3:  # (rows, columns, outputs): one output per class
            return values[0, :, k], float(expected[k]), str(output)
        # One output (a binary gradient boosting model's log-odds for classes_[1]).
        sign = 1.0 if k == 1 else -1.0
        return sign * values.reshape(-1), float(sign * expected[0]), str(output)


def _training_rows(version: ModelVersion):
    """The inputs of the version's training rows (its run's labels minus the holdout), in
    chunks; labels deleted since are skipped."""
    from review.models import Label

    dataset = version.run.dataset or {}
    holdout = set(dataset.get("holdout_label_ids") or [])
    ids = [i for i in dataset.get("label_ids") or [] if i not in holdout]
    for start in range(0, len(ids), BACKGROUND_CHUNK):
        chunk = ids[start:start + BACKGROUND_CHUNK]
        yield list(Label.objects.filter(pk__in=chunk).order_by("pk").values_list("input", flat=True))


def _build(version: ModelVersion, predictor) -> ModelExplainer:
    pipeline = artifact_load(name=version.artifact.name, sha256=version.artifact_sha256)  # tampering raises
    return ModelExplainer(pipeline=pipeline, schema=predictor.schema, classification=predictor.is_classification,
                          version_number=version.version, training_rows=_training_rows(version))


def explainer_get(version: ModelVersion, predictor) -> ModelExplainer:
    """The version's explainer, built on first use in this process and kept (a failure is
    remembered for FAILURE_MEMORY_SECONDS so storage is not read on every request)."""
    return _explainers.get((version.pk, version.artifact_sha256), lambda: _build(version, predictor))


def explainers_clear() -> None:
    """Forget every built explainer (tests, or after a deploy)."""
    _explainers.clear()


def explanation_compute(*, predictor, version: ModelVersion, clean_input: dict, output) -> Explanation:
    """The explanation of `version`'s answer `output` to one validated input. Raises
    CannotExplain (or what loading raises) when it cannot be had."""
    if version.schema_version != predictor.schema_version:
        raise CannotExplain(f"v{version.version} was trained on schema version {version.schema_version}")
    return explainer_get(version, predictor).explain(predictor.schema, clean_input, output)


def answer_explanation(*, predictor, version: ModelVersion, clean_input: dict, output) -> Explanation | None:
    """explanation_compute, or None (logged) when it fails: an explanation that cannot be had
    never costs the client its answer."""
    try:
        return explanation_compute(predictor=predictor, version=version, clean_input=clean_input, output=output)
    except Exception:
        logger.warning("could not explain v%s of %s", version.version, predictor.slug, exc_info=True)
        return None


# ---------------------------------------------------------------------------------------
# After /predict: the samples and the reviewer's suggestion
# ---------------------------------------------------------------------------------------

def explanation_sampled(prediction_id) -> bool:
    """Whether this model answer is in the OZ_EXPLAIN_SAMPLE_PERCENT share whose explanation
    is kept (deterministic by prediction id, like the QA sample)."""
    from gateway.routing import in_share

    return in_share(settings.OZ_EXPLAIN_SAMPLE_PERCENT, "explain", str(prediction_id))


class SampleBudget:
    """A token bucket: `per_minute` takes a minute on average, refilled evenly, with a burst
    of up to `per_minute` more after a quiet spell (so at most twice that in any one
    minute). Thread-safe; one per process."""

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens: float | None = None
        self._at = 0.0

    def take(self, per_minute: int) -> bool:
        if per_minute <= 0:
            return True  # no cap
        with self._lock:
            now = self._clock()
            if self._tokens is None:
                self._tokens = float(per_minute)
            else:
                self._tokens = min(float(per_minute), self._tokens + (now - self._at) * per_minute / 60.0)
            self._at = now
            if self._tokens < 1.0:
                return False
            self._tokens -= 1.0
            return True


_sample_budget = SampleBudget()


def explanations_follow_up(*, prediction, version: ModelVersion | None, explanation: Explanation | None, task=None) -> None:
    """Called by prediction_create once its rows are written (inside its transaction when it
    has one; the Celery tasks asked for here are sent when that commits). A model answer
    explained for the client keeps a sample at once (it is computed already); one in the
    sampled share gets a Celery task that explains it. A low-confidence review task gets a
    Celery task that adds the explanation to its suggestion. Nothing else costs anything."""
    from gateway.messaging import task_send_on_commit
    from gateway.models import AnswerSource

    if version is None:
        return
    if prediction.source == AnswerSource.MODEL and prediction.output is not None:
        if explanation is not None:
            explanation_sample_store(prediction=prediction, explanation=explanation)
        elif explanation_sampled(prediction.id) and _sample_budget.take(settings.OZ_EXPLAIN_SAMPLES_PER_MINUTE):
            from gateway.tasks import explanation_sample

            task_send_on_commit(explanation_sample, str(prediction.id), version.pk)
    elif task is not None and task.suggestion:
        from gateway.tasks import suggestion_explain

        task_send_on_commit(suggestion_explain, task.pk, version.pk)


def explanation_sample_store(*, prediction, explanation: Explanation) -> ExplanationSample:
    sample, _ = ExplanationSample.objects.get_or_create(
        prediction_id=prediction.pk,
        defaults={"predictor_id": prediction.predictor_id, "model_version": explanation.model_version,
                  "contributions": explanation.contributions},
    )
    return sample


def explanation_sample_record(*, prediction_id, version_id: int) -> ExplanationSample | None:
    """The Celery side of the sample: explain a stored model answer and keep it. Idempotent."""
    from gateway.models import Prediction

    prediction = Prediction.objects.select_related("predictor").filter(pk=prediction_id).first()
    version = ModelVersion.objects.select_related("run").filter(pk=version_id).first()
    if prediction is None or version is None or prediction.output is None:
        return None
    existing = ExplanationSample.objects.filter(prediction_id=prediction.pk).first()
    if existing is not None:
        return existing
    explanation = answer_explanation(predictor=prediction.predictor, version=version, clean_input=prediction.input,
                                     output=prediction.output)
    if explanation is None:
        return None
    return explanation_sample_store(prediction=prediction, explanation=explanation)


def suggestion_explanation_add(*, task_id: int, version_id: int) -> list | None:
    """Explain the model's suggestion on a low-confidence review task and store it in the
    task's suggestion (`"explanation"`), where the reviewer's page and API read it."""
    from review.models import ReviewTask

    task = ReviewTask.objects.select_related("prediction", "predictor").filter(pk=task_id).first()
    version = ModelVersion.objects.select_related("run").filter(pk=version_id).first()
    if task is None or version is None or not task.suggestion or task.suggestion.get("explanation"):
        return None
    explanation = answer_explanation(predictor=task.predictor, version=version, clean_input=task.prediction.input,
                                     output=task.suggestion.get("output"))
    if explanation is None:
        return None
    rows = explanation.as_list()
    ReviewTask.objects.filter(pk=task.pk).update(suggestion={**task.suggestion, "explanation": rows})
    return rows


# ---------------------------------------------------------------------------------------
# Averages over the samples, in SQL
# ---------------------------------------------------------------------------------------

def _samples(predictor, since, model_version):
    samples = ExplanationSample.objects.filter(predictor=predictor)
    if since is not None:
        samples = samples.filter(created_at__gte=since)
    if model_version is not None:
        samples = samples.filter(model_version=model_version)
    return samples


def _field_aggregates(fields: list[str]) -> dict:
    aggregates = {}
    for i, name in enumerate(fields):
        value = Cast(KeyTextTransform(name, "contributions"), FloatField())
        aggregates[f"mean_{i}"] = Avg(value)
        aggregates[f"abs_{i}"] = Avg(Abs(value))
    return aggregates


def _field_rows(fields: list[str], row: dict) -> list[dict]:
    out = [
        {"feature": name, "mean_contribution": row[f"mean_{i}"], "mean_abs_contribution": row[f"abs_{i}"]}
        for i, name in enumerate(fields)
    ]
    return sorted(out, key=lambda r: -(r["mean_abs_contribution"] or 0.0))


def explanation_averages(predictor, since=None, model_version=None) -> dict:
    """Mean contribution and mean |contribution| per input field over the stored samples
    (optionally since a time, for one model version): one aggregate query.
    {"n": samples, "features": [{"feature", "mean_contribution", "mean_abs_contribution"}]},
    strongest on average first; None means for a field no sample carries."""
    fields = list(predictor.schema)
    row = _samples(predictor, since, model_version).aggregate(n=Count("id"), **_field_aggregates(fields))
    return {"n": row["n"], "features": _field_rows(fields, row)}


def explanation_daily(predictor, since=None, model_version=None) -> list[dict]:
    """The same per day (TruncDate of created_at, in the current time zone), oldest first:
    [{"day": date, "n", "features": [...]}], one grouped query."""
    fields = list(predictor.schema)
    rows = (
        _samples(predictor, since, model_version)
        .annotate(day=TruncDate("created_at"))
        .values("day")
        .annotate(n=Count("id"), **_field_aggregates(fields))
        .order_by("day")
    )
    return [{"day": row["day"], "n": row["n"], "features": _field_rows(fields, row)} for row in rows]
