"""The review queue: creating tasks, claiming under a lease, deciding (with consensus and
adjudication), releasing, and the labels decisions produce. The admin pages, the HTTP API
and the demo reviewer all call these functions; none of them writes review rows directly.

Lock order, everywhere: review task, then prediction, then appeal."""
from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from functools import partial

from django.conf import settings
from django.db import connections, router, transaction
from django.db.models.sql import Query
from django.utils import timezone

from gateway.answers import prediction_answer
from gateway.history import HISTORY_RECORDED, history_recorded
from gateway.models import AnswerSource, Prediction, PredictionStatus
from gateway.pgsession import session_execute
from gateway.schema import output_error

from .models import (
    KIND_PRIORITY,
    TASK_KIND_LABEL_SOURCE,
    Decision,
    Label,
    LabelSource,
    ReviewTask,
    TaskKind,
    TaskStatus,
)
from .selectors import claimable_tasks

logger = logging.getLogger(__name__)


class TaskConflict(Exception):
    """The reviewer may not act on this task now (lease lost, not theirs, already decided)."""


class InvalidDecision(Exception):
    def __init__(self, message: str):
        self.message = message
        super().__init__(message)


def _lease_end(now):
    return now + timedelta(seconds=settings.OZ_REVIEW_LEASE_SECONDS)


def review_task_create(**fields) -> ReviewTask:
    """Queue a task for a prediction (the arguments are review_task_build's). Call inside
    the transaction that wrote the prediction (or the appeal), so neither exists without
    the other."""
    task = review_task_build(**fields)
    task.save(force_insert=True)
    return task


def review_task_build(
    *,
    prediction: Prediction,
    kind: str = TaskKind.ROUTED,
    reason: str,
    origin: ReviewTask | None = None,
    excluded_reviewer=None,
    suggestion: dict | None = None,
) -> ReviewTask:
    """A review task for a prediction, not saved yet (/predict inserts it with its prediction
    in one statement, gateway.rows.rows_insert; review_task_create saves it). Routed,
    low-confidence and QA tasks need the predictor's `reviews_required` agreeing reviewers;
    adjudications and appeals are settled by one. `suggestion` is what a model said, shown
    to the reviewer."""
    needs_consensus = kind in (TaskKind.ROUTED, TaskKind.LOW_CONFIDENCE, TaskKind.QA_SAMPLE)
    return ReviewTask(
        prediction=prediction,
        predictor_id=prediction.predictor_id,
        kind=kind,
        priority=KIND_PRIORITY[kind],
        reason=reason[:200],
        reviews_required=prediction.predictor.reviews_required if needs_consensus else 1,
        origin=origin,
        excluded_reviewer=excluded_reviewer,
        **({"suggestion": suggestion} if suggestion is not None else {}),
    )


# The claim query is the ORM's (selectors.claimable_tasks), compiled once per database with
# stand-in values for the time and the reviewer, which each claim then swaps for its own:
# building and compiling that query (three exclude subqueries) cost more CPU than running it.
_CLAIM_NOW_STANDIN = datetime(1971, 2, 3, 4, 5, 6, 789012, tzinfo=UTC)
_CLAIM_REVIEWER_STANDIN = -1_234_567_891
_claim_statements: dict[str, tuple[str, tuple]] = {}


def _claim_statement(*, now, reviewer_id: int) -> tuple[str, list, tuple[bool, ...]]:
    """The claim query's SQL, its parameters, and which of them vary from claim to claim
    (the time and the reviewer; the rest, such as the claimable statuses, are constants)."""
    alias = router.db_for_write(ReviewTask)
    connection = connections[alias]
    # The time as the database receives it (PostgreSQL: a datetime; SQLite: a string).
    as_param = partial(ReviewTask._meta.get_field("lease_expires_at").get_db_prep_value, connection=connection)
    compiled = _claim_statements.get(alias)
    if compiled is None:
        # With whether the task has history yet: a claim is often a task's first change,
        # whose creation record history_begin would otherwise look for with a query of its own.
        query = (
            claimable_tasks(now=_CLAIM_NOW_STANDIN, reviewer=_CLAIM_REVIEWER_STANDIN)
            .annotate(**history_recorded(ReviewTask))
            .select_for_update(skip_locked=True, of=("self",))
            .order_by("-priority", "created_at", "id")[:1]
        ).query
        with transaction.atomic(using=alias):  # the compiler refuses FOR UPDATE outside one
            sql, standins = query.get_compiler(using=alias).as_sql()
        if as_param(_CLAIM_NOW_STANDIN) not in standins or _CLAIM_REVIEWER_STANDIN not in standins:
            raise RuntimeError("the claim query no longer takes the time and the reviewer as parameters")
        compiled = _claim_statements[alias] = (sql, tuple(standins))
    sql, standins = compiled
    now_standin = as_param(_CLAIM_NOW_STANDIN)
    params, variable = [], []
    for value in standins:
        varies = True
        if type(value) is int and value == _CLAIM_REVIEWER_STANDIN:
            value = reviewer_id
        elif type(value) is type(now_standin) and value == now_standin:
            value = as_param(now)
        else:
            varies = False
        params.append(value)
        variable.append(varies)
    return sql, params, tuple(variable)


# On PostgreSQL, claim-next is one statement, prepared by psycopg once per session
# (gateway.pgsession): the claim, the lease, and the task's history rows (its creation
# record when this is its first change, then the claim, by the reviewer), which otherwise
# took six round trips (BEGIN, the claim, the creation record, the UPDATE, the change
# record, COMMIT) and about 2 ms of ORM work. Its constants (the claimable statuses, the
# appeal kind) are written into the prepared text and only the time and the reviewer are
# parameters, so the plan PostgreSQL keeps for it can use the partial index of claimable
# tasks: with the statuses as parameters the only reusable plan was a scan and sort of the
# whole table, so every claim was planned afresh (three anti-joins: about 1 ms of the
# database's CPU, several when its caches are cold). With
# OZ_DB_PREPARED_STATEMENTS=false (a pooler that hands a connection's next transaction to
# another server session) and on other databases, claim-next takes the portable path below
# it, through the ORM and simple-history, with the same outcome.
_claim_recorded_statements: dict[str, str | None] = {}
_claim_prepared_texts: dict[str, str] = {}
_CLAIM_SETS = ("status", "claimed_by", "claimed_at", "lease_expires_at")
_claim_columns: dict[tuple[str, tuple[str, ...]], tuple] = {}


def _claim_recorded_sql(alias: str, claim_sql: str) -> str | None:
    """The one-statement claim for PostgreSQL, made from the claim query; None when the
    history table holds columns it does not know how to fill."""
    if alias in _claim_recorded_statements:
        return _claim_recorded_statements[alias]
    qn = connections[alias].ops.quote_name
    meta, historical = ReviewTask._meta, ReviewTask.history.model._meta
    tracked = [f.column for f in meta.concrete_fields]
    record = ["history_date", "history_type", "history_user", "history_change_reason"]
    known = {*tracked, *(historical.get_field(name).column for name in record)}
    sql = None
    if {f.column for f in historical.concrete_fields if not f.primary_key} == known and "$" not in claim_sql:
        columns = ", ".join(qn(c) for c in [*tracked, *(historical.get_field(name).column for name in record)])

        def row(source: str) -> str:
            return ", ".join(f"{source}.{qn(c)}" for c in tracked)

        pk, field = qn(meta.pk.column), (lambda name: qn(meta.get_field(name).column))
        sets = ", ".join(f"{field(name)} = %s" for name in _CLAIM_SETS)
        table, history = qn(meta.db_table), qn(historical.db_table)
        # Identifiers from the models, quoted by the backend; every value is a parameter.
        sql = (
            f"WITH picked AS ({claim_sql}), "  # noqa: S608
            f"claimed AS (UPDATE {table} AS task SET {sets} FROM picked WHERE task.{pk} = picked.{pk} RETURNING task.*), "
            f"created AS (INSERT INTO {history} ({columns}) SELECT {row('picked')}, picked.{field('created_at')}, '+', "
            f"NULL, NULL FROM picked WHERE NOT picked.{qn(HISTORY_RECORDED)}), "
            f"changed AS (INSERT INTO {history} ({columns}) SELECT {row('claimed')}, claimed.{field('claimed_at')}, '~', "
            f"claimed.{field('claimed_by')}, NULL FROM claimed) "
            "SELECT * FROM picked"
        )
    _claim_recorded_statements[alias] = sql
    return sql


def _claim_prepared_text(alias: str, sql: str, params: list, variable: tuple[bool, ...]) -> str:
    """The claim statement `sql` as it is prepared: the parameters that vary stay
    placeholders; the others are written in as literals."""
    text = _claim_prepared_texts.get(alias)
    if text is None:
        from psycopg import sql as pgsql

        if sql.count("%s") != len(params) or "%%" in sql:
            raise RuntimeError("the claim statement and its parameters disagree")
        connection = connections[alias]
        connection.ensure_connection()
        parts = sql.split("%s")
        body = [parts[0]]
        for part, value, varies in zip(parts[1:], params, variable, strict=True):
            body.append("%s" if varies else pgsql.Literal(value).as_string(connection.connection).replace("%", "%%"))
            body.append(part)
        text = _claim_prepared_texts[alias] = "".join(body)
    return text


def _task_from_row(alias: str, names: list[str], row: tuple) -> ReviewTask:
    """A ReviewTask from a row of the claim statement, its values converted as a raw query's
    are (Django's compiler converters: JSON columns arrive as text)."""
    connection = connections[alias]
    compiler = connection.ops.compiler("SQLCompiler")(Query(ReviewTask), connection, alias)
    found = _claim_columns.get((alias, tuple(names)))
    if found is None:
        by_column = {f.column: f for f in ReviewTask._meta.concrete_fields}
        fields = [by_column.get(name) for name in names]  # None: the history annotation
        converters = compiler.get_converters([f.get_col(f.model._meta.db_table) if f else None for f in fields])
        found = _claim_columns[(alias, tuple(names))] = (fields, converters)
    fields, converters = found
    values = next(compiler.apply_converters([row], converters))
    return ReviewTask.from_db(alias, [f.attname for f in fields if f], [v for f, v in zip(fields, values, strict=True) if f])


def review_task_claim_next(*, reviewer, now=None) -> ReviewTask | None:
    """Give `reviewer` the highest-priority, oldest task they may take, under a fresh lease.

    Atomic; `SELECT … FOR UPDATE SKIP LOCKED` means concurrent reviewers each get a
    different task and never wait on each other. A reviewer never gets a task they already
    decided (consensus needs different people) or one they are excluded from (an appeal of
    their own decision). None when nothing is left for them."""
    now = now or timezone.now()
    alias = router.db_for_write(ReviewTask)
    claim_sql, params, variable = _claim_statement(now=now, reviewer_id=reviewer.pk)
    lease_end = _lease_end(now)
    recorded = None
    if connections[alias].vendor == "postgresql" and settings.OZ_DB_PREPARED_STATEMENTS:
        recorded = _claim_recorded_sql(alias, claim_sql)
    if recorded is not None:
        params = [*params, TaskStatus.CLAIMED.value, reviewer.pk, now, lease_end]
        variable = (*variable, True, True, True, True)
        text = _claim_prepared_text(alias, recorded, params, variable)
        rows, names = session_execute(
            connections[alias], text, [p for p, v in zip(params, variable, strict=True) if v], prepare=True
        )
        if not rows:
            return None
        task = _task_from_row(alias, names, rows[0])
        task._history_begun = True  # its creation record, when it needed one, is written
    else:
        with transaction.atomic():
            task = next(iter(ReviewTask.objects.raw(claim_sql, params)), None)
            if task is None:
                return None
            task._history_user = reviewer
            task.status, task.claimed_by, task.claimed_at, task.lease_expires_at = TaskStatus.CLAIMED, reviewer, now, lease_end
            task.save(update_fields=list(_CLAIM_SETS))
            return task
    # The row as claimed (the statement returned it as it was before).
    task.status, task.claimed_by, task.claimed_at, task.lease_expires_at = TaskStatus.CLAIMED, reviewer, now, lease_end
    return task


def _locked_task_held_by(task_id: int, reviewer, now) -> ReviewTask:
    task = ReviewTask.objects.select_for_update(of=("self",)).select_related("prediction__predictor").get(pk=task_id)
    if task.status == TaskStatus.DECIDED:
        raise TaskConflict("this task has already been decided")
    if task.status != TaskStatus.CLAIMED or task.claimed_by_id != reviewer.pk:
        raise TaskConflict("you do not hold this task; claim it first")
    if task.lease_expires_at is None or task.lease_expires_at < now:
        raise TaskConflict("your lease on this task expired; it may have gone to another reviewer")
    # Claimed, so its history is begun: the claim recorded the task (gateway.history).
    task._history_begun = True
    return task


def _back_to_queue(task: ReviewTask, reviewer=None) -> None:
    task.status = TaskStatus.OPEN
    task.claimed_by = None
    task.claimed_at = None
    task.lease_expires_at = None
    task._history_user = reviewer
    task.save(update_fields=["status", "claimed_by", "claimed_at", "lease_expires_at"])


def _same_answer(a, b, within: float | None = None) -> bool:
    """Equal labels, or numbers within `within` of each other (an output spec's
    `agree_within`), up to rounding: 1.0 and 1.1 are within 0.1.

    Only reviewers' answers to the same task are compared with a tolerance. A settled
    answer against the one it checks (a QA sample's, an appeal's) is compared without:
    a reviewer's different number is a different answer, and it replaces the old one."""
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return abs(a - b) <= (within or 0) + 1e-9 * max(1.0, abs(a), abs(b))
    return a == b


def agree_within(output_spec: dict) -> float | None:
    """A number output's consensus tolerance (`agree_within`); None: equal up to rounding."""
    return output_spec.get("agree_within") if output_spec.get("type") == "number" else None


def consensus_answer(outputs: list, output_spec: dict) -> tuple[bool, object]:
    """Do these reviewers' answers agree, and on what? Labels must be equal; numbers must lie
    within the spec's `agree_within` of each other (largest minus smallest), and then the
    answer is their median, which may be a number nobody typed (the mean of the middle
    two). Without a tolerance the answer is the last one given."""
    within = agree_within(output_spec)
    if not within:
        return all(_same_answer(o, outputs[0]) for o in outputs), outputs[-1]
    ordered = sorted(outputs)
    if not _same_answer(ordered[0], ordered[-1], within):
        return False, None
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return True, ordered[middle]
    low, high = ordered[middle - 1], ordered[middle]
    return True, low + (high - low) / 2  # (low + high) / 2 could overflow; high - low <= within


def review_task_decide(*, task_id: int, reviewer, output, note: str = "", now=None) -> Decision:
    """Record `reviewer`'s answer. Only the holder of a live lease may decide; anything else
    is a TaskConflict and changes nothing. Atomic: the decision, the task's state, and — when
    the task is settled — the label and the prediction's answer are written together.

    With consensus (`reviews_required` > 1) the task goes back to the queue for the next
    reviewer until enough have decided; if they all agree the task is settled with that
    answer (for a number output with `agree_within`, their median: `consensus_answer`;
    its label is recorded as the settling reviewer's, each answer stays in the decisions),
    otherwise an adjudication task is queued and the prediction stays pending."""
    now = now or timezone.now()
    with transaction.atomic():
        task = _locked_task_held_by(task_id, reviewer, now)
        predictor = task.prediction.predictor
        problem = output_error(predictor.output_spec, output)
        if problem:
            raise InvalidDecision(problem)
        decision = Decision(task=task, reviewer=reviewer, output=output, note=note or "")
        if task.claimed_at:
            decision.seconds_to_decide = (now - task.claimed_at).total_seconds()
        decision._history_user = reviewer
        decision.save()

        # One review: this is the task's only decision (a decided task is never claimed
        # again). Consensus reads every decision so far, this one included.
        outputs = [output] if task.reviews_required <= 1 else list(task.decisions.order_by("id").values_list("output", flat=True))
        if len(outputs) < task.reviews_required:
            _back_to_queue(task, reviewer)
            return decision
        task.status = TaskStatus.DECIDED
        task.decided_at = now
        task._history_user = reviewer
        agreed, answer = consensus_answer(outputs, predictor.output_spec)
        if agreed:
            task.final_output = answer
            task.save(update_fields=["status", "decided_at", "final_output"])
            _task_settle(task=task, output=answer, reviewer=reviewer, note=note or "")
        else:
            task.save(update_fields=["status", "decided_at"])
            review_task_create(
                prediction=task.prediction,
                kind=TaskKind.ADJUDICATION,
                reason=f"{len(outputs)} reviewers disagreed: " + ", ".join(sorted({str(o) for o in outputs})),
                origin=task,
            )
    return decision


def _task_settle(*, task: ReviewTask, output, reviewer, note: str) -> None:
    """A task has its answer: store the label and bring the prediction in line with it."""
    # An adjudication settles its disputed task too, so agreement can be measured against it.
    # Saved (not .update()) so the task's history shows it; locked before the prediction,
    # in the module's lock order.
    if task.kind == TaskKind.ADJUDICATION and task.origin_id:
        origin = ReviewTask.objects.select_for_update().get(pk=task.origin_id)
        origin.final_output = output
        origin._history_user = reviewer
        origin.save(update_fields=["final_output"])
    # `of=("self",)`: the prediction row only. A bare FOR UPDATE would lock the joined
    # predictor row as well, which serialised every decision on the predictor and, as FOR
    # UPDATE conflicts with the KEY SHARE lock a foreign key check takes, held up every
    # insert naming it (predictions, tasks, labels) until the decision committed.
    # With whether its history is begun: deciding is often a prediction's first change.
    prediction = (
        Prediction.objects.select_for_update(of=("self",)).select_related("predictor")
        .annotate(**history_recorded(Prediction))
        .get(pk=task.prediction_id)
    )
    if task.kind == TaskKind.APPEAL:
        from .appeals import appeal_resolve

        appeal_resolve(task=task, prediction=prediction, output=output, reviewer=reviewer, note=note)
        return
    from .appeals import appeal_settled_after

    # An appeal decided after this task was queued is the last word: this task's label is
    # kept (agreement figures need it) but superseded by the appeal's, and the answer stays.
    overruled = appeal_settled_after(prediction, task.created_at)
    label = label_record(
        prediction=prediction,
        target=output,
        source=TASK_KIND_LABEL_SOURCE[task.kind],
        created_by=reviewer,
        task=task,
        supersede=task.kind == TaskKind.ADJUDICATION and not overruled,
    )
    if overruled:
        label.superseded_by = (
            Label.objects.filter(prediction=prediction, source=LabelSource.APPEAL, superseded_by__isnull=True)
            .order_by("-id")
            .first()
        )
        label._history_user = reviewer
        label.save(update_fields=["superseded_by"])
        return
    needs_answer = (
        prediction.status in (PredictionStatus.PENDING, PredictionStatus.EXPIRED)
        or prediction.provisional
        or not _same_answer(prediction.output, output)
    )
    if needs_answer:
        if prediction.status in (PredictionStatus.PENDING, PredictionStatus.EXPIRED) or prediction.provisional:
            # The human decision the request waited for: its time counts once committed.
            _human_decision_observe_on_commit(prediction, task.kind)
        prediction._history_user = reviewer
        prediction_answer(prediction=prediction, output=output, source=AnswerSource.HUMAN)


def _human_decision_observe_on_commit(prediction: Prediction, kind: str) -> None:
    from gateway.metrics import human_decision_observe

    seconds = (timezone.now() - prediction.created_at).total_seconds()
    transaction.on_commit(
        partial(human_decision_observe, predictor=prediction.predictor.slug, kind=kind, seconds=seconds), robust=True
    )


def review_task_release(*, task_id: int, reviewer, now=None) -> ReviewTask:
    """Give a held task back to the queue at once (skip)."""
    now = now or timezone.now()
    with transaction.atomic():
        task = _locked_task_held_by(task_id, reviewer, now)
        _back_to_queue(task, reviewer)
    return task


def review_task_extend(*, task_id: int, reviewer, now=None) -> ReviewTask:
    """Renew a live lease for another full lease period."""
    now = now or timezone.now()
    with transaction.atomic():
        task = _locked_task_held_by(task_id, reviewer, now)
        task.lease_expires_at = _lease_end(now)
        task.save(update_fields=["lease_expires_at"])
    return task


def review_leases_expire(*, now=None) -> int:
    """Return tasks whose lease ran out to the queue (Celery beat runs this). Claim-next
    already treats them as claimable; this makes the queue's state say so too. Skips rows
    another transaction holds, so it never waits on a reviewer deciding."""
    now = now or timezone.now()
    returned = 0
    with transaction.atomic():
        expired = ReviewTask.objects.select_for_update(skip_locked=True).filter(
            status=TaskStatus.CLAIMED, lease_expires_at__lt=now
        )
        for task in expired:
            _back_to_queue(task)
            returned += 1
    return returned


def label_record(
    *, prediction: Prediction, target, source: str, created_by=None, task=None, supersede: bool = False,
    supersede_sources: tuple[str, ...] | None = None,
) -> Label:
    """Store the accepted answer for a prediction's input. With `supersede`, the earlier
    current labels of the same prediction are marked superseded by this one (they stay);
    with `supersede_sources` too, only those of these sources."""
    label = Label(
        predictor_id=prediction.predictor_id,
        prediction=prediction,
        task=task,
        schema_version=prediction.schema_version,
        input=prediction.input,
        target=target,
        source=source,
        created_by=created_by,
    )
    label._history_user = created_by
    label.save()
    if supersede:
        earlier = Label.objects.filter(prediction=prediction, superseded_by__isnull=True).exclude(pk=label.pk)
        if supersede_sources is not None:
            earlier = earlier.filter(source__in=supersede_sources)
        for old in earlier:
            old.superseded_by = label
            old._history_user = created_by
            old.save(update_fields=["superseded_by"])
    if (prediction.predictor.training or {}).get("retrain_after_labels"):
        # Enough new labels start a training run, once this label is committed.
        transaction.on_commit(partial(_retrain_check, prediction.predictor_id), robust=True)
    if (prediction.route or {}).get("shadow"):
        # A decision on a shadowed request is evidence for a waiting shadow gate: weigh it now
        # rather than at the next beat sweep.
        transaction.on_commit(partial(_shadow_gates_check, prediction.pk), robust=True)
    return label


def _shadow_gates_check(prediction_id) -> None:
    from models_registry.gates import shadow_gates_after_label

    try:
        shadow_gates_after_label(prediction_id=prediction_id)
    except Exception:  # the label is stored; the beat sweep weighs the gate later
        logger.exception("the shadow gate check after a label failed for prediction %s", prediction_id)


def _retrain_check(predictor_id: int) -> None:
    from models_registry.training import retrain_after_labels_check

    try:
        retrain_after_labels_check(predictor_id=predictor_id)
    except Exception:  # the label is stored; a failed trigger must not fail its request
        logger.exception("the label-threshold training trigger failed for predictor %s", predictor_id)
