from __future__ import annotations

from django.db.models import Count, Q
from django.utils import timezone

from gateway.models import Predictor

from .models import Appeal, AppealStatus, Decision, Label, ReviewTask, TaskKind, TaskStatus


def labels_current(*, predictor: Predictor):
    """The training set: labels not superseded by a later one."""
    return Label.objects.filter(predictor=predictor, superseded_by__isnull=True)


def claimable_tasks(*, now=None, reviewer=None):
    """Open tasks, and claimed ones whose lease has run out; for a given reviewer, without
    those they already decided or are excluded from."""
    now = now or timezone.now()
    tasks = ReviewTask.objects.filter(status__in=[TaskStatus.OPEN, TaskStatus.CLAIMED]).filter(
        Q(status=TaskStatus.OPEN) | Q(lease_expires_at__lt=now)
    )
    if reviewer is not None:
        tasks = tasks.exclude(excluded_reviewer=reviewer).exclude(decisions__reviewer=reviewer)
        # An appeal goes to someone who had no hand in the answer appealed, which can be
        # several people's: reviewers who agreed on it, a QA reviewer or adjudicator who
        # settled it, and whoever upheld an earlier appeal of it (excluded_reviewer names only
        # the last of them). So nobody who decided any task of the prediction takes it.
        tasks = tasks.exclude(kind=TaskKind.APPEAL, prediction__review_tasks__decisions__reviewer=reviewer)
    return tasks


def own_tasks(user) -> Q:
    """The tasks a reviewer holds or has answered: their Review tasks list in the admin."""
    return Q(claimed_by=user) | Q(pk__in=Decision.objects.filter(reviewer=user).values("task_id"))


def task_listed_for(user, task: ReviewTask) -> bool:
    """Is this task in the user's Review tasks list? Operators (who may read every
    decision) list every task; a reviewer, `own_tasks`."""
    if user.has_perm("review.view_decision"):
        return True
    return ReviewTask.objects.filter(own_tasks(user), pk=task.pk).exists()


def queue_counts(*, now=None, reviewer=None) -> list[dict]:
    """Claimable tasks by kind (highest priority first), for the queue page; with a
    reviewer, only those they may take (not an appeal of their own decision)."""
    return list(
        claimable_tasks(now=now, reviewer=reviewer)
        .values("kind", "priority")
        .annotate(count=Count("id"))
        .order_by("-priority", "kind")
    )


def tasks_held_by(*, reviewer, now=None):
    now = now or timezone.now()
    return (
        ReviewTask.objects.filter(status=TaskStatus.CLAIMED, claimed_by=reviewer, lease_expires_at__gte=now)
        .select_related("predictor", "prediction")
        .order_by("lease_expires_at")
    )


def appeal_latest(*, prediction):
    """The prediction's most recent appeal (the one its appeal page reports), or None."""
    return Appeal.objects.filter(prediction=prediction).order_by("-created_at", "-id").first()


def appeals_open_count(*, predictor: Predictor) -> int:
    return Appeal.objects.filter(prediction__predictor=predictor, status=AppealStatus.OPEN).count()
