"""One-row model cost, scikit-learn (skops artifact) vs onnxruntime (ONNX export), for every
allow-listed estimator of the demo predictor. Pure model work, no Django request around it:
what models_registry.serving does per answer once a version is loaded.

    .venv/bin/python bench/serving_formats.py [--n 2000] [--labels 600]

Prints, per estimator, the median and p95 of one answer in each format, the speed-up, and
the onnx_parity gate (the ONNX export serves only when it passes)."""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def timed(call, n: int) -> list[float]:
    for _ in range(min(50, n)):
        call()
    out = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        out.append(time.perf_counter() - start)
    out.sort()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--labels", type=int, default=600)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    import numpy as np
    import yaml

    from gateway.demo import SyntheticPredictor
    from models_registry.features import ESTIMATORS, feature_rows, pipeline_build, usable_text_fields
    from models_registry.onnx import OnnxModel, onnx_evaluate

    definition = yaml.safe_load((ROOT / "predictors" / "loan-approval.yaml").read_text())
    schema = definition["input"]
    outputs = {
        "label": {"type": "label", "labels": definition["output"]["labels"]},
        "number": {"type": "number", "minimum": 0, "maximum": 100},
    }
    print(f"one-row answer, n={args.n}, {args.labels} training labels, loan-approval schema; times in microseconds")
    print(f"{'estimator':32} {'sklearn p50':>11} {'p95':>8} {'onnx p50':>9} {'p95':>8} {'speed-up':>8}  parity")
    for kind, spec in outputs.items():
        world = SyntheticPredictor(schema, spec)
        rng = random.Random(1)
        inputs = [world.input(rng) for _ in range(args.labels)]
        y = np.asarray([world.truth(x) for x in inputs], dtype=object if kind == "label" else np.float64)
        X = feature_rows(schema, inputs)
        cut = int(len(X) * 0.75)
        text = usable_text_fields(schema, X[:cut])
        row = world.input(random.Random(99))
        for name in ESTIMATORS[kind]:
            pipeline = pipeline_build(schema, spec, estimator=name, params={}, text_fields=text).fit(X[:cut], y[:cut])
            predict = pipeline.predict_proba if kind == "label" else pipeline.predict
            sk = timed(lambda: predict(feature_rows(schema, [row]))[0], args.n)  # noqa: B023
            data, gate = onnx_evaluate(pipeline, schema, spec, X[cut:])
            if data is None:
                from models_registry.onnx import onnx_export

                data = onnx_export(pipeline, schema, spec)
            if data is not None:
                model = OnnxModel(data).bind(schema)
                ox = timed(lambda: model.run_one(row), args.n)  # noqa: B023
                speed_up = statistics.median(sk) / statistics.median(ox)
                onnx_cells = f"{statistics.median(ox) * 1e6:9.1f} {ox[int(len(ox) * 0.95)] * 1e6:8.1f} {speed_up:7.0f}x"
            else:
                onnx_cells = f"{'-':>9} {'-':>8} {'-':>8}"
            verdict = "pass" if gate["passed"] else "fail -> skops"
            value = "" if gate["value"] is None else f" ({gate['value']:.2g})"
            sk_cells = f"{statistics.median(sk) * 1e6:11.1f} {sk[int(len(sk) * 0.95)] * 1e6:8.1f}"
            print(f"{kind + ' ' + name:32} {sk_cells} {onnx_cells}  {verdict}{value}")


if __name__ == "__main__":
    main()
