"""The floor for any Python prediction server: a bare WSGI callable that parses the JSON
body, calls the model and writes JSON back. No routing, validation, auth, storage or logs.
Served by gunicorn with the same workers and threads as Oz (bench/predict_http.py).

BENCH_MODEL_KIND=sklearn: the joblib'd scikit-learn pipeline (what MLflow and MLServer are
given), body {"inputs": [[x1, …, xn]]}.
BENCH_MODEL_KIND=onnx: the ONNX graph Oz serves (one [1, 1] float input per field), body
{"input": {"field": value, …}} — Oz's own request shape, so the floor parses the same JSON."""
from __future__ import annotations

import json
import os

import numpy as np

KIND = os.environ["BENCH_MODEL_KIND"]
PATH = os.environ["BENCH_MODEL_PATH"]

if KIND == "sklearn":
    import joblib

    MODEL = joblib.load(PATH)

    def _scores(body: dict) -> list[float]:
        return MODEL.predict_proba(np.asarray(body["inputs"], dtype=float))[0].tolist()
else:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    SESSION = onnxruntime.InferenceSession(PATH, options, providers=["CPUExecutionProvider"])
    NAMES = [i.name for i in SESSION.get_inputs()]
    # skl2onnx classifiers: outputs are (label, probabilities); with zipmap off, an array.
    PROBABILITIES = SESSION.get_outputs()[1].name

    def _scores(body: dict) -> list[float]:
        row = body["input"]
        feed = {name: np.array([[row[name]]], dtype=np.float32) for name in NAMES}
        return SESSION.run([PROBABILITIES], feed)[0][0].tolist()


def application(environ, start_response):
    if environ["REQUEST_METHOD"] != "POST":  # readiness probe
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = json.loads(environ["wsgi.input"].read(length))
    out = json.dumps({"scores": _scores(body)}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(out)))])
    return [out]
