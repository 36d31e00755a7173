"""Prometheus metrics: what /metrics serves and where each number comes from.

Two kinds of numbers, kept apart so that nothing is double counted under gunicorn:

- **Events counted in the web process** (prometheus_client Counter/Histogram): predictions
  and /predict latency, time to a human decision, plus django-prometheus's HTTP request
  metrics. Under gunicorn each worker writes its values to files in
  PROMETHEUS_MULTIPROC_DIR (prometheus_client's multiprocess mode); /metrics merges every
  worker's files, so any worker answers the scrape with the sum over all of them.
  scripts/gunicorn.conf.py sets the folder up, empties it at start and marks exited
  workers dead (`child_exit`).
- **State and events that the database already records** (DatabaseCollector): queue depth,
  model-human agreement, the drift alert, training runs, webhook deliveries, SLA misses,
  appeals, and whether each live model version's artifact is intact (`oz_model_artifact_ok`,
  a file check rather than a query). They are read at scrape time with a few aggregate queries and cached for
  OZ_METRICS_CACHE_SECONDS in the shared cache, so every worker reports the same value.
  Events that happen in Celery workers (training outcomes, webhook deliveries, SLA misses)
  are counted this way on purpose: a Celery worker is another container or host, with its
  own process ids, so it cannot share the web processes' multiprocess folder; the rows it
  writes are the record, and counting rows never double counts and survives restarts.

The /predict hot path adds one counter increment and one histogram observation
(`prediction_count`), and no database query. A model version that fails to load is counted
(`oz_model_load_failures_total`) by the serving process, at most once per version every
few seconds.
"""
from __future__ import annotations

import hmac
import logging
import os
import threading
import time
from dataclasses import dataclass, field

from django.conf import settings
from django.core.cache import cache
from django.http import HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

logger = logging.getLogger(__name__)

# --- counted in the web process ---------------------------------------------------------------

PREDICTIONS = Counter(
    "oz_predictions",
    "Predictions made through POST /predict, by predictor, route (mode and reason), who answered and status.",
    ["predictor", "mode", "reason", "source", "status"],
)
PREDICT_LATENCY = Histogram(
    "oz_predict_latency_seconds",
    "Time to answer POST /predict (a `wait` included), by predictor and who answered.",
    ["predictor", "source"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, float("inf")),
)
HUMAN_DECISION = Histogram(
    "oz_human_decision_seconds",
    "Time from a prediction's request to the human decision that answered it, by predictor and task kind.",
    ["predictor", "kind"],
    buckets=(10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 12 * 3600, 86400, 3 * 86400, float("inf")),
)


def prediction_count(*, predictor: str, route: dict, source: str, status: str, seconds: float) -> None:
    """The hot path's share: one increment, one observation."""
    PREDICTIONS.labels(predictor, route.get("mode", ""), route.get("reason", ""), source, status).inc()
    PREDICT_LATENCY.labels(predictor, source).observe(seconds)


MODEL_LOAD_FAILURES = Counter(
    "oz_model_load_failures",
    "Failed loads of a model version's artifact by a serving process (missing, corrupt, unreadable or "
    "unloadable), by predictor and version; the requests meanwhile went to the routing flag's fallback. "
    "Counted once per process and version every models_registry.serving.FAILURE_MEMORY_SECONDS at most.",
    ["predictor", "model_version", "reason"],
)


def human_decision_observe(*, predictor: str, kind: str, seconds: float) -> None:
    HUMAN_DECISION.labels(predictor, kind).observe(max(seconds, 0.0))


def model_load_failure_count(*, predictor: str, version: int, reason: str) -> None:
    MODEL_LOAD_FAILURES.labels(predictor, str(version), reason).inc()


# --- read from the database at scrape time ----------------------------------------------------

CACHE_KEY = "oz:metrics:database"


@dataclass
class Family:
    """A metric family as plain data, so it can sit in the shared cache."""

    kind: str  # "counter" or "gauge"
    name: str
    documentation: str
    labels: list[str]
    samples: list[tuple[list[str], float]] = field(default_factory=list)

    def add(self, labels, value) -> None:
        self.samples.append(([str(v) if v is not None else "" for v in labels], float(value)))

    def as_prometheus(self):
        cls = CounterMetricFamily if self.kind == "counter" else GaugeMetricFamily
        family = cls(self.name, self.documentation, labels=self.labels)
        for labels, value in self.samples:
            family.add_metric(labels, value)
        return family


def _queue_depth(slugs: list[str]) -> Family:
    from django.db.models import Count

    from review.models import ReviewTask, TaskKind, TaskStatus

    family = Family("gauge", "oz_review_queue_depth", "Review tasks waiting (open) or being worked (claimed).",
                    ["predictor", "kind", "status"])
    counts = {
        (row["predictor__slug"], row["kind"], row["status"]): row["n"]
        for row in ReviewTask.objects.filter(status__in=(TaskStatus.OPEN, TaskStatus.CLAIMED))
        .values("predictor__slug", "kind", "status").annotate(n=Count("id")).order_by()
    }
    # Every predictor and kind, zeros included: an empty queue is 0, not a missing series.
    for slug in slugs:
        for kind in TaskKind.values:
            for status in (TaskStatus.OPEN, TaskStatus.CLAIMED):
                family.add([slug, kind, status], counts.pop((slug, kind, status), 0))
    for (slug, kind, status), n in counts.items():
        family.add([slug, kind, status], n)
    return family


def _agreement() -> list[Family]:
    from django.db.models import F, OuterRef, Subquery
    from django.db.models.functions import Coalesce

    from gateway.models import AnswerSource, Prediction, Predictor
    from models_registry.models import ModelVersion, Stage
    from models_registry.shadow import shadow_agreement, shadow_tolerance
    from review.models import ReviewTask, TaskKind, TaskStatus
    from review.services import _same_answer

    rate = Family("gauge", "oz_model_human_agreement_ratio",
                  "Share of a model version's answers that agree with the human decision on the same request, "
                  "from shadow runs and from QA samples of the model's answers.", ["predictor", "model_version", "evidence"])
    compared = Family("gauge", "oz_model_human_agreement_compared",
                      "How many (model answer, human decision) pairs the agreement ratio is over.",
                      ["predictor", "model_version", "evidence"])
    live = ModelVersion.objects.filter(stage__in=(Stage.CHAMPION, Stage.CHALLENGER, Stage.CANDIDATE)).select_related("predictor")
    for version in live:
        result = shadow_agreement(version=version, tolerance=shadow_tolerance(version.predictor))
        if result["n"]:
            labels = [version.predictor.slug, version.version, "shadow"]
            rate.add(labels, result["rate"])
            compared.add(labels, result["n"])
    # QA samples: the model's answer is the prediction's first record (a disagreeing
    # reviewer revises the prediction itself, which records the first state in its history;
    # a prediction never revised is still as it was made); the task's final output is the human's.
    first = Prediction.history.model.objects.filter(id=OuterRef("prediction_id"), history_type="+")
    qa = (
        ReviewTask.objects.filter(kind=TaskKind.QA_SAMPLE, status=TaskStatus.DECIDED, final_output__isnull=False)
        .annotate(
            first_source=Coalesce(Subquery(first.values("source")[:1]), F("prediction__source")),
            first_output=Coalesce(Subquery(first.values("output")[:1]), F("prediction__output")),
            first_version=Coalesce(Subquery(first.values("model_version")[:1]), F("prediction__model_version")),
        )
        .filter(first_source=AnswerSource.MODEL)
        .values_list("predictor__slug", "first_version", "first_output", "final_output")
    )
    tally: dict[tuple, list[int]] = {}
    # The same tolerance as the shadow evidence, so both measure one thing.
    tolerances = {p.slug: shadow_tolerance(p) for p in Predictor.objects.only("slug", "gates")}
    for slug, version, model_output, human_output in qa.iterator(chunk_size=2000):
        counts = tally.setdefault((slug, version), [0, 0])
        counts[0] += 1
        counts[1] += _same_answer(model_output, human_output, tolerances.get(slug))
    for (slug, version), (n, agreeing) in sorted(tally.items(), key=lambda item: (item[0][0], item[0][1] or 0)):
        labels = [slug, version, "qa"]
        rate.add(labels, agreeing / n)
        compared.add(labels, n)
    return [rate, compared]


def _drift() -> Family:
    from django.db.models import OuterRef, Subquery

    from gateway.models import Predictor
    from models_registry.models import DriftReport

    family = Family("gauge", "oz_drift_alert", "1 when the predictor's latest drift report raised the alert, else 0.",
                    ["predictor"])
    latest = DriftReport.objects.filter(predictor=OuterRef("pk")).order_by("-created_at", "-id")
    rows = (
        Predictor.objects.annotate(alert=Subquery(latest.values("alert")[:1]))
        .filter(alert__isnull=False).values_list("slug", "alert").order_by("slug")
    )
    for slug, alert in rows:
        family.add([slug], 1 if alert else 0)
    return family


def _training_runs() -> list[Family]:
    from django.db.models import Count

    from models_registry.models import TrainingRun

    finished = Family("counter", "oz_training_runs", "Finished training runs, by predictor, trigger and outcome.",
                      ["predictor", "trigger", "status"])
    active = Family("gauge", "oz_training_runs_active", "Training runs queued or running.", ["predictor", "status"])
    rows = TrainingRun.objects.values("predictor__slug", "trigger", "status").annotate(n=Count("id")).order_by()
    active_counts: dict[tuple, int] = {}
    for row in rows:
        if row["status"] in (TrainingRun.Status.SUCCEEDED, TrainingRun.Status.FAILED):
            finished.add([row["predictor__slug"], row["trigger"], row["status"]], row["n"])
        else:
            key = (row["predictor__slug"], row["status"])
            active_counts[key] = active_counts.get(key, 0) + row["n"]
    for (slug, status), n in sorted(active_counts.items()):
        active.add([slug, status], n)
    return [finished, active]


def _webhooks() -> list[Family]:
    from django.db.models import Count, Q

    from .models import WebhookAttempt, WebhookDelivery
    from .webhooks import INTERRUPTED

    done = Family("counter", "oz_webhook_deliveries",
                  "Webhook deliveries that ended: delivered (a 2xx answer) or failed (out of tries, or refused).",
                  ["event", "status"])
    pending = Family("gauge", "oz_webhook_deliveries_pending", "Webhook deliveries still being tried.", ["event"])
    attempts = Family("counter", "oz_webhook_attempts",
                      "Webhook POSTs, by event and result: success (2xx), failure, or interrupted (in flight, or the "
                      "worker died mid-request).", ["event", "result"])
    for row in WebhookDelivery.objects.values("event", "status").annotate(n=Count("id")).order_by("event", "status"):
        if row["status"] == WebhookDelivery.Status.PENDING:
            pending.add([row["event"]], row["n"])
        else:
            done.add([row["event"], row["status"]], row["n"])
    rows = (
        WebhookAttempt.objects.values("delivery__event")
        .annotate(
            n=Count("id"),
            success=Count("id", filter=Q(status_code__gte=200, status_code__lt=300)),
            interrupted=Count("id", filter=Q(status_code__isnull=True, error=INTERRUPTED)),
        )
        .order_by("delivery__event")
    )
    for row in rows:
        event = row["delivery__event"]
        attempts.add([event, "success"], row["success"])
        attempts.add([event, "interrupted"], row["interrupted"])
        attempts.add([event, "failure"], row["n"] - row["success"] - row["interrupted"])
    return [done, pending, attempts]


def _sla_misses() -> Family:
    from django.db.models import Count

    from .models import Prediction

    family = Family("counter", "oz_sla_misses",
                    "Human-routed predictions that passed their SLA (given a provisional answer or expired).", ["predictor"])
    rows = (
        Prediction.objects.filter(route__reason="sla_expired")
        .values("predictor__slug").annotate(n=Count("id")).order_by("predictor__slug")
    )
    for row in rows:
        family.add([row["predictor__slug"]], row["n"])
    return family


def _appeals() -> list[Family]:
    from django.db.models import Count

    from review.models import Appeal, AppealStatus

    filed = Family("counter", "oz_appeals", "Appeals filed, by predictor and the source of the answer appealed against.",
                   ["predictor", "source"])
    decided = Family("counter", "oz_appeals_decided",
                     "Appeals decided, by predictor, source of the appealed answer and outcome (upheld or overturned).",
                     ["predictor", "source", "outcome"])
    rows = (
        Appeal.objects.values("prediction__predictor__slug", "original_source", "status")
        .annotate(n=Count("id")).order_by("prediction__predictor__slug", "original_source", "status")
    )
    totals: dict[tuple, int] = {}
    for row in rows:
        key = (row["prediction__predictor__slug"], row["original_source"])
        totals[key] = totals.get(key, 0) + row["n"]
        if row["status"] != AppealStatus.OPEN:
            decided.add([*key, row["status"]], row["n"])
    for key, n in totals.items():
        filed.add(list(key), n)
    return [filed, decided]


def _model_artifacts() -> Family:
    from models_registry.models import ModelVersion, Stage
    from models_registry.serving import artifact_check, served_artifact

    family = Family("gauge", "oz_model_artifact_ok",
                    "1 when the file a live model version (champion or challenger) is served from exists and matches "
                    "its recorded sha256, else 0: alert on 0 (the version cannot be loaded by a process that has not "
                    "loaded it yet; its traffic goes to the fallback).", ["predictor", "model_version", "stage", "format"])
    live = ModelVersion.objects.filter(stage__in=(Stage.CHAMPION, Stage.CHALLENGER)).select_related("predictor")
    for version in live.order_by("predictor__slug", "version"):
        problem, _ = artifact_check(version)
        family.add([version.predictor.slug, version.version, version.stage, served_artifact(version)[0]], 0 if problem else 1)
    return family


def database_metrics() -> list[Family]:
    """Every database-backed family, computed now (about a dozen aggregate queries, plus
    one per live model version for its shadow agreement)."""
    from .models import Predictor

    slugs = list(Predictor.objects.order_by("slug").values_list("slug", flat=True))
    return [
        _queue_depth(slugs),
        *_agreement(),
        _drift(),
        *_training_runs(),
        *_webhooks(),
        _sla_misses(),
        *_appeals(),
        _model_artifacts(),
    ]


_compute_lock = threading.Lock()


def _cache_get():
    try:
        return cache.get(CACHE_KEY)
    except Exception:  # the cache (Redis) down must not take the metrics with it
        logger.warning("the metrics cache is unreachable", exc_info=True)
        return None


def _cache_set(families) -> None:
    try:
        cache.set(CACHE_KEY, families, timeout=settings.OZ_METRICS_CACHE_SECONDS)
    except Exception:
        logger.warning("the metrics cache is unreachable", exc_info=True)


def database_metrics_cached() -> tuple[list[Family], bool]:
    """The families from the shared cache, computed when missing. Returns (families, ok)."""
    ttl = settings.OZ_METRICS_CACHE_SECONDS
    if ttl > 0:
        cached = _cache_get()
        if cached is not None:
            return cached, True
    with _compute_lock:  # one computation per process at a time, however many scrapes
        if ttl > 0:
            cached = _cache_get()
            if cached is not None:
                return cached, True
        try:
            families = database_metrics()
        except Exception:
            logger.exception("reading the database metrics failed")
            return [], False
        if ttl > 0:
            _cache_set(families)
        return families, True


class DatabaseCollector:
    """A prometheus_client collector over `database_metrics_cached`."""

    def describe(self):
        return []

    def collect(self):
        started = time.monotonic()
        families, ok = database_metrics_cached()
        for family in families:
            yield family.as_prometheus()
        up = GaugeMetricFamily("oz_metrics_database_up", "1 when the database-backed metrics could be read.")
        up.add_metric([], 1 if ok else 0)
        yield up
        took = GaugeMetricFamily("oz_metrics_database_seconds", "Time to read (or fetch from cache) the database-backed metrics.")
        took.add_metric([], time.monotonic() - started)
        yield took


class _ThisProcess:
    """The default registry's metrics (a single process: runserver, tests, a shell)."""

    def describe(self):
        return []

    def collect(self):
        yield from REGISTRY.collect()


def metrics_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)  # every gunicorn worker's files, summed
    else:
        registry.register(_ThisProcess())
    registry.register(DatabaseCollector())
    return registry


# --- the endpoint -----------------------------------------------------------------------------

def _too_many_failures(wait: float) -> HttpResponse:
    """The 429 the API gives an address over the failed-authentication limit."""
    from .errors import _problem_json, retry_after
    from .throttling import auth_failures_refusal

    refusal = auth_failures_refusal(wait)
    response = _problem_json(refusal.status_code, str(refusal.detail), code=refusal.default_code)
    response["Retry-After"] = retry_after(wait)
    return response


def _access_refused(request) -> HttpResponse | None:
    from .errors import _problem_json
    from .throttling import auth_failure_record, auth_failures_wait

    token = settings.OZ_METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    if token and header.startswith("Bearer "):
        # A wrong token counts against the address like a wrong API key, and an address
        # over that limit is refused whatever it presents (gateway.throttling).
        if (wait := auth_failures_wait(request)) is not None:
            return _too_many_failures(wait)
        if hmac.compare_digest(header[len("Bearer "):].strip().encode(), token.encode()):
            return None
        if (wait := auth_failure_record(request)) is not None:
            return _too_many_failures(wait)
        response = _problem_json(401, "The metrics token is wrong.")
    else:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated and user.is_active and user.is_staff:
            return None
        if user is not None and user.is_authenticated:
            return _problem_json(403, "Only staff may read the metrics.")
        response = _problem_json(401, "Send the metrics token (Authorization: Bearer …) or sign in as staff.")
    response["WWW-Authenticate"] = 'Bearer realm="metrics"'
    return response


@require_GET
def metrics_view(request):
    """GET /metrics in the Prometheus text format. Not public: the bearer token
    OZ_METRICS_TOKEN, or a signed-in staff user (the admin session)."""
    refused = _access_refused(request)
    if refused is not None:
        return refused
    return HttpResponse(generate_latest(metrics_registry()), content_type=CONTENT_TYPE_LATEST)
