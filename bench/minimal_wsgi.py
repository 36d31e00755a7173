"""The floor for any Python prediction server: a bare WSGI callable that parses the JSON
body, calls the model and writes JSON back. No routing, validation, auth, storage or logs.
Served by gunicorn with the same workers and threads as Oz (bench/predict_http.py).

BENCH_MODEL_KIND=sklearn: the joblib'd scikit-learn pipeline (what MLflow and MLServer are
given), body {"inputs": [[x1, …, xn]]}.
BENCH_MODEL_KIND=onnx: the ONNX graph Oz serves (one [1, 1] float input per field), body
{"input": {"field": value, …}} — Oz's own request shape, so the floor parses the same JSON.
BENCH_MODEL_KIND=onnx-store: the same, and each answer stored as Oz stores it — one row
(id, input, scores, time) INSERTed with psycopg on DATABASE_URL's PostgreSQL, autocommit,
a prepared statement with server-side binding, one connection per thread: the floor for
any server that persists every prediction. bench/predict_http.py creates its table before
the workers start (two workers creating it at once would race in PostgreSQL's catalog)."""
from __future__ import annotations

import json
import os
import threading
import uuid

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


_STORE = KIND == "onnx-store"
_local = threading.local()
_INSERT = "INSERT INTO bench_floor_prediction (id, input, scores) VALUES (%s, %s, %s)"


def _connection():
    import psycopg

    connection = getattr(_local, "connection", None)
    if connection is None:
        connection = _local.connection = psycopg.connect(os.environ["DATABASE_URL"], autocommit=True)
    return connection


def _store(body: dict, scores: list[float]) -> None:
    from psycopg.types.json import Jsonb

    _connection().execute(_INSERT, (uuid.uuid4(), Jsonb(body["input"]), Jsonb(scores)), prepare=True)


def application(environ, start_response):
    if environ["REQUEST_METHOD"] != "POST":  # readiness probe
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = json.loads(environ["wsgi.input"].read(length))
    scores = _scores(body)
    if _STORE:
        _store(body, scores)
    out = json.dumps({"scores": scores}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(out)))])
    return [out]
