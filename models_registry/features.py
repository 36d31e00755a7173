"""The one place that turns predictor inputs into the matrix a pipeline sees, and builds that
pipeline from the predictor's schema. Training and serving both call these, so the two can
never disagree on column order or missing-value handling.

The pipeline is built only from stock scikit-learn parts (no FunctionTransformer, no custom
Python), so that it can be exported to ONNX (models_registry/onnx.py) and served without
loading any Python code: the ONNX graph has one input per schema field, in schema order
(float [N, 1] for numbers, integers and booleans; string [N, 1] for categories and text),
which the ColumnTransformer's integer column indices map onto one to one."""
from __future__ import annotations

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.svm import LinearSVC

MISSING_CATEGORY = "__missing__"
SEED = 0
NUMERIC_KINDS = ("number", "integer", "boolean")  # float inputs; the rest are strings
TEXT_MAX_FEATURES = 5000
# Estimators that need a dense matrix get a smaller text vocabulary, so the dense matrix
# stays a reasonable size.
DENSE_TEXT_MAX_FEATURES = 300


class EstimatorSpec:
    """One allow-listed estimator: how to build it from YAML hyperparameters, and which
    object those hyperparameters belong to (for a calibrated SVM, the inner LinearSVC)."""

    def __init__(self, base, *, defaults: dict | None = None, wrap=None, dense: bool = False):
        self.base = base
        self.defaults = defaults or {}
        self.wrap = wrap
        self.dense = dense

    def tunable(self):
        """The object whose get_params() names the accepted hyperparameters."""
        return self.base()

    def __call__(self, params: dict):
        tunable = self.base()
        merged = dict(self.defaults)
        if "random_state" in tunable.get_params():
            merged["random_state"] = SEED
        merged.update(params)
        tunable.set_params(**merged)
        return self.wrap(tunable) if self.wrap else tunable


def _calibrated(svm):
    # LinearSVC has no predict_proba; sigmoid calibration over 3 folds gives it one.
    return CalibratedClassifierCV(svm, method="sigmoid", cv=3)


# Estimators a predictor may train, by output type; the first is the default. Names match
# models_registry.config.ESTIMATOR_NAMES.
ESTIMATORS: dict[str, dict[str, EstimatorSpec]] = {
    "label": {
        "logistic_regression": EstimatorSpec(LogisticRegression, defaults={"max_iter": 1000}),
        "linear_svm": EstimatorSpec(LinearSVC, wrap=_calibrated),
        "random_forest": EstimatorSpec(RandomForestClassifier, defaults={"n_jobs": 1}),
        "hist_gradient_boosting": EstimatorSpec(HistGradientBoostingClassifier, dense=True),
    },
    "number": {
        "ridge": EstimatorSpec(Ridge),
        "random_forest": EstimatorSpec(RandomForestRegressor, defaults={"n_jobs": 1}),
        "gradient_boosting": EstimatorSpec(GradientBoostingRegressor),
    },
}


def estimator_params_errors(output_type: str, name: str, params: dict) -> list[str]:
    """Problems with `training.params` for this estimator, as messages naming the parameter
    ("C: ..."): unknown names (checked against the estimator's get_params()) and values the
    estimator's own parameter constraints reject. Empty when all is well. Meant to be called
    when a predictor definition is loaded."""
    specs = ESTIMATORS.get(output_type)
    if specs is None:
        return [f"unknown output type {output_type!r}"]
    spec = specs.get(name)
    if spec is None:
        return [f"unknown estimator {name!r}; one of: {', '.join(specs)}"]
    if not isinstance(params, dict):
        return ["hyperparameters must be a mapping"]
    tunable = spec.tunable()
    known = tunable.get_params(deep=False)
    errors = [
        f"{key}: not a hyperparameter of {name}; one of: {', '.join(sorted(known))}" for key in params if key not in known
    ]
    if errors:
        return errors
    try:
        tunable.set_params(**{**spec.defaults, **params})
        tunable._validate_params()  # scikit-learn's own type and range checks
    except Exception as exc:  # InvalidParameterError, TypeError, ValueError
        bad = next((key for key in params if f"'{key}'" in str(exc)), None)
        errors.append(f"{bad}: {exc}" if bad else str(exc))
    return errors


def feature_rows(schema: dict, inputs: list[dict]) -> np.ndarray:
    """Inputs -> an object matrix with one column per schema field, in schema order.
    Numbers and booleans are floats (NaN when missing, imputed in the pipeline), categories
    strings (a marker when missing), text strings (empty when missing)."""
    names = list(schema)
    X = np.empty((len(inputs), len(names)), dtype=object)
    for j, name in enumerate(names):
        kind = schema[name]["type"]
        for i, row in enumerate(inputs):
            X[i, j] = field_value(kind, row.get(name))
    return X


def field_value(kind: str, value):
    """One field's value as the pipeline (and the ONNX graph) sees it."""
    if kind in ("number", "integer"):
        return np.nan if value is None else float(value)
    if kind == "boolean":
        return np.nan if value is None else float(bool(value))
    if kind == "category":
        return MISSING_CATEGORY if value is None else str(value)
    return "" if value is None else str(value)


def usable_text_fields(schema: dict, X: np.ndarray) -> list[str]:
    """Text fields with at least one word in the training data (TF-IDF needs a vocabulary)."""
    usable = []
    for j, name in enumerate(schema):
        if schema[name]["type"] != "text":
            continue
        try:
            TfidfVectorizer().fit(X[:, j])
        except ValueError:
            continue
        usable.append(name)
    return usable


def pipeline_build(schema: dict, output_spec: dict, *, estimator: str, params: dict, text_fields: list[str]) -> Pipeline:
    names = list(schema)
    spec = ESTIMATORS[output_spec["type"]][estimator]
    numeric = [j for j, n in enumerate(names) if schema[n]["type"] in ("number", "integer")]
    booleans = [j for j, n in enumerate(names) if schema[n]["type"] == "boolean"]
    categories = [j for j, n in enumerate(names) if schema[n]["type"] == "category"]
    transformers = []
    if numeric:
        # The median imputer also turns the object columns into floats.
        transformers.append((
            "numbers",
            Pipeline([
                ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                ("scale", StandardScaler()),
            ]),
            numeric,
        ))
    if booleans:
        # Missing booleans become the most frequent value.
        transformers.append(("booleans", SimpleImputer(strategy="most_frequent", keep_empty_features=True), booleans))
    if categories:
        transformers.append((
            "categories",
            OneHotEncoder(
                handle_unknown="ignore",
                categories=[[*schema[names[j]]["choices"], MISSING_CATEGORY] for j in categories],
                sparse_output=not spec.dense,
            ),
            categories,
        ))
    for name in text_fields:
        # A scalar column index hands the vectorizer a 1-D array of strings.
        max_features = DENSE_TEXT_MAX_FEATURES if spec.dense else TEXT_MAX_FEATURES
        transformers.append((f"text_{name}", TfidfVectorizer(max_features=max_features), names.index(name)))
    return Pipeline([
        ("features", ColumnTransformer(transformers, remainder="drop", sparse_threshold=0.0 if spec.dense else 0.3)),
        ("estimator", spec(params)),
    ])


def as_float(X):
    """Legacy: pipelines trained before the ONNX path wrapped this in a FunctionTransformer.
    Kept (and trusted in artifacts.TRUSTED_TYPES) so their skops artifacts still load."""
    return np.asarray(X, dtype=np.float64)
