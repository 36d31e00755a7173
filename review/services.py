"""The review queue: creating tasks, claiming under a lease, deciding, releasing, and the
labels decisions produce. The admin pages, the HTTP API and the demo reviewer all call
these functions; none of them writes review rows directly."""
from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from gateway.answers import prediction_answer
from gateway.models import AnswerSource, Prediction
from gateway.schema import output_error

from .models import (
    KIND_PRIORITY,
    TASK_KIND_LABEL_SOURCE,
    Decision,
    Label,
    ReviewTask,
    TaskKind,
    TaskStatus,
)
from .selectors import claimable_tasks


class TaskConflict(Exception):
    """The reviewer may not act on this task now (lease lost, not theirs, already decided)."""


class InvalidDecision(Exception):
    def __init__(self, message: str):
        self.message = message
        super().__init__(message)


def _lease_end(now):
    return now + timedelta(seconds=settings.OZ_REVIEW_LEASE_SECONDS)


def review_task_create(*, prediction: Prediction, kind: str = TaskKind.ROUTED, reason: str) -> ReviewTask:
    """Queue a task for a prediction. Call inside the transaction that wrote the prediction,
    so neither exists without the other."""
    return ReviewTask.objects.create(
        prediction=prediction,
        predictor_id=prediction.predictor_id,
        kind=kind,
        priority=KIND_PRIORITY[kind],
        reason=reason,
    )


def review_task_claim_next(*, reviewer, now=None) -> ReviewTask | None:
    """Give `reviewer` the highest-priority, oldest claimable task, under a fresh lease.

    One short transaction; `SELECT … FOR UPDATE SKIP LOCKED` means concurrent reviewers
    each get a different task and never wait on each other. None when the queue is empty."""
    now = now or timezone.now()
    with transaction.atomic():
        task = (
            claimable_tasks(now=now)
            .select_for_update(skip_locked=True, of=("self",))
            .order_by("-priority", "created_at", "id")
            .first()
        )
        if task is None:
            return None
        task.status = TaskStatus.CLAIMED
        task.claimed_by = reviewer
        task.claimed_at = now
        task.lease_expires_at = _lease_end(now)
        task._history_user = reviewer
        task.save(update_fields=["status", "claimed_by", "claimed_at", "lease_expires_at"])
    return task


def _locked_task_held_by(task_id: int, reviewer, now) -> ReviewTask:
    task = ReviewTask.objects.select_for_update(of=("self",)).select_related("prediction__predictor").get(pk=task_id)
    if task.status == TaskStatus.DECIDED:
        raise TaskConflict("this task has already been decided")
    if task.status != TaskStatus.CLAIMED or task.claimed_by_id != reviewer.pk:
        raise TaskConflict("you do not hold this task; claim it first")
    if task.lease_expires_at is None or task.lease_expires_at < now:
        raise TaskConflict("your lease on this task expired; it may have gone to another reviewer")
    return task


def review_task_decide(*, task_id: int, reviewer, output, note: str = "", now=None) -> Decision:
    """Record `reviewer`'s answer. Only the holder of a live lease may decide; anything else
    is a TaskConflict and changes nothing. Atomic: the decision, the task's state, the label
    and the prediction's answer are written together (locks: task, then prediction)."""
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
        task.status = TaskStatus.DECIDED
        task.decided_at = now
        task._history_user = reviewer
        task.save(update_fields=["status", "decided_at"])
        prediction = Prediction.objects.select_for_update().select_related("predictor").get(pk=task.prediction_id)
        label_record(
            prediction=prediction,
            target=output,
            source=TASK_KIND_LABEL_SOURCE[task.kind],
            created_by=reviewer,
            task=task,
        )
        prediction._history_user = reviewer
        prediction_answer(prediction=prediction, output=output, source=AnswerSource.HUMAN)
    return decision


def review_task_release(*, task_id: int, reviewer, now=None) -> ReviewTask:
    """Give a held task back to the queue at once."""
    now = now or timezone.now()
    with transaction.atomic():
        task = _locked_task_held_by(task_id, reviewer, now)
        task.status = TaskStatus.OPEN
        task.claimed_by = None
        task.claimed_at = None
        task.lease_expires_at = None
        task._history_user = reviewer
        task.save(update_fields=["status", "claimed_by", "claimed_at", "lease_expires_at"])
    return task


def review_task_extend(*, task_id: int, reviewer, now=None) -> ReviewTask:
    """Renew a live lease for another full lease period."""
    now = now or timezone.now()
    with transaction.atomic():
        task = _locked_task_held_by(task_id, reviewer, now)
        task.lease_expires_at = _lease_end(now)
        task.save(update_fields=["lease_expires_at"])
    return task


def label_record(*, prediction: Prediction, target, source: str, created_by=None, task=None, supersede: bool = False) -> Label:
    """Store the accepted answer for a prediction's input. With `supersede`, the earlier
    current labels of the same prediction are marked superseded by this one (they stay)."""
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
        for old in Label.objects.filter(prediction=prediction, superseded_by__isnull=True).exclude(pk=label.pk):
            old.superseded_by = label
            old.save(update_fields=["superseded_by"])
    return label
