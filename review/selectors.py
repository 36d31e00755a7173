from __future__ import annotations

from django.db.models import Count, Q
from django.utils import timezone

from gateway.models import Predictor

from .models import Label, ReviewTask, TaskStatus


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
    return tasks


def queue_counts(*, now=None) -> list[dict]:
    """Claimable tasks by kind (highest priority first), for the queue page."""
    return list(
        claimable_tasks(now=now).values("kind", "priority").annotate(count=Count("id")).order_by("-priority", "kind")
    )


def tasks_held_by(*, reviewer, now=None):
    now = now or timezone.now()
    return (
        ReviewTask.objects.filter(status=TaskStatus.CLAIMED, claimed_by=reviewer, lease_expires_at__gte=now)
        .select_related("predictor", "prediction")
        .order_by("lease_expires_at")
    )
