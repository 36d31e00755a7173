"""A model artifact deleted while the model answers traffic, and the next champion's file
corrupted after its promotion, before any process loaded it (a corrupt file cannot be
promoted: models_registry.services.model_version_promote checks it).

A web process that has the version loaded keeps answering from memory (the bytes it checked
at load time); a process that has to load it — a new worker after a deploy, a recycled or
scaled-out one (here: gunicorn reloaded with SIGHUP), or any process once a version with a
corrupted file becomes champion — refuses the file (missing, or sha256 mismatch) and the
request goes where the routing flag's `fallback` says: `human` queues it (202), `rule`
answers with the rules (200), `none` still queues it for a human (202: a model error never
drops an accepted request; `none` only lets a low-confidence answer stand).
The alert is raised without waiting for traffic: GET /predictors/<slug> shows
`model_health.status = "broken"` with the problem, and /metrics has
`oz_model_artifact_ok 0` and `oz_model_load_failures_total` by reason."""
from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from gateway.models import Prediction
from gateway.services import routing_update
from models_registry.services import model_version_promote
from models_registry.serving import served_artifact
from review.models import ReviewTask
from tests import factories

from .harness import metric, report, wait_until

PER_FALLBACK = 8


def test_a_broken_artifact_falls_back_as_the_flag_says_and_raises_the_alert(stack):
    clock = time.monotonic()
    loan = factories.loan_predictor()
    first, second = factories.trained_version(loan, seed=11), factories.trained_version(loan, seed=12)
    timings = {"train": round(time.monotonic() - clock, 1)}
    model_version_promote(version=first)
    routing_update(predictor=loan, changes={"mode": "model", "fallback": "human"})
    _, key = factories.api_client_with_key(name="faults-model")
    _, operator_token = factories.operator_with_token()
    bearer, operator = f"Bearer {key}", f"Token {operator_token}"

    def predict():
        return stack.call("POST", "/predict/loan-approval", {"input": factories.loan_input()}, auth=bearer)

    def health():
        reply = stack.call("GET", "/predictors/loan-approval", auth=bearer)
        assert reply.status == 200, reply.body[:300]
        return reply.json()["model_health"]

    def gauge(version):
        return metric(stack.scrape(), "oz_model_artifact_ok", predictor="loan-approval", model_version=str(version.version))

    def failures(reason):
        return metric(stack.scrape(), "oz_model_load_failures_total", predictor="loan-approval", reason=reason)

    def fallback(value):
        reply = stack.call("PATCH", "/predictors/loan-approval/routing", {"fallback": value, "reason": "fault test"},
                           auth=operator)
        assert reply.status == 200, reply.body[:300]
        time.sleep(1.2)  # every web process routes by the new flag (OZ_SERVING_CACHE_SECONDS=1)

    replies: dict[str, list] = {}

    def phase(label: str, n: int = PER_FALLBACK):
        replies[label] = [predict() for _ in range(n)]

    # Healthy: the model answers, and (most likely) both web processes have loaded it.
    wait_until(lambda: predict().json().get("source") == "model", "the champion to answer", timeout=20)
    warm = [predict() for _ in range(16)]
    assert {(r.status, r.json()["source"]) for r in warm} == {(200, "model")}
    assert health()["status"] == "ok" and gauge(first) == 1

    # 1. v1's file deleted while it serves. Processes that hold it keep answering; new ones cannot.
    fmt, name, _ = served_artifact(first)
    path = Path(stack.media) / name
    path.unlink()
    phase("deleted, already loaded", 4)
    deleted = {"model_health": health(), "oz_model_artifact_ok": gauge(first)}
    clock = time.monotonic()
    stack.reload_web()
    timings["reload"] = round(time.monotonic() - clock, 1)
    phase("deleted, new processes, fallback human")
    deleted["oz_model_load_failures_total"] = failures("missing")

    # 2. v2 promoted, then its file corrupted before any process loaded it: every process
    #    must load it, and refuses it.
    fmt2, name2, _ = served_artifact(second)
    path2 = Path(stack.media) / name2
    original = path2.read_bytes()
    model_version_promote(version=second)
    path2.write_bytes(b"not a model" + original[:64])
    time.sleep(1.2)  # the serving caches pick up the new champion
    phase("corrupt, fallback human")
    fallback("rule")
    phase("corrupt, fallback rule")
    fallback("none")
    phase("corrupt, fallback none")
    corrupt = {"model_health": health(), "oz_model_artifact_ok": gauge(second),
               "oz_model_load_failures_total": failures("corrupt")}

    # 3. Restored: the alert clears.
    path2.write_bytes(original)
    restored = {"model_health_status": health()["status"], "oz_model_artifact_ok": gauge(second)}

    def outcome(reply) -> str:
        if reply.status not in (200, 202):
            return f"{reply.status}"
        body = reply.json()
        return f"{reply.status} {body['source'] or 'queued'} ({body['route']['reason']})"

    outcomes = {label: dict(Counter(outcome(r) for r in rs)) for label, rs in replies.items()}
    everything = [r for rs in replies.values() for r in rs]
    errors = [r for r in everything if r.status not in (200, 202)]
    accepted = [r.json()["id"] for r in everything if r.status in (200, 202)]
    queued = [r.json()["id"] for r in everything if r.status == 202]
    stored = set(map(str, Prediction.objects.filter(pk__in=accepted).values_list("pk", flat=True)))
    with_task = set(map(str, ReviewTask.objects.filter(prediction_id__in=queued).values_list("prediction_id", flat=True)))
    lost = len(set(accepted) - stored) + len(set(queued) - with_task)
    row = report(
        f"champion model artifact deleted while serving ({fmt}), and the next champion's corrupted after promotion ({fmt2})",
        sent=len(everything), errors=len(errors), lost=lost, outcomes=outcomes,
        alert_when_deleted=deleted, alert_when_corrupt=corrupt, after_restore=restored, seconds=timings,
    )

    assert not errors and lost == 0, row
    # Already loaded: still the model (no process re-reads storage for a version it holds);
    # a process that had not loaded it yet falls back.
    assert set(outcomes["deleted, already loaded"]) <= {"200 model (mode)", "202 queued (model_error)"}, row
    assert outcomes["deleted, already loaded"].get("200 model (mode)"), row
    assert outcomes["deleted, new processes, fallback human"] == {"202 queued (model_error)": PER_FALLBACK}, row
    assert outcomes["corrupt, fallback human"] == {"202 queued (model_error)": PER_FALLBACK}, row
    assert outcomes["corrupt, fallback rule"] == {"200 rule (model_error)": PER_FALLBACK}, row
    assert outcomes["corrupt, fallback none"] == {"202 queued (model_error)": PER_FALLBACK}, row
    health_deleted, health_corrupt = deleted["model_health"], corrupt["model_health"]
    assert (health_deleted["status"], health_deleted["problem"], health_deleted["version"]) == ("broken", "missing", 1)
    assert (health_corrupt["status"], health_corrupt["problem"], health_corrupt["version"]) == ("broken", "corrupt", 2)
    assert health_corrupt["fallback"] == "none"
    assert deleted["oz_model_artifact_ok"] == 0 and corrupt["oz_model_artifact_ok"] == 0, row
    assert deleted["oz_model_load_failures_total"] >= 1 and corrupt["oz_model_load_failures_total"] >= 1, row
    assert restored == {"model_health_status": "ok", "oz_model_artifact_ok": 1}, row
