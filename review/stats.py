"""How well reviewers agree, and how fast the queue moves: the operators' review statistics.
Selectors only (reads), computed over a time window (default the last 7 days).

Agreement
- Per predictor, over consensus tasks (routed, low-confidence, QA sample) whose round of
  reviews completed in the window with two or more decisions: Fleiss' kappa, the observed
  agreement it corrects for chance (the mean share of agreeing reviewer pairs), the share of
  tasks on which every reviewer agreed, and how many went to adjudication. Fleiss' kappa
  needs the same number of raters per task; tasks normally have exactly `reviews_required`
  decisions, but the setting may change between tasks, so kappa and observed agreement use
  each task's first k decisions, k being the smallest number of decisions among the tasks
  (reported as `raters_per_task`). Unanimity and disputes count every decision.
- Per reviewer: Cohen's kappa (scikit-learn) between the reviewer's decisions and the
  settled answer of the same task (`ReviewTask.final_output`; for a disputed task, the
  adjudicator's answer), over decisions in the window on multi-reviewed tasks that are
  settled. Single-review tasks are left out: there the reviewer's answer *is* the settled
  one. Labels of different predictors are kept apart (each category is predictor+label).
- Answers agree when `review.services._same_answer` says so: equal labels, or numbers within
  the output spec's `agree_within` of each other (equal up to rounding without one) — the
  rule consensus itself uses. The predictor's current `agree_within` is applied to every
  task in the window, including tasks decided before it last changed. Kappa is for label outputs only
  (null for numbers); agreement shares work for both. Kappa is null, too, when it is
  undefined (every answer in one category).

Throughput and time
- Decisions in the window; per day of the window and per hour worked, an hour worked being
  a clock hour in which the reviewer decided at least once (for a predictor: per
  reviewer-hour). Handling time is `Decision.seconds_to_decide` (claim to decision).
- Time to settle: from a task's creation to the decision that settled it — the last
  agreeing decision, the adjudication (measured from the disputed task's creation), or the
  appeal decision. Counted for tasks settled in the window, per predictor and per reviewer
  who made the settling decision.
Medians and 90th percentiles are numpy's (linear interpolation), in seconds."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
from django.contrib.auth import get_user_model
from django.db.models import Case, F, OuterRef, Subquery, When
from django.db.models.functions import TruncHour
from django.utils import timezone
from sklearn.metrics import cohen_kappa_score

from gateway.models import Predictor

from .models import Decision, ReviewTask, TaskKind, TaskStatus
from .services import _same_answer, agree_within, consensus_answer

DEFAULT_WINDOW_DAYS = 7
CONSENSUS_KINDS = (TaskKind.ROUTED, TaskKind.LOW_CONFIDENCE, TaskKind.QA_SAMPLE)


@dataclass(frozen=True)
class Window:
    since: object
    until: object
    days: float

    def as_dict(self) -> dict:
        return {"days": self.days, "since": _iso(self.since), "until": _iso(self.until)}


def _iso(value):
    return value.isoformat().replace("+00:00", "Z")


def stats_window(*, days: float = DEFAULT_WINDOW_DAYS, now=None) -> Window:
    until = now or timezone.now()
    return Window(since=until - timedelta(days=days), until=until, days=days)


# -- formulas ------------------------------------------------------------------------------

def fleiss_kappa(counts) -> float | None:
    """Fleiss' kappa of an items × categories matrix: counts[i][j] is how many raters put
    item i in category j; every item has the same number n >= 2 of raters. None when it is
    undefined (chance agreement is 1: every rating in one category) or there are no items.

        p_j = Σ_i n_ij / (N n)             P_i = (Σ_j n_ij² − n) / (n (n − 1))
        P̄ = mean(P_i)   P̄e = Σ_j p_j²      κ = (P̄ − P̄e) / (1 − P̄e)"""
    table = np.asarray(counts, dtype=float)
    if table.ndim != 2 or table.shape[0] == 0:
        return None
    raters = table.sum(axis=1)
    n = raters[0]
    if n < 2 or not np.all(raters == n):
        raise ValueError("every item needs the same number (at least 2) of raters")
    p_j = table.sum(axis=0) / (table.shape[0] * n)
    p_i = (np.square(table).sum(axis=1) - n) / (n * (n - 1))
    p_bar, p_e = p_i.mean(), np.square(p_j).sum()
    if np.isclose(p_e, 1.0):
        return None
    return float((p_bar - p_e) / (1 - p_e))


def pairwise_agreement(outputs: list, within: float | None = None) -> float:
    """Share of the pairs of answers to one item that agree (Fleiss' P_i, for any output)."""
    n = len(outputs)
    pairs = n * (n - 1) / 2
    agreeing = sum(_same_answer(outputs[a], outputs[b], within) for a in range(n) for b in range(a + 1, n))
    return agreeing / pairs


def cohen_kappa(first: list, second: list) -> float | None:
    """Cohen's kappa of two raters over the same items; None when undefined."""
    if not first or len(set(first) | set(second)) < 2:
        return None
    value = cohen_kappa_score(first, second)
    return None if np.isnan(value) else float(value)


def spread(values: list[float]) -> dict:
    """{"median", "p90"} of seconds, or nulls when there are none."""
    if not values:
        return {"median": None, "p90": None}
    median, p90 = np.percentile(np.asarray(values, dtype=float), [50, 90])
    return {"median": round(float(median), 3), "p90": round(float(p90), 3)}


def _rate(part: int, whole: int, scale: float = 1.0) -> float | None:
    return round(scale * part / whole, 6) if whole else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


# -- reads -----------------------------------------------------------------------------------

def _predictors(predictor: Predictor | None) -> dict[int, Predictor]:
    if predictor is not None:
        return {predictor.pk: predictor}
    return {p.pk: p for p in Predictor.objects.only("id", "slug", "output_spec")}


def _scoped(queryset, field: str, predictor: Predictor | None):
    return queryset.filter(**{field: predictor}) if predictor is not None else queryset


def _multi_reviewed_decisions(*, window: Window, predictor: Predictor | None) -> dict[int, dict]:
    """Consensus tasks whose round completed in the window with 2+ decisions:
    {task_id: {"predictor_id", "final_output", "decisions": [(reviewer_id, output, created_at)]}}
    with decisions in the order they were made."""
    tasks = _scoped(ReviewTask.objects, "predictor", predictor).filter(
        kind__in=CONSENSUS_KINDS,
        reviews_required__gte=2,  # a decided task has exactly this many decisions
        status=TaskStatus.DECIDED,
        decided_at__gte=window.since,
        decided_at__lte=window.until,
    )
    rows = (
        Decision.objects.filter(task__in=tasks)
        .order_by("task_id", "id")
        .values_list("task_id", "task__predictor_id", "task__final_output", "reviewer_id", "output", "created_at")
    )
    by_task: dict[int, dict] = {}
    for task_id, predictor_id, final_output, reviewer_id, output, created_at in rows:
        entry = by_task.setdefault(task_id, {"predictor_id": predictor_id, "final_output": final_output, "decisions": []})
        entry["decisions"].append((reviewer_id, output, created_at))
    return {task_id: entry for task_id, entry in by_task.items() if len(entry["decisions"]) >= 2}


def agreement_by_predictor(*, window: Window, predictor: Predictor | None = None, _tasks=None) -> dict[str, dict]:
    """Inter-reviewer agreement per predictor slug (see the module docstring)."""
    predictors = _predictors(predictor)
    tasks = _tasks if _tasks is not None else _multi_reviewed_decisions(window=window, predictor=predictor)
    grouped: dict[int, list[list]] = defaultdict(list)
    for entry in tasks.values():
        grouped[entry["predictor_id"]].append([output for _, output, _ in entry["decisions"]])
    result = {}
    for pk, p in sorted(predictors.items(), key=lambda item: item[1].slug):
        outputs = grouped.get(pk, [])
        is_label = p.output_spec.get("type") == "label"
        within = agree_within(p.output_spec)
        row = {
            "output_type": p.output_spec.get("type"),
            "tasks": len(outputs),
            "raters_per_task": None,
            "fleiss_kappa": None,
            "observed_agreement": None,
            "percent_agreement": None,
            "disputed": 0,
        }
        if outputs:
            k = min(len(o) for o in outputs)
            first_k = [o[:k] for o in outputs]
            unanimous = sum(consensus_answer(o, p.output_spec)[0] for o in outputs)
            row.update(
                raters_per_task=k,
                observed_agreement=_round(float(np.mean([pairwise_agreement(o, within) for o in first_k]))),
                percent_agreement=_rate(unanimous, len(outputs), 100),
                disputed=len(outputs) - unanimous,
            )
            if is_label:
                categories = list(p.output_spec.get("labels", []))
                categories += sorted({x for o in first_k for x in o if x not in categories}, key=str)
                index = {c: j for j, c in enumerate(categories)}
                table = np.zeros((len(first_k), len(categories)))
                for i, o in enumerate(first_k):
                    for x in o:
                        table[i, index[x]] += 1
                row["fleiss_kappa"] = _round(fleiss_kappa(table))
        result[p.slug] = row
    return result


def _settlements(*, window: Window, predictor: Predictor | None) -> list[tuple[int, int | None, float]]:
    """(predictor_id, settling reviewer_id, seconds from creation to settlement) of every
    task settled in the window. A disputed task is settled by its adjudication, timed from
    the disputed task's creation; the disputed task itself is not counted again."""
    last_decider = Decision.objects.filter(task=OuterRef("pk")).order_by("-id").values("reviewer_id")[:1]
    tasks = (
        _scoped(ReviewTask.objects, "predictor", predictor)
        .filter(status=TaskStatus.DECIDED, final_output__isnull=False,
                decided_at__gte=window.since, decided_at__lte=window.until)
        .exclude(follow_ups__kind=TaskKind.ADJUDICATION)
        .annotate(
            started_at=Case(
                When(kind=TaskKind.ADJUDICATION, origin__isnull=False, then=F("origin__created_at")),
                default=F("created_at"),
            ),
            settled_by=Subquery(last_decider),
        )
        .values_list("predictor_id", "settled_by", "started_at", "decided_at")
    )
    return [(pid, reviewer_id, (decided - started).total_seconds()) for pid, reviewer_id, started, decided in tasks]


def _throughput(decisions: list[tuple], settle_seconds: list[float], window: Window, *, hours_key) -> dict:
    """decisions: (reviewer_id, predictor_id, kind, seconds_to_decide, hour) rows."""
    hours = {hours_key(row) for row in decisions}
    by_kind: dict[str, int] = defaultdict(int)
    for row in decisions:
        by_kind[row[2]] += 1
    return {
        "decisions": len(decisions),
        "by_kind": dict(sorted(by_kind.items())),
        "decisions_per_day": _round(len(decisions) / window.days) if window.days else None,
        "hours_worked": len(hours),
        "decisions_per_hour_worked": _rate(len(decisions), len(hours)),
        "handling_seconds": spread([row[3] for row in decisions if row[3] is not None]),
        "tasks_settled": len(settle_seconds),
        "settle_seconds": spread(settle_seconds),
    }


def review_stats(*, predictor: Predictor | None = None, days: float = DEFAULT_WINDOW_DAYS, now=None) -> dict:
    """Agreement (per predictor and per reviewer) and throughput (per predictor, per
    reviewer and in total) over the last `days` days, for one predictor or all."""
    window = stats_window(days=days, now=now)
    predictors = _predictors(predictor)
    slug_of = {pk: p.slug for pk, p in predictors.items()}
    is_label = {pk: p.output_spec.get("type") == "label" for pk, p in predictors.items()}
    within_of = {pk: agree_within(p.output_spec) for pk, p in predictors.items()}

    decisions = list(
        _scoped(Decision.objects, "task__predictor", predictor)
        .filter(created_at__gte=window.since, created_at__lte=window.until)
        .annotate(hour=TruncHour("created_at"))
        .values_list("reviewer_id", "task__predictor_id", "task__kind", "seconds_to_decide", "hour")
    )
    settlements = _settlements(window=window, predictor=predictor)
    multi = _multi_reviewed_decisions(window=window, predictor=predictor)

    # Each reviewer's answers next to the settled ones (decisions made in the window).
    compared: dict[int, list[tuple]] = defaultdict(list)
    for entry in multi.values():
        if entry["final_output"] is None:
            continue  # disputed, adjudication still to come
        for reviewer_id, output, created_at in entry["decisions"]:
            if window.since <= created_at <= window.until:
                compared[reviewer_id].append((entry["predictor_id"], output, entry["final_output"]))

    decisions_of: dict[int, list] = defaultdict(list)
    decisions_on: dict[int, list] = defaultdict(list)
    for row in decisions:
        decisions_of[row[0]].append(row)
        decisions_on[row[1]].append(row)
    settled_by: dict[int, list] = defaultdict(list)
    settled_on: dict[int, list] = defaultdict(list)
    for predictor_id, reviewer_id, seconds in settlements:
        settled_by[reviewer_id].append(seconds)
        settled_on[predictor_id].append(seconds)

    reviewer_ids = set(decisions_of) | set(compared)
    names = dict(get_user_model().objects.filter(pk__in=reviewer_ids).values_list("pk", "username"))
    reviewers = []
    for reviewer_id in reviewer_ids:
        pairs = compared.get(reviewer_id, [])
        labelled = [(pid, out, final) for pid, out, final in pairs if is_label.get(pid)]
        agreed = sum(_same_answer(out, final, within_of.get(pid)) for pid, out, final in pairs)
        reviewers.append({
            "reviewer": names.get(reviewer_id),
            "reviewer_id": reviewer_id,
            **_throughput(decisions_of.get(reviewer_id, []), settled_by.get(reviewer_id, []), window,
                          hours_key=lambda row: row[4]),
            "compared": len(pairs),
            "agreed_with_settled": agreed,
            "percent_agreement": _rate(agreed, len(pairs), 100),
            "cohen_kappa": _round(cohen_kappa(
                [f"{slug_of.get(pid)}:{out}" for pid, out, _ in labelled],
                [f"{slug_of.get(pid)}:{final}" for pid, _, final in labelled],
            )),
        })
    reviewers.sort(key=lambda row: (-row["decisions"], row["reviewer"] or ""))

    per_predictor = {}
    for pk, slug in sorted(slug_of.items(), key=lambda item: item[1]):
        mine = decisions_on.get(pk, [])
        row = _throughput(mine, settled_on.get(pk, []), window, hours_key=lambda row: (row[0], row[4]))
        row["reviewers"] = len({r[0] for r in mine})
        per_predictor[slug] = row
    total = _throughput(decisions, [s for _, _, s in settlements], window, hours_key=lambda row: (row[0], row[4]))
    total["reviewers"] = len({r[0] for r in decisions})

    return {
        "window": window.as_dict(),
        "predictor": predictor.slug if predictor is not None else None,
        "agreement": agreement_by_predictor(window=window, predictor=predictor, _tasks=multi),
        "reviewers": reviewers,
        "throughput": {**total, "predictors": per_predictor},
    }


__all__ = [
    "DEFAULT_WINDOW_DAYS",
    "agreement_by_predictor",
    "cohen_kappa",
    "fleiss_kappa",
    "pairwise_agreement",
    "review_stats",
    "spread",
    "stats_window",
]
