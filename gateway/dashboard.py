"""The operators' dashboard: one admin page per predictor, drawn on the server as inline SVG
with a plain table under every chart (admin → Predictors → "Dashboard").

What it shows, over a window of the last 1, 7, 30 (default) or 90 days:
- traffic by who answered (human, rule, model; provisional answers and unanswered ones apart),
  per hour for one day, per day otherwise;
- the review queue: open tasks by kind now, tasks created and decided per day, and time to
  decision (median and 90th percentile per day) against the routing flag's SLA;
- model-human agreement per model version on shadow traffic (the shadow's output against the
  current human label, as `models_registry.shadow.shadow_agreement` counts it), QA samples
  confirmed or corrected, and appeal and overturn rates per source and model version;
- the labels collected per day by source, and the mix of labels in the current training set;
- training metrics per model version (the full chart is the training runs' "metrics over
  versions" page);
- drift per input field and day as a heat map of PSI (from DriftReport rows);
- the average explanation per input field (from ExplanationSample rows);
- answers, favourable answers, appeals and overturns per group of the sensitive attribute.

Cost. Every figure is an aggregate computed by the database (GROUP BY a TruncDate/TruncHour
bucket and Count/Avg/Max; JSON fields read with KeyTextTransform and Cast), so the page runs
a fixed number of queries — about fifteen — and Python only ever sees the aggregated rows
(at most buckets × series), never the predictions themselves. Percentiles: PostgreSQL's
percentile_cont does not exist in SQLite (`make run`), so time to decision is counted into a
histogram in SQL (fixed bucket edges from 10 s to 7 days, plus the SLA as an edge of its own,
which makes "within SLA" exact) and the median and p90 are read from it by linear
interpolation inside the bucket: an estimate good to the bucket's width. Windows start on a
whole day (or hour) in the site's time zone, so each bar is a whole day."""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from itertools import pairwise

from django.core.exceptions import PermissionDenied
from django.db.models import (
    Avg,
    Case,
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    FloatField,
    IntegerField,
    Max,
    Min,
    OuterRef,
    Q,
    Subquery,
    TextField,
    Value,
    When,
)
from django.db.models.fields.json import KeyTextTransform, KeyTransform
from django.db.models.functions import Abs, Cast, NullIf, TruncDate, TruncHour
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone

from . import charts
from .models import AnswerSource, Prediction, PredictionStatus, Predictor

RANGES = (1, 7, 30, 90)
DEFAULT_DAYS = 30
PERMISSION = "gateway.view_prediction"
MAX_GROUPS = 20
MAX_VERSIONS = 30
# Time-to-decision histogram edges, in seconds (the last bucket is open: "over 7 days").
TTD_EDGES = (10, 30, 60, 120, 300, 600, 900, 1800, 2700, 3600, 5400, 7200, 10800, 14400, 21600, 28800,
             43200, 86400, 172800, 259200, 604800)
# Tasks a waiting client's answer depends on: their time to decision is the one the SLA bounds.
WAITING_KINDS = ("routed", "low_confidence", "adjudication")
# PSI: under 0.1 stable, 0.1-0.25 a moderate shift, over 0.25 a large one.
PSI_MODERATE, PSI_LARGE = 0.1, 0.25
WIDE = 1100  # viewBox width of the full-width charts (traffic, drift)
SLA_COLOUR = "#555555"

SOURCE_SERIES = (
    ("human", "Human", charts.BLUE),
    ("rule", "Rule", charts.ORANGE),
    ("model", "Model", charts.GREEN),
    ("provisional", "Provisional", charts.PURPLE),
    ("unanswered", "Unanswered (pending or expired)", charts.GREY),
)
KIND_ORDER = ("appeal", "adjudication", "low_confidence", "routed", "qa_sample")


# -- the window -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Window:
    days: int
    hourly: bool
    since: datetime
    buckets: tuple  # dates (daily) or aware datetimes (hourly), oldest first

    def trunc(self, field: str):
        return TruncHour(field) if self.hourly else TruncDate(field)

    def label(self, bucket) -> str:
        return bucket.strftime("%H:00") if self.hourly else bucket.strftime("%b %-d")

    def key(self, bucket):
        """A bucket as the database returns it, in the form of `buckets`."""
        if bucket is None:
            return None
        if self.hourly:
            return timezone.localtime(bucket).replace(minute=0, second=0, microsecond=0) if timezone.is_aware(bucket) else bucket
        return bucket.date() if isinstance(bucket, datetime) else bucket

    @property
    def labels(self) -> list[str]:
        return [self.label(b) for b in self.buckets]

    @property
    def unit(self) -> str:
        return "hour" if self.hourly else "day"

    @property
    def description(self) -> str:
        return "the last 24 hours" if self.hourly else f"the last {self.days} days"


def dashboard_window(days: int = DEFAULT_DAYS, now=None) -> Window:
    now = timezone.localtime(now or timezone.now())
    if days == 1:
        last = now.replace(minute=0, second=0, microsecond=0)
        buckets = tuple(last - timedelta(hours=23 - i) for i in range(24))
        return Window(days=1, hourly=True, since=buckets[0], buckets=buckets)
    today = now.date()
    dates = tuple(today - timedelta(days=days - 1 - i) for i in range(days))
    since = timezone.make_aware(datetime.combine(dates[0], time.min), timezone.get_current_timezone())
    return Window(days=days, hourly=False, since=since, buckets=dates)


def _days_param(raw) -> int:
    try:
        days = int(raw)
    except (TypeError, ValueError):
        return DEFAULT_DAYS
    return days if days in RANGES else DEFAULT_DAYS


def _json_number(text):
    """A JSON value read as text (KeyTextTransform), as a float; JSON null is NULL in both
    databases (SQLite's JSON extraction gives the text 'null' for it, which CAST makes 0)."""
    return Cast(NullIf(text, Value("null")), FloatField())


def _rate(part, whole):
    return part / whole if whole else None


def _pct(value) -> str:
    return charts.percent(value)


def _table(columns: list[str], rows: list[list], caption: str = "") -> dict:
    return {"columns": columns, "rows": [[("–" if c is None else c) for c in row] for row in rows], "caption": caption}


def _panel(key: str, title: str, *, chart=None, table=None, empty: str = "", legend=None, note: str = "", wide=False, extra=None) -> dict:
    return {"key": key, "title": title, "chart": chart, "table": table, "empty": empty, "legend": legend or [],
            "note": note, "wide": wide, "extra": extra}


# -- traffic ----------------------------------------------------------------------------------

def traffic(predictor: Predictor, window: Window) -> dict:
    """Predictions created per bucket, split by who answered. One query."""
    rows = (
        Prediction.objects.filter(predictor=predictor, created_at__gte=window.since)
        .annotate(bucket=window.trunc("created_at"))
        .values("bucket", "source", "provisional")
        .annotate(n=Count("id"))
        .order_by()
    )
    return _per_bucket(rows, window, SOURCE_SERIES,
                       lambda row: "provisional" if row["provisional"] else (row["source"] or "unanswered"))


def _per_bucket(rows, window: Window, series_defs, series_of) -> dict:
    """Counted rows ({"bucket", "n", …}) as one list of counts per series and bucket, with
    each series' total and the grand total; rows of a series not in `series_defs` are left out."""
    index = {b: i for i, b in enumerate(window.buckets)}
    values = {key: [0] * len(window.buckets) for key, _, _ in series_defs}
    for row in rows:
        i = index.get(window.key(row["bucket"]))
        series = values.get(series_of(row))
        if i is not None and series is not None:
            series[i] += row["n"]
    totals = {key: sum(v) for key, v in values.items()}
    return {"values": values, "totals": totals, "total": sum(totals.values())}


def _stacked_series(data: dict, window: Window, series_defs) -> tuple[list, list, dict]:
    """The series, legend and table (one row per bucket, then the totals) of a stacked-bar
    panel over `_per_bucket`'s counts."""
    series = [{"name": name, "color": colour, "values": data["values"][key]} for key, name, colour in series_defs]
    legend = [{"name": name, "color": colour, "total": data["totals"][key]} for key, name, colour in series_defs]
    table = _table(
        [window.unit, *[name for _, name, _ in series_defs], "total"],
        [[label, *[data["values"][k][i] for k, _, _ in series_defs], sum(data["values"][k][i] for k, _, _ in series_defs)]
         for i, label in enumerate(window.labels)]
        + [["total", *[data["totals"][k] for k, _, _ in series_defs], data["total"]]],
    )
    return series, legend, table


def traffic_panel(data: dict, window: Window) -> dict:
    series, legend, table = _stacked_series(data, window, SOURCE_SERIES)
    if not data["total"]:
        return _panel("traffic", "Traffic by source", empty=f"No predictions in {window.description}.", table=table, wide=True)
    chart = charts.stacked_bars(
        chart_id="oz-chart-traffic", title=f"Predictions per {window.unit} by source",
        desc=f"Stacked bars: predictions created per {window.unit} over {window.description}, split into human, rule, model, "
             f"provisional and unanswered. {data['total']} in all.",
        labels=window.labels, series=series, width=WIDE, height=260,
    )
    return _panel("traffic", "Traffic by source", chart=chart, table=table, legend=legend, wide=True)


# -- the queue --------------------------------------------------------------------------------

def _ttd_bins(sla: int | None) -> list[float]:
    edges = set(TTD_EDGES)
    if sla:
        edges.add(float(sla))
    return sorted(edges)


def _percentile(counts: list[int], edges: list[float], q: float) -> float | None:
    """The q-quantile of a histogram (bucket i holds values in (edges[i-1], edges[i]]; the
    last bucket is everything over the last edge), by linear interpolation inside a bucket."""
    n = sum(counts)
    if not n:
        return None
    rank = q * n
    seen = 0
    for i, c in enumerate(counts):
        if c and seen + c >= rank:
            lo = edges[i - 1] if i > 0 else 0.0
            if i >= len(edges):  # open-ended: report the lower edge
                return lo
            return lo + (edges[i] - lo) * (rank - seen) / c
        seen += c
    return edges[-1]


def queue(predictor: Predictor, window: Window) -> dict:
    """Open tasks by kind now; tasks created and decided per bucket; the time-to-decision
    histogram of the waiting kinds per bucket. Three queries."""
    from review.models import ReviewTask, TaskStatus

    open_rows = (
        ReviewTask.objects.filter(predictor=predictor, status__in=[TaskStatus.OPEN, TaskStatus.CLAIMED])
        .values("kind")
        .annotate(open=Count("id", filter=Q(status=TaskStatus.OPEN)), claimed=Count("id", filter=Q(status=TaskStatus.CLAIMED)),
                  oldest=Min("created_at"))
        .order_by()
    )
    by_kind = {row["kind"]: row for row in open_rows}
    index = {b: i for i, b in enumerate(window.buckets)}
    created = [0] * len(window.buckets)
    for row in (ReviewTask.objects.filter(predictor=predictor, created_at__gte=window.since)
                .annotate(bucket=window.trunc("created_at")).values("bucket").annotate(n=Count("id")).order_by()):
        i = index.get(window.key(row["bucket"]))
        if i is not None:
            created[i] += row["n"]

    sla = getattr(getattr(predictor, "routing", None), "human_sla_seconds", None)
    edges = _ttd_bins(sla)
    waited = ExpressionWrapper(F("decided_at") - F("created_at"), output_field=DurationField())
    bin_of = Case(*[When(waited__lte=timedelta(seconds=edge), then=Value(i)) for i, edge in enumerate(edges)],
                  default=Value(len(edges)), output_field=IntegerField())
    decided = [0] * len(window.buckets)
    hist = [[0] * (len(edges) + 1) for _ in window.buckets]
    rows = (
        ReviewTask.objects.filter(predictor=predictor, status=TaskStatus.DECIDED, decided_at__gte=window.since)
        .annotate(bucket=window.trunc("decided_at"), waited=waited)
        .annotate(bin=bin_of, waiting=Case(When(kind__in=WAITING_KINDS, then=Value(1)), default=Value(0), output_field=IntegerField()))
        .values("bucket", "waiting", "bin")
        .annotate(n=Count("id"))
        .order_by()
    )
    for row in rows:
        i = index.get(window.key(row["bucket"]))
        if i is None:
            continue
        decided[i] += row["n"]
        if row["waiting"]:
            hist[i][row["bin"]] += row["n"]
    total_hist = [sum(h[j] for h in hist) for j in range(len(edges) + 1)]
    within = None
    if sla:
        within = sum(c for j, c in enumerate(total_hist) if j < len(edges) and edges[j] <= sla)
    return {
        "by_kind": by_kind, "created": created, "decided": decided, "sla": sla, "edges": edges,
        "median": [_percentile(h, edges, 0.5) for h in hist], "p90": [_percentile(h, edges, 0.9) for h in hist],
        "timed": [sum(h) for h in hist], "within_sla": within, "timed_total": sum(total_hist),
        "overall_median": _percentile(total_hist, edges, 0.5), "overall_p90": _percentile(total_hist, edges, 0.9),
    }


def queue_panels(data: dict, window: Window, now) -> list[dict]:
    kinds = [k for k in KIND_ORDER if k in data["by_kind"]] + [k for k in data["by_kind"] if k not in KIND_ORDER]
    rows = [data["by_kind"][k] for k in kinds]
    open_table = _table(
        ["kind", "open", "claimed", "oldest waiting"],
        [[k, r["open"], r["claimed"], charts.duration((now - r["oldest"]).total_seconds()) if r["oldest"] else None]
         for k, r in zip(kinds, rows, strict=True)]
        + [["total", sum(r["open"] for r in rows), sum(r["claimed"] for r in rows), None]],
    )
    depth_series = [{"name": "open", "color": charts.BLUE}, {"name": "claimed", "color": charts.ORANGE}]
    if rows:
        depth = _panel("queue-now", "Queue now: open tasks by kind", table=open_table, legend=depth_series, chart=charts.hbars(
            chart_id="oz-chart-queue-now", title="Open review tasks by kind",
            desc="Horizontal bars: tasks waiting (open) and being worked on (claimed) right now, per kind: "
                 + ", ".join(f"{k} {r['open']} open and {r['claimed']} claimed" for k, r in zip(kinds, rows, strict=True)) + ".",
            rows=[{"label": k, "values": [r["open"], r["claimed"]]} for k, r in zip(kinds, rows, strict=True)], series=depth_series,
        ))
    else:
        depth = _panel("queue-now", "Queue now: open tasks by kind", table=open_table,
                       empty="The queue is empty: no open or claimed tasks.")

    flow_table = _table([window.unit, "created", "decided"],
                        [[label, c, d] for label, c, d in zip(window.labels, data["created"], data["decided"], strict=True)]
                        + [["total", sum(data["created"]), sum(data["decided"])]])
    flow_series = [{"name": "created", "color": charts.BLUE, "values": data["created"]},
                   {"name": "decided", "color": charts.GREEN, "values": data["decided"], "dashed": True}]
    if sum(data["created"]) or sum(data["decided"]):
        flow = _panel("queue-flow", f"Tasks created and decided per {window.unit}", table=flow_table, legend=flow_series,
                      chart=charts.lines(
                          chart_id="oz-chart-queue-flow", title=f"Review tasks created and decided per {window.unit}",
                          desc=f"Two lines over {window.description}: {sum(data['created'])} tasks created, "
                               f"{sum(data['decided'])} decided. Created above decided means the queue is growing.",
                          labels=window.labels, series=flow_series,
                      ))
    else:
        flow = _panel("queue-flow", f"Tasks created and decided per {window.unit}", table=flow_table,
                      empty=f"No review tasks created or decided in {window.description}.")

    sla = data["sla"]
    ttd_table = _table([window.unit, "decided (waiting kinds)", "median", "p90"],
                       [[label, n, charts.duration(m) if n else None, charts.duration(p) if n else None]
                        for label, n, m, p in zip(window.labels, data["timed"], data["median"], data["p90"], strict=True)]
                       + [["all", data["timed_total"], charts.duration(data["overall_median"]), charts.duration(data["overall_p90"])]])
    sla_text = (f"SLA {charts.duration(sla)}: {data['within_sla']} of {data['timed_total']} decided within it "
                f"({_pct(_rate(data['within_sla'], data['timed_total']))})." if sla else "No SLA is set in the routing flag.")
    ttd_series = [{"name": "median", "color": charts.BLUE, "values": data["median"]},
                  {"name": "90th percentile", "color": charts.VERMILLION, "values": data["p90"], "dashed": True}]
    note = (f"{sla_text} Time from a task's creation to its decision, for routed, low-confidence and adjudication tasks "
            "(the ones a waiting client depends on). Percentiles are read from a histogram counted in SQL, so they are "
            "estimates good to the width of the bucket.")
    if data["timed_total"]:
        reference = {"value": sla, "name": f"SLA {charts.duration(sla)}", "color": SLA_COLOUR} if sla else None
        ttd = _panel("time-to-decision", "Time to decision", table=ttd_table, note=note,
                     legend=ttd_series + ([{"name": "SLA", "color": SLA_COLOUR, "dashed": True}] if sla else []),
                     chart=charts.lines(
                         chart_id="oz-chart-ttd", title=f"Time to decision per {window.unit}: median and 90th percentile",
                         desc=f"Lines of the median and 90th percentile time from task creation to decision over {window.description}; "
                              f"overall median {charts.duration(data['overall_median'])}, p90 {charts.duration(data['overall_p90'])}. "
                              + sla_text,
                         labels=window.labels, series=ttd_series, fmt=charts.duration, reference=reference,
                         ceiling=charts.duration_ceiling,
                     ))
    else:
        ttd = _panel("time-to-decision", "Time to decision", table=ttd_table, note=note,
                     empty=f"No routed, low-confidence or adjudication task was decided in {window.description}.")
    return [depth, flow, ttd]


# -- agreement and appeals ----------------------------------------------------------------------

def agreement(predictor: Predictor, window: Window) -> dict:
    """Per model version, over its shadow predictions in the window that a human has decided
    since: how many, and how many said what the human's current label says; plus the QA
    samples decided in the window. Two queries."""
    from models_registry.models import ShadowPrediction
    from models_registry.shadow import HUMAN_LABEL_SOURCES, shadow_tolerance
    from review.models import Label, ReviewTask, TaskKind, TaskStatus

    human = Label.objects.filter(
        prediction_id=OuterRef("prediction_id"), superseded_by__isnull=True, source__in=HUMAN_LABEL_SOURCES
    ).order_by("-id").values("target")[:1]
    shadows = (
        ShadowPrediction.objects.filter(model_version__predictor=predictor, error="", created_at__gte=window.since)
        .annotate(human=Subquery(human))
        .exclude(human__isnull=True)
    )
    if predictor.is_classification:
        shadows = shadows.annotate(said=Cast("output", TextField()), truth=Cast("human", TextField()))
        same = Q(said=F("truth"))
    else:
        tolerance = shadow_tolerance(predictor) or 1e-9
        shadows = shadows.annotate(gap=Abs(Cast("output", FloatField()) - Cast("human", FloatField())))
        same = Q(gap__lte=tolerance)
    rows = list(
        shadows.values("model_version__version", "model_version__stage")
        .annotate(n=Count("id"), agreeing=Count("id", filter=same))
        .order_by("model_version__version")
    )
    qa = ReviewTask.objects.filter(
        predictor=predictor, kind=TaskKind.QA_SAMPLE, status=TaskStatus.DECIDED, decided_at__gte=window.since
    ).aggregate(
        n=Count("id"),
        confirmed=Count("id", filter=Q(prediction__source__in=[AnswerSource.RULE, AnswerSource.MODEL])),
        confirmed_model=Count("id", filter=Q(prediction__source=AnswerSource.MODEL)),
    )
    return {"versions": rows, "qa": qa}


def appeals_by_version(predictor: Predictor, window: Window) -> list[dict]:
    """Appeal and overturn rates of the answers given to predictions created in the window,
    by the source and model version appealed against (as `review.appeals.appeal_rates`,
    limited to the window). Two queries."""
    from review.models import Appeal, AppealStatus

    answered = (
        Prediction.objects.filter(predictor=predictor, created_at__gte=window.since, answered_at__isnull=False)
        .values("source", "model_version").annotate(answers=Count("id")).order_by()
    )
    appeals = (
        Appeal.objects.filter(prediction__predictor=predictor, prediction__created_at__gte=window.since)
        .values("original_source", "original_model_version")
        .annotate(appeals=Count("id"), overturned=Count("id", filter=Q(status=AppealStatus.OVERTURNED)),
                  open=Count("id", filter=Q(status=AppealStatus.OPEN)))
        .order_by()
    )
    by_key = {(a["original_source"], a["original_model_version"]): a for a in appeals}
    out = []
    for row in answered:
        a = by_key.pop((row["source"], row["model_version"]), {})
        out.append(_appeal_row(row["source"], row["model_version"], row["answers"], a))
    for (source, version), a in by_key.items():
        out.append(_appeal_row(source, version, 0, a))
    return sorted(out, key=lambda r: (r["source"] or "", r["model_version"] or 0))


def _appeal_row(source, version, answers, a) -> dict:
    appeals, overturned, still_open = a.get("appeals", 0), a.get("overturned", 0), a.get("open", 0)
    return {"source": source or "unanswered", "model_version": version, "answers": answers, "appeals": appeals,
            "overturned": overturned, "open": still_open, "appeal_rate": _rate(appeals, answers),
            "overturn_rate": _rate(overturned, appeals - still_open)}


def agreement_panels(data: dict, appeal_rows: list[dict], window: Window) -> list[dict]:
    versions = data["versions"]
    table = _table(["model version", "stage", "shadowed and decided", "agreeing", "agreement"],
                   [[f"v{r['model_version__version']}", r["model_version__stage"], r["n"], r["agreeing"],
                     _pct(_rate(r["agreeing"], r["n"]))]
                    for r in versions])
    qa = data["qa"]
    qa_note = (f"QA samples decided in {window.description}: {qa['n']}; the reviewer confirmed {qa['confirmed']} "
               f"({_pct(_rate(qa['confirmed'], qa['n']))}) and corrected {qa['n'] - qa['confirmed']}. A corrected answer is now "
               "a human one (an overturned appeal counts as a correction too).") if qa["n"] else \
        f"No QA samples decided in {window.description}."
    series = [{"name": "agreement with the human label", "color": charts.GREEN}]
    if versions:
        agree = _panel("agreement", "Model-human agreement (shadow traffic)", table=table, note=qa_note, chart=charts.hbars(
            chart_id="oz-chart-agreement", title="Model-human agreement by model version",
            desc="Share of each version's shadow predictions that match the reviewers' current label: "
                 + "; ".join(f"v{r['model_version__version']} {_pct(_rate(r['agreeing'], r['n']))} of {r['n']}" for r in versions) + ".",
            rows=[{"label": f"v{r['model_version__version']} ({r['model_version__stage']}), n={r['n']}",
                   "values": [_rate(r["agreeing"], r["n"])]} for r in versions],
            series=series, fmt=charts.percent, top_value=1.0, label_width=190,
        ))
    else:
        agree = _panel("agreement", "Model-human agreement (shadow traffic)", table=table, note=qa_note,
                       empty=f"No shadow prediction in {window.description} has a human decision to compare with "
                             "(turn on `shadow` in the routing flag while reviewers answer).")

    appeal_table = _table(
        ["source", "model version", "answers", "appeals", "overturned", "open", "appeal rate", "overturn rate"],
        [[r["source"], f"v{r['model_version']}" if r["model_version"] else None, r["answers"], r["appeals"], r["overturned"], r["open"],
          _pct(r["appeal_rate"]), _pct(r["overturn_rate"])] for r in appeal_rows],
    )
    appeal_series = [{"name": "appeal rate (appeals / answers)", "color": charts.ORANGE},
                     {"name": "overturn rate (overturned / decided appeals)", "color": charts.VERMILLION}]
    if any(r["appeals"] for r in appeal_rows):
        rates = [v for r in appeal_rows for v in (r["appeal_rate"], r["overturn_rate"]) if v is not None]
        appeal = _panel("appeals", "Appeals and overturns by source and version", table=appeal_table, legend=appeal_series,
                        note="Answers to predictions created in the window, and the appeals against them (by the answer appealed).",
                        chart=charts.hbars(
                            chart_id="oz-chart-appeals", title="Appeal and overturn rates by source and model version",
                            desc="Pairs of bars per answer source: "
                                 + "; ".join(f"{_label_source(r)} appeal rate {_pct(r['appeal_rate'])}, "
                                             f"overturn rate {_pct(r['overturn_rate'])}"
                                             for r in appeal_rows) + ".",
                            rows=[{"label": _label_source(r), "values": [r["appeal_rate"], r["overturn_rate"]]} for r in appeal_rows],
                            series=appeal_series, fmt=charts.percent, top_value=min(1.0, charts.nice_ceiling(max(rates, default=0))),
                        ))
    else:
        appeal = _panel("appeals", "Appeals and overturns by source and version", table=appeal_table,
                        empty=f"No appeals against answers to predictions made in {window.description}.")
    return [agree, appeal]


def _label_source(row) -> str:
    return f"{row['source']} v{row['model_version']}" if row["model_version"] else row["source"]


# -- labels -------------------------------------------------------------------------------------

LABEL_SOURCE_SERIES = (
    ("review", "Review", charts.BLUE),
    ("low_confidence", "Low-confidence review", charts.SKY),
    ("qa", "QA sample", charts.GREEN),
    ("adjudication", "Adjudication", charts.PURPLE),
    ("appeal", "Appeal", charts.VERMILLION),
    ("outcome", "Outcome reported by the client", charts.ORANGE),
    ("import", "Import", charts.GREY),
)


def labels_collected(predictor: Predictor, window: Window) -> dict:
    """Labels recorded per bucket by source (superseded ones too: they were collected then),
    and, for a label output, the mix of targets in the current labels, the set the next
    training run reads (before it leaves out what the current schema no longer accepts).
    Two queries."""
    from review.models import Label
    from review.selectors import labels_current

    rows = (
        Label.objects.filter(predictor=predictor, created_at__gte=window.since)
        .annotate(bucket=window.trunc("created_at"))
        .values("bucket", "source")
        .annotate(n=Count("id"))
        .order_by()
    )
    collected = _per_bucket(rows, window, LABEL_SOURCE_SERIES, lambda row: row["source"])
    current = labels_current(predictor=predictor)
    mix = None
    if predictor.is_classification:
        # The output's labels in their order, then any other target (one a former output spec
        # allowed): each shown as its JSON text, so 1, true and {"a": 1} neither collide nor fail.
        counts: dict[str, int] = {}
        for row in current.values("target").annotate(n=Count("id")).order_by():
            target = row["target"]
            key = target if isinstance(target, str) else json.dumps(target, sort_keys=True)
            counts[key] = counts.get(key, 0) + row["n"]
        declared = [str(t) for t in predictor.output_spec.get("labels", [])]
        mix = [(t, counts.get(t, 0)) for t in declared] + sorted((t, n) for t, n in counts.items() if t not in declared)
        n_current = sum(counts.values())
    else:
        n_current = current.count()
    return {**collected, "current": n_current, "mix": mix}


def labels_panels(data: dict, window: Window) -> list[dict]:
    series, legend, table = _stacked_series(data, window, LABEL_SOURCE_SERIES)
    title = "Labels collected by source"
    if data["total"]:
        flow = _panel("labels", title, table=table, legend=legend, chart=charts.stacked_bars(
            chart_id="oz-chart-labels", title=f"Labels recorded per {window.unit} by source",
            desc=f"Stacked bars: labels recorded per {window.unit} over {window.description}, by where they came from: "
                 + ", ".join(f"{name} {data['totals'][key]}" for key, name, _ in LABEL_SOURCE_SERIES) + f"; {data['total']} in all.",
            labels=window.labels, series=series,
        ), note="Every answer a person or a client gave, including those a later label corrected.")
    else:
        flow = _panel("labels", title, table=table, empty=f"No labels recorded in {window.description}: reviewers' decisions, "
                      "appeals and reported outcomes become labels.")

    mix_title = "Label mix of the current labels"
    current = data["current"]
    if data["mix"] is None:
        mix = _panel("label-mix", mix_title,
                     empty=f"A number output: {current:,} current labels. Their distribution is in the dataset export.")
    elif not current:
        mix = _panel("label-mix", mix_title, empty="No current labels yet: the next training run would have nothing to read.")
    else:
        rows = [{"label": target, "values": [n / current]} for target, n in data["mix"]]
        mix = _panel(
            "label-mix", mix_title,
            table=_table(["label", "current labels", "share"], [[t, n, _pct(n / current)] for t, n in data["mix"]]),
            note=f"All {current:,} current labels, whenever recorded (a corrected label is replaced by its correction): what "
                 "training reads, less any the current schema no longer accepts. A label far rarer than the others is one "
                 "the model will learn poorly.",
            chart=charts.hbars(
                chart_id="oz-chart-label-mix", title="Share of each label in the current labels",
                desc="Horizontal bars: " + "; ".join(f"{t} {_pct(n / current)} ({n})" for t, n in data["mix"]) + ".",
                rows=rows, series=[{"name": "share of current labels", "color": charts.BLUE}], fmt=charts.percent,
                top_value=min(1.0, charts.nice_ceiling(max(n / current for _, n in data["mix"]))),
            ),
        )
    return [flow, mix]


# -- training -----------------------------------------------------------------------------------

def training_panel(predictor: Predictor, user) -> dict:
    """The headline metrics of the predictor's versions (the last MAX_VERSIONS). One query."""
    from models_registry.admin import HEADLINE_METRICS, _flatten, _is_number
    from models_registry.models import ModelVersion

    versions = list(
        ModelVersion.objects.filter(predictor=predictor).order_by("-version").values("version", "stage", "metrics")[:MAX_VERSIONS]
    )
    versions.reverse()
    flats = [(v, _flatten(v["metrics"])) for v in versions]
    names = [n for n in HEADLINE_METRICS if any(_is_number(f.get(n)) for _, f in flats)]
    link = None
    if user.has_perm("models_registry.view_trainingrun"):
        link = reverse("admin:models_registry_trainingrun_chart", args=[predictor.slug])
    table = _table(["version", "stage", *names],
                   [[f"v{v['version']}", v["stage"], *[f"{f[n]:.4g}" if _is_number(f.get(n)) else None for n in names]] for v, f in flats])
    extra = {"link": link, "link_text": "Every metric over versions"} if link else None
    if not names:
        return _panel("training", "Training metrics by version", table=table, extra=extra,
                      empty="No model versions with metrics yet: train one and its holdout metrics appear here.")
    palette = [charts.BLUE, charts.GREEN, charts.ORANGE, charts.PURPLE]
    bounded = all(n in ("accuracy", "f1_macro", "r2") for n in names)
    series = [{"name": n, "color": palette[i % len(palette)], "values": [f.get(n) if _is_number(f.get(n)) else None for _, f in flats],
               "dashed": i % 2 == 1} for i, n in enumerate(names)]
    chart = charts.lines(
        chart_id="oz-chart-training", title="Holdout metrics by model version",
        desc=f"Lines of {', '.join(names)} over versions v{flats[0][0]['version']} to v{flats[-1][0]['version']}; "
             + "; ".join(f"v{v['version']} " + ", ".join(f"{n} {f[n]:.3g}" for n in names if _is_number(f.get(n))) for v, f in flats) + ".",
        labels=[f"v{v['version']}" for v, _ in flats], series=series, fmt=(lambda x: f"{x:.2g}") if bounded else charts.number,
    )
    return _panel("training", "Training metrics by version", chart=chart, table=table, legend=series, extra=extra)


# -- drift ------------------------------------------------------------------------------------

def _fields(predictor: Predictor) -> list[str]:
    return list(predictor.schema)


def drift(predictor: Predictor, window: Window) -> dict:
    """Per bucket of window_end and per input field, the largest PSI of the drift reports in
    that bucket, and how many reports (and alerts). One query."""
    from models_registry.models import DriftReport

    names = _fields(predictor)
    psi = {f"psi_{i}": Max(_json_number(KeyTextTransform("psi", KeyTransform(name, "fields")))) for i, name in enumerate(names)}
    rows = (
        DriftReport.objects.filter(predictor=predictor, window_end__gte=window.since)
        .annotate(bucket=window.trunc("window_end"))
        .values("bucket")
        .annotate(reports=Count("id"), alerts=Count("id", filter=Q(alert=True)), **psi)
        .order_by()
    )
    index = {b: i for i, b in enumerate(window.buckets)}
    matrix = [[None] * len(window.buckets) for _ in names]
    reports = [0] * len(window.buckets)
    alerts = [0] * len(window.buckets)
    for row in rows:
        j = index.get(window.key(row["bucket"]))
        if j is None:
            continue
        reports[j] += row["reports"]
        alerts[j] += row["alerts"]
        for i in range(len(names)):
            value = row[f"psi_{i}"]
            if value is not None:
                matrix[i][j] = value if matrix[i][j] is None else max(matrix[i][j], value)
    return {"names": names, "matrix": matrix, "reports": reports, "alerts": alerts}


def psi_colour(value: float) -> str:
    """Green (stable) through yellow (0.1) and orange (0.25) to red (0.5 and over)."""
    stops = [(0.0, (237, 248, 233)), (PSI_MODERATE, (255, 237, 111)), (PSI_LARGE, (244, 142, 52)), (0.5, (200, 30, 30))]
    value = max(0.0, min(value, 0.5))
    for (a, ca), (b, cb) in pairwise(stops):
        if value <= b:
            t = (value - a) / (b - a)
            return "#%02x%02x%02x" % tuple(round(x + (y - x) * t) for x, y in zip(ca, cb, strict=True))  # noqa: UP031
    return "#c81e1e"


def drift_panel(data: dict, window: Window) -> dict:
    used = [j for j in range(len(window.buckets)) if data["reports"][j]]
    # Fields no report measured (free text, say) are left out once there are reports.
    keep = [i for i, row in enumerate(data["matrix"]) if any(v is not None for v in row)] or range(len(data["names"]))
    names, matrix = [data["names"][i] for i in keep], [data["matrix"][i] for i in keep]
    table = _table([window.unit, "reports", "alerts", *names],
                   [[window.labels[j], data["reports"][j], data["alerts"][j],
                     *[f"{matrix[i][j]:.3f}" if matrix[i][j] is not None else None for i in range(len(names))]] for j in used])
    legend = [{"name": f"PSI {label}", "color": psi_colour(v)} for label, v in
              (("< 0.1 stable", 0.02), ("0.1 moderate", PSI_MODERATE), ("0.25 large", PSI_LARGE), ("≥ 0.5", 0.5))]
    if not used:
        return _panel("drift", "Drift per field (PSI)", table=table, wide=True,
                      empty=f"No drift reports in {window.description}. The periodic drift task writes them once a champion "
                            "has reference statistics and live traffic to compare.")
    worst = max(((matrix[i][j], names[i], window.labels[j]) for i in range(len(names)) for j in used if matrix[i][j] is not None),
                default=None)
    chart = charts.heatmap(
        chart_id="oz-chart-drift", title="Population stability index per input field and " + window.unit,
        desc=f"Heat map: rows are input fields, columns are {window.unit}s of {window.description}, colour is the largest PSI "
             f"of that {window.unit}'s drift reports (green stable, red large). "
             f"{sum(data['reports'])} reports, {sum(data['alerts'])} alerts."
             + (f" Highest: {worst[1]} {worst[0]:.3f} on {worst[2]}." if worst else ""),
        rows=names, cols=window.labels, values=matrix, color=psi_colour, fmt=lambda v: f"PSI {v:.3f}", width=WIDE,
    )
    return _panel("drift", "Drift per field (PSI)", chart=chart, table=table, legend=legend, wide=True,
                  note="Each cell is the largest PSI among the drift reports whose window ended in it; hatched cells had no report.")


# -- explanations -------------------------------------------------------------------------------

def explanations(predictor: Predictor, window: Window) -> dict:
    """Mean contribution, mean |contribution| and count per input field over the explanation
    samples of the window. One query."""
    from models_registry.models import ExplanationSample

    names = _fields(predictor)
    aggregates = {"n": Count("id"), "v_min": Min("model_version"), "v_max": Max("model_version")}
    for i, name in enumerate(names):
        value = _json_number(KeyTextTransform(name, "contributions"))
        aggregates[f"mean_{i}"] = Avg(value)
        aggregates[f"abs_{i}"] = Avg(Abs(value))
        aggregates[f"n_{i}"] = Count(value)
    row = ExplanationSample.objects.filter(predictor=predictor, created_at__gte=window.since).aggregate(**aggregates)
    fields = [{"name": name, "mean": row[f"mean_{i}"], "abs": row[f"abs_{i}"], "n": row[f"n_{i}"]} for i, name in enumerate(names)]
    fields = sorted((f for f in fields if f["n"]), key=lambda f: -(f["abs"] or 0))
    return {"n": row["n"], "fields": fields, "versions": (row["v_min"], row["v_max"])}


def explanation_panel(data: dict, window: Window) -> dict:
    fields = data["fields"]
    table = _table(["field", "mean |contribution|", "mean contribution", "samples"],
                   [[f["name"], f"{f['abs']:.4f}", f"{f['mean']:+.4f}", f["n"]] for f in fields])
    if not data["n"] or not fields:
        return _panel("explanations", "Average explanation per field", table=table,
                      empty=f"No explained model answers in {window.description}.")
    lo, hi = data["versions"]
    versions = f"v{lo}" if lo == hi else f"v{lo}–v{hi}"
    series = [{"name": "mean |contribution| (how much the field moves answers)", "color": charts.BLUE},
              {"name": "mean contribution (which way, on average)", "color": charts.ORANGE}]
    chart = charts.hbars(
        chart_id="oz-chart-explanations", title="Average contribution per input field",
        desc=f"Pairs of bars per field over {data['n']} explained answers of {versions}: "
             + "; ".join(f"{f['name']} mean |c| {f['abs']:.3f}, mean c {f['mean']:+.3f}" for f in fields) + ".",
        rows=[{"label": f["name"], "values": [f["abs"], f["mean"]]} for f in fields], series=series,
        fmt=lambda v: f"{v:+.3f}" if v < 0 else f"{v:.3f}",
    )
    return _panel("explanations", "Average explanation per field", chart=chart, table=table, legend=series,
                  note=f"{data['n']} explained answers of model {versions} in {window.description}; fields by mean |contribution|.")


# -- groups -------------------------------------------------------------------------------------

def groups(predictor: Predictor, window: Window) -> dict | None:
    """Per value of the sensitive attribute, over predictions created in the window: answers,
    favourable answers (the first label), answers by the model; appeals and overturns
    against them. Two queries; the MAX_GROUPS largest groups."""
    from review.models import Appeal, AppealStatus

    attr = predictor.sensitive_attribute
    if not attr:
        return None
    labels = (predictor.output_spec or {}).get("labels") or []
    favourable = labels[0] if predictor.is_classification and labels else None
    counts = {"answered": Count("id"), "model": Count("id", filter=Q(source=AnswerSource.MODEL))}
    if favourable is not None:
        counts["favourable"] = Count("id", filter=Q(output=favourable))
    else:
        counts["mean_output"] = Avg(Cast("output", FloatField()))
    rows = list(
        Prediction.objects.filter(predictor=predictor, created_at__gte=window.since,
                                  status__in=[PredictionStatus.ANSWERED, PredictionStatus.REVISED])
        .annotate(group=KeyTextTransform(attr, "input")).values("group").annotate(**counts).order_by("-answered")[:MAX_GROUPS]
    )
    appeals = {
        a["group"]: a for a in
        Appeal.objects.filter(prediction__predictor=predictor, prediction__created_at__gte=window.since)
        .annotate(group=KeyTextTransform(attr, "prediction__input")).values("group")
        .annotate(appeals=Count("id"), overturned=Count("id", filter=Q(status=AppealStatus.OVERTURNED)),
                  open=Count("id", filter=Q(status=AppealStatus.OPEN)))
        .order_by()
    }
    out = []
    for row in rows:
        a = appeals.get(row["group"], {})
        decided = a.get("appeals", 0) - a.get("open", 0)
        out.append({**row, "group": "(missing)" if row["group"] is None else str(row["group"]),
                    "rate": _rate(row.get("favourable", 0), row["answered"]) if favourable is not None else None,
                    "appeals": a.get("appeals", 0), "overturned": a.get("overturned", 0),
                    "appeal_rate": _rate(a.get("appeals", 0), row["answered"]), "overturn_rate": _rate(a.get("overturned", 0), decided)})
    return {"attribute": attr, "favourable": favourable, "rows": out}


def groups_panel(data: dict | None, window: Window) -> dict:
    title = "Outcomes by group"
    if data is None:
        return _panel("groups", title, empty="This predictor names no sensitive_attribute, so there are no groups to compare.")
    rows, fav = data["rows"], data["favourable"]
    title = f"Outcomes by {data['attribute']}"
    if fav is not None:
        columns = [data["attribute"], "answered", f"favourable ({fav})", "favourable rate", "by the model", "appeals", "overturned",
                   "appeal rate", "overturn rate"]
        body = [[r["group"], r["answered"], r["favourable"], _pct(r["rate"]), r["model"], r["appeals"], r["overturned"],
                 _pct(r["appeal_rate"]), _pct(r["overturn_rate"])] for r in rows]
    else:
        columns = [data["attribute"], "answered", "mean answer", "by the model", "appeals", "overturned", "appeal rate", "overturn rate"]
        body = [[r["group"], r["answered"], charts.number(r["mean_output"]) if r["mean_output"] is not None else None, r["model"],
                 r["appeals"], r["overturned"], _pct(r["appeal_rate"]), _pct(r["overturn_rate"])] for r in rows]
    table = _table(columns, body)
    if not rows:
        return _panel("groups", title, table=table, empty=f"No answered predictions in {window.description}.")
    rates = [r["rate"] for r in rows if r["rate"] is not None]
    gap = (max(rates) - min(rates)) if len(rates) > 1 else None
    note = (f"Favourable = “{fav}”, the first label. Gap between the highest and lowest favourable rate "
            f"(demographic parity difference): {_pct(gap)}." if fav is not None else "")
    if fav is not None:
        series = [{"name": f"favourable rate ({fav})", "color": charts.GREEN}, {"name": "appeal rate", "color": charts.ORANGE},
                  {"name": "overturn rate", "color": charts.VERMILLION}]
        values = [[r["rate"], r["appeal_rate"], r["overturn_rate"]] for r in rows]
        fmt, top = charts.percent, 1.0
    else:
        series = [{"name": "appeal rate", "color": charts.ORANGE}, {"name": "overturn rate", "color": charts.VERMILLION}]
        values = [[r["appeal_rate"], r["overturn_rate"]] for r in rows]
        fmt, top = charts.percent, 1.0
    chart = charts.hbars(
        chart_id="oz-chart-groups", title=f"Favourable, appeal and overturn rates by {data['attribute']}",
        desc=f"Bars per group of {data['attribute']} over answered predictions of {window.description}: "
             + "; ".join(f"{r['group']}: {r['answered']} answered" + (f", favourable {_pct(r['rate'])}" if fav is not None else "")
                         + f", appeal rate {_pct(r['appeal_rate'])}" for r in rows) + ".",
        rows=[{"label": f"{r['group']} (n={r['answered']})", "values": v} for r, v in zip(rows, values, strict=True)],
        series=series, fmt=fmt, top_value=top, label_width=170,
    )
    return _panel("groups", title, chart=chart, table=table, legend=series, note=note)


# -- the page -----------------------------------------------------------------------------------

def dashboard_context(predictor: Predictor, *, days: int, user, now=None) -> dict:
    now = now or timezone.now()
    window = dashboard_window(days, now)
    t = traffic(predictor, window)
    q = queue(predictor, window)
    a = agreement(predictor, window)
    appeal_rows = appeals_by_version(predictor, window)
    panels = [traffic_panel(t, window), *queue_panels(q, window, now), *agreement_panels(a, appeal_rows, window),
              *labels_panels(labels_collected(predictor, window), window), training_panel(predictor, user),
              drift_panel(drift(predictor, window), window),
              explanation_panel(explanations(predictor, window), window), groups_panel(groups(predictor, window), window)]
    shadow_n = sum(r["n"] for r in a["versions"])
    shadow_ok = sum(r["agreeing"] for r in a["versions"])
    answered = sum(r["answers"] for r in appeal_rows)
    appeals = sum(r["appeals"] for r in appeal_rows)
    open_now = sum(r["open"] + r["claimed"] for r in q["by_kind"].values())
    cards = [
        {"label": "predictions", "value": f"{t['total']:,}", "hint": window.description},
        {"label": "answered by the model", "value": _pct(_rate(t["totals"]["model"], t["total"])),
         "hint": f"{t['totals']['model']:,} answers"},
        {"label": "open review tasks", "value": f"{open_now:,}", "hint": "now"},
        {"label": "median time to decision", "value": charts.duration(q["overall_median"]),
         "hint": f"p90 {charts.duration(q['overall_p90'])}" + (f", SLA {charts.duration(q['sla'])}" if q["sla"] else "")},
        {"label": "model-human agreement", "value": _pct(_rate(shadow_ok, shadow_n)), "hint": f"{shadow_n:,} shadowed"},
        {"label": "appeal rate", "value": _pct(_rate(appeals, answered)), "hint": f"{appeals:,} appeals"},
    ]
    return {"predictor": predictor, "window": window, "panels": panels, "cards": cards, "now": now,
            "ranges": [{"days": d, "label": "24 hours" if d == 1 else f"{d} days", "current": d == window.days} for d in RANGES]}


def dashboard_allowed(user) -> bool:
    return bool(user.is_active and user.is_staff and user.has_perm(PERMISSION))


def dashboard_urls(modeladmin) -> list:
    """The dashboard's admin URLs, for PredictorAdmin.get_urls (before the model admin's own,
    whose "<object_id>/" would take "dashboard/")."""
    view = modeladmin.admin_site.admin_view
    prefix = f"{modeladmin.opts.app_label}_{modeladmin.opts.model_name}"
    return [
        path("dashboard/", view(lambda request: dashboard_index_view(modeladmin, request)), name=f"{prefix}_dashboards"),
        path("dashboard/<slug:slug>/", view(lambda request, slug: dashboard_view(modeladmin, request, slug)), name=f"{prefix}_dashboard"),
    ]


def _render(modeladmin, request, template: str, title: str, context: dict):
    site = modeladmin.admin_site
    context = {**site.each_context(request), "opts": modeladmin.opts, "title": title,
               "changelist_url": reverse(f"admin:{modeladmin.opts.app_label}_{modeladmin.opts.model_name}_changelist",
                                         current_app=site.name),
               "dashboards_url": reverse("admin:gateway_predictor_dashboards", current_app=site.name), **context}
    return TemplateResponse(request, template, context)


def dashboard_index_view(modeladmin, request):
    if not dashboard_allowed(request.user):
        raise PermissionDenied
    predictors = [{"slug": p.slug, "description": p.description, "mode": getattr(getattr(p, "routing", None), "mode", ""),
                   "url": reverse("admin:gateway_predictor_dashboard", args=[p.slug])}
                  for p in Predictor.objects.select_related("routing").order_by("slug")]
    return _render(modeladmin, request, "admin/gateway/dashboard/index.html", "Dashboards", {"predictors": predictors})


def _drift_alert(predictor: Predictor) -> dict | None:
    """The latest drift report when it raised the alert: which fields drifted, and how much."""
    from models_registry.models import DriftReport

    latest = DriftReport.objects.filter(predictor=predictor).only("alert", "fields", "window_end", "n_live").first()
    if latest is None or not latest.alert:
        return None
    drifted = sorted(
        ((name, stats.get("psi")) for name, stats in (latest.fields or {}).items() if isinstance(stats, dict) and stats.get("drifted")),
        key=lambda item: -(item[1] or 0),
    )
    return {"checked_at": latest.window_end, "n_live": latest.n_live,
            "fields": [{"name": name, "psi": psi} for name, psi in drifted]}


def dashboard_view(modeladmin, request, slug: str):
    if not dashboard_allowed(request.user):
        raise PermissionDenied
    predictor = get_object_or_404(Predictor.objects.select_related("routing"), slug=slug)
    context = dashboard_context(predictor, days=_days_param(request.GET.get("days")), user=request.user)
    context["change_url"] = reverse("admin:gateway_predictor_change", args=[predictor.pk])
    context["drift_alert"] = _drift_alert(predictor)
    return _render(modeladmin, request, "admin/gateway/dashboard/predictor.html", f"{predictor.slug}: dashboard", context)
