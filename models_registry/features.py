"""The one place that turns predictor inputs into the matrix a pipeline sees, and builds that
pipeline from the predictor's schema. Training and serving both call these, so the two can
never disagree on column order or missing-value handling."""
from __future__ import annotations

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

MISSING_CATEGORY = "__missing__"

# Estimators a predictor may train, by output type; the first is the default.
ESTIMATORS = {
    "label": {
        "logistic_regression": lambda params: LogisticRegression(max_iter=1000, **params),
    },
    "number": {
        "ridge": lambda params: Ridge(**params),
    },
}


def as_float(X):
    """Object columns (numbers, booleans, NaN for missing) as floats. Module-level so that
    skops can name it in the artifact's allow-list."""
    return np.asarray(X, dtype=np.float64)


def feature_rows(schema: dict, inputs: list[dict]) -> np.ndarray:
    """Inputs -> an object matrix with one column per schema field, in schema order.
    Missing numbers/booleans are NaN (imputed in the pipeline), missing categories a marker,
    missing text the empty string."""
    names = list(schema)
    X = np.empty((len(inputs), len(names)), dtype=object)
    for j, name in enumerate(names):
        kind = schema[name]["type"]
        for i, row in enumerate(inputs):
            value = row.get(name)
            if kind in ("number", "integer"):
                X[i, j] = np.nan if value is None else float(value)
            elif kind == "boolean":
                X[i, j] = np.nan if value is None else float(bool(value))
            elif kind == "category":
                X[i, j] = MISSING_CATEGORY if value is None else value
            else:
                X[i, j] = "" if value is None else value
    return X


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
    numeric = [j for j, n in enumerate(names) if schema[n]["type"] in ("number", "integer")]
    booleans = [j for j, n in enumerate(names) if schema[n]["type"] == "boolean"]
    categories = [j for j, n in enumerate(names) if schema[n]["type"] == "category"]
    transformers = []
    if numeric:
        transformers.append((
            "numbers",
            Pipeline([
                ("float", FunctionTransformer(as_float)),
                ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                ("scale", StandardScaler()),
            ]),
            numeric,
        ))
    if booleans:
        transformers.append((
            "booleans",
            Pipeline([
                ("float", FunctionTransformer(as_float)),
                ("impute", SimpleImputer(strategy="most_frequent", keep_empty_features=True)),
            ]),
            booleans,
        ))
    if categories:
        transformers.append((
            "categories",
            OneHotEncoder(
                handle_unknown="ignore",
                categories=[[*schema[names[j]]["choices"], MISSING_CATEGORY] for j in categories],
            ),
            categories,
        ))
    for name in text_fields:
        # A scalar column index hands the vectorizer a 1-D array of strings.
        transformers.append((f"text_{name}", TfidfVectorizer(max_features=5000), names.index(name)))
    factory = ESTIMATORS[output_spec["type"]][estimator]
    return Pipeline([
        ("features", ColumnTransformer(transformers, remainder="drop")),
        ("estimator", factory(params)),
    ])
