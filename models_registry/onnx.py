"""The ONNX fast path: export a fitted pipeline (features.pipeline_build) to ONNX, check that
onnxruntime agrees with scikit-learn on the holdout, and run it.

The graph has one input per schema field, in schema order: float [N, 1] for numbers,
integers and booleans (NaN when missing), string [N, 1] for categories and text (exactly
what features.field_value gives). Its metadata records the class labels in the pipeline's
order, so serving needs nothing but the verified ONNX bytes: onnxruntime loads no Python
code. Pipelines skl2onnx cannot convert (a converter gap, some text setups) or that disagree
with scikit-learn on the holdout are served from their skops artifact instead."""
from __future__ import annotations

import json
import logging

import numpy as np
from sklearn.base import is_classifier

from .features import NUMERIC_KINDS, field_value

logger = logging.getLogger(__name__)

PARITY_THRESHOLD = 1e-4
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
# scikit-learn's default token pattern is (?u)\b\w\w+\b; skl2onnx would swap it for an
# ASCII-only one, which splits "café". This is the same rule in RE2 (onnxruntime's regex).
TOKEN_REGEX = r"[\p{L}\p{N}_]{2,}"  # noqa: S105 (a regex, not a secret)
# StringNormalizer (lowercasing) needs a locale; C.UTF-8 ships with glibc, unlike en_US.
TEXT_LOCALE = "C.UTF-8"
META_CLASSES = "oz_classes"
META_FIELDS = "oz_fields"


def _field_kinds(schema: dict) -> list[tuple[str, bool]]:
    return [(name, schema[name]["type"] in NUMERIC_KINDS) for name in schema]


def onnx_export_explained(pipeline, schema: dict, output_spec: dict) -> tuple[bytes | None, str]:
    """(ONNX bytes, "") or (None, why not)."""
    try:
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import FloatTensorType, StringTensorType
        from sklearn.feature_extraction.text import TfidfVectorizer

        initial_types = [
            (name, FloatTensorType([None, 1]) if numeric else StringTensorType([None, 1])) for name, numeric in _field_kinds(schema)
        ]
        options = {}
        if is_classifier(pipeline):
            options[id(pipeline)] = {"zipmap": False}
        for _, transformer, _ in getattr(pipeline.named_steps.get("features"), "transformers_", []):
            if isinstance(transformer, TfidfVectorizer):
                options[id(transformer)] = {"tokenexp": TOKEN_REGEX, "locale": TEXT_LOCALE}
        model = convert_sklearn(pipeline, initial_types=initial_types, options=options, target_opset=TARGET_OPSET)
    except Exception as exc:  # any converter gap means: serve skops
        reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}"
        logger.info("ONNX export not possible (%s); the skops artifact will serve", reason)
        return None, f"conversion failed: {reason}"
    classes = [str(c) for c in pipeline.classes_] if is_classifier(pipeline) else []
    meta = {META_CLASSES: json.dumps(classes), META_FIELDS: json.dumps(list(schema))}
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return model.SerializeToString(), ""


def onnx_export(pipeline, schema: dict, output_spec: dict) -> bytes | None:
    """The pipeline as ONNX bytes (probabilities as a plain tensor, no ZipMap), or None
    (with the reason logged) when it cannot be converted."""
    return onnx_export_explained(pipeline, schema, output_spec)[0]


FLOAT32_MAX = float(np.finfo(np.float32).max)


class OnnxModel:
    """An onnxruntime session over verified ONNX bytes, with what building its inputs needs
    worked out once: one row costs a handful of tiny arrays and one session.run."""

    def __init__(self, data: bytes):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        self.classes = json.loads(meta.get(META_CLASSES, "[]"))
        self.fields = json.loads(meta.get(META_FIELDS, "[]"))
        self.classification = bool(self.classes)
        inputs = self.session.get_inputs()
        if len(inputs) != len(self.fields):
            raise ValueError(f"ONNX graph has {len(inputs)} inputs for {len(self.fields)} fields")
        # (input name, field name, float?) in schema order
        self.plan = [(i.name, field, i.type == "tensor(float)") for i, field in zip(inputs, self.fields, strict=True)]
        outputs = [o.name for o in self.session.get_outputs()]
        self.output = "probabilities" if self.classification and "probabilities" in outputs else outputs[-1 if self.classification else 0]

    def _check_fields(self, schema: dict) -> list[tuple[str, str, bool, str]]:
        if list(schema) != self.fields:
            raise ValueError(f"ONNX graph was built for fields {self.fields}, not {list(schema)}")
        return [(name, field, is_float, schema[field]["type"]) for name, field, is_float in self.plan]

    def bind(self, schema: dict) -> OnnxModel:
        """Precompute the per-field plan for this schema (checked once)."""
        self.kinds = self._check_fields(schema)
        return self

    def run_one(self, clean_input: dict) -> np.ndarray:
        """Probabilities (classes order) or the value, for one input."""
        feed = {}
        floats, float_names = [], []
        for name, field, is_float, kind in self.kinds:
            value = field_value(kind, clean_input.get(field))
            if is_float:
                if abs(value) > FLOAT32_MAX:  # NaN (a missing value) compares False and passes
                    # inf inside the graph, NaN out of it: not an answer this model can give.
                    raise OverflowError(f"{field} is beyond the model's float32 range")
                floats.append(value)
                float_names.append(name)
            else:
                feed[name] = np.array([[value]], dtype=object)
        # One array for all numeric inputs; each input is a [1, 1] view of it.
        column = np.array(floats, dtype=np.float32).reshape(-1, 1, 1)
        for j, name in enumerate(float_names):
            feed[name] = column[j]
        return self.session.run([self.output], feed)[0][0]

    def run_rows(self, X: np.ndarray) -> np.ndarray:
        """Probabilities [N, classes] or values [N], for a features.feature_rows matrix."""
        feed = {}
        for j, (name, _field, is_float) in enumerate(self.plan):
            column = X[:, j : j + 1]
            feed[name] = column.astype(np.float32) if is_float else column.astype(str).astype(object)
        out = self.session.run([self.output], feed)[0]
        return out if self.classification else np.asarray(out, dtype=np.float64).reshape(-1)


def onnx_parity(onnx_bytes: bytes, pipeline, schema: dict, X_holdout_rows) -> dict:
    """Does onnxruntime answer as scikit-learn does on the holdout? Classification: the same
    label on every row and max |delta probability| <= PARITY_THRESHOLD. Regression: max
    |delta| / max(1, |value|) <= PARITY_THRESHOLD. Returns {"passed", "value", "threshold",
    "detail"}; a graph that onnxruntime cannot load or run fails the check."""
    result = {"passed": False, "value": None, "threshold": PARITY_THRESHOLD, "detail": ""}
    try:
        model = OnnxModel(onnx_bytes)
        model._check_fields(schema)
        X = np.asarray(X_holdout_rows, dtype=object)
        if len(X) == 0:
            result["detail"] = "no holdout rows to compare on"
            return result
        theirs = model.run_rows(X)
        if is_classifier(pipeline):
            ours = pipeline.predict_proba(X)
            classes = [str(c) for c in pipeline.classes_]
            if model.classes != classes:
                result["detail"] = f"class order differs: {model.classes} vs {classes}"
                return result
            diff = float(np.max(np.abs(np.asarray(theirs, dtype=np.float64) - ours)))
            disagree = int(np.sum(np.argmax(theirs, axis=1) != np.argmax(ours, axis=1)))
            result.update(value=diff, passed=disagree == 0 and diff <= PARITY_THRESHOLD)
            result["detail"] = f"{len(X)} holdout rows: {disagree} labels differ, max |delta probability| {diff:.3g}"
        else:
            ours = np.asarray(pipeline.predict(X), dtype=np.float64).reshape(-1)
            diff = float(np.max(np.abs(theirs - ours) / np.maximum(1.0, np.abs(ours))))
            result.update(value=diff, passed=diff <= PARITY_THRESHOLD)
            result["detail"] = f"{len(X)} holdout rows: max relative |delta| {diff:.3g}"
    except Exception as exc:
        result["detail"] = f"onnxruntime could not run the export: {type(exc).__name__}: {str(exc)[:300]}"
    if result["value"] is not None and not np.isfinite(result["value"]):
        result.update(passed=False, value=None)
    return result


def onnx_evaluate(pipeline, schema: dict, output_spec: dict, X_holdout_rows) -> tuple[bytes | None, dict]:
    """Export and check in one step, for training: (ONNX bytes to store and serve, or None;
    the informational `onnx_parity` gate result for the version's gates)."""
    data, reason = onnx_export_explained(pipeline, schema, output_spec)
    if data is None:
        parity = {"passed": False, "value": None, "threshold": PARITY_THRESHOLD, "detail": reason}
    else:
        parity = onnx_parity(data, pipeline, schema, X_holdout_rows)
    gate = {"gate": "onnx_parity", **parity, "informational": True}
    gate["detail"] = ("serving ONNX; " if parity["passed"] else "serving skops; ") + gate["detail"]
    return (data if parity["passed"] else None), gate
