from django.conf import settings
from django.db import models
from simple_history.models import HistoricalRecords

from gateway.history import history_user
from gateway.models import Prediction, Predictor


class TaskKind(models.TextChoices):
    APPEAL = "appeal"
    LOW_CONFIDENCE = "low_confidence"
    ROUTED = "routed"
    QA_SAMPLE = "qa_sample"


# Higher is served first (appeal > low_confidence > routed > qa_sample).
KIND_PRIORITY = {
    TaskKind.APPEAL: 40,
    TaskKind.LOW_CONFIDENCE: 30,
    TaskKind.ROUTED: 20,
    TaskKind.QA_SAMPLE: 10,
}


class TaskStatus(models.TextChoices):
    OPEN = "open"
    CLAIMED = "claimed"
    DECIDED = "decided"
    CANCELLED = "cancelled"


class ReviewTask(models.Model):
    """One question for a reviewer about one prediction. A claimed task is held under a
    lease; an expired lease makes it claimable again and voids the holder's right to decide."""

    prediction = models.ForeignKey(Prediction, on_delete=models.CASCADE, related_name="review_tasks")
    predictor = models.ForeignKey(Predictor, on_delete=models.CASCADE, related_name="review_tasks")
    kind = models.CharField(max_length=20, choices=TaskKind.choices)
    priority = models.PositiveSmallIntegerField()
    reason = models.CharField(max_length=200, help_text="why this task exists")
    status = models.CharField(max_length=10, choices=TaskStatus.choices, default=TaskStatus.OPEN)
    claimed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="claimed_tasks"
    )
    claimed_at = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    history = HistoricalRecords(get_user=history_user)

    class Meta:
        ordering = ["-priority", "created_at"]
        permissions = [("decide_reviewtask", "Can claim and decide review tasks")]
        indexes = [
            # Fits claim-next: WHERE status IN (open, claimed) ORDER BY priority DESC, created_at.
            models.Index(
                fields=["-priority", "created_at"],
                name="reviewtask_claimable_idx",
                condition=models.Q(status__in=["open", "claimed"]),
            ),
        ]

    def __str__(self):
        return f"{self.kind} task #{self.pk} ({self.status})"


class Decision(models.Model):
    """A reviewer's answer to a task, kept even when later superseded."""

    task = models.ForeignKey(ReviewTask, on_delete=models.CASCADE, related_name="decisions")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="decisions")
    output = models.JSONField()
    note = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Time from claim to decision: the reviewer's handling time.
    seconds_to_decide = models.FloatField(null=True, blank=True)
    history = HistoricalRecords(get_user=history_user)

    def __str__(self):
        return f"decision on task #{self.task_id}: {self.output!r}"


class LabelSource(models.TextChoices):
    REVIEW = "review"
    QA = "qa"
    LOW_CONFIDENCE = "low_confidence"
    APPEAL = "appeal"
    OUTCOME = "outcome"
    IMPORT = "import"


TASK_KIND_LABEL_SOURCE = {
    TaskKind.ROUTED: LabelSource.REVIEW,
    TaskKind.QA_SAMPLE: LabelSource.QA,
    TaskKind.LOW_CONFIDENCE: LabelSource.LOW_CONFIDENCE,
    TaskKind.APPEAL: LabelSource.APPEAL,
}


class Label(models.Model):
    """The accepted answer for one input: the unit of the training set, with provenance."""

    predictor = models.ForeignKey(Predictor, on_delete=models.CASCADE, related_name="labels")
    prediction = models.ForeignKey(Prediction, null=True, blank=True, on_delete=models.SET_NULL, related_name="labels")
    task = models.ForeignKey(ReviewTask, null=True, blank=True, on_delete=models.SET_NULL, related_name="labels")
    schema_version = models.PositiveIntegerField()
    input = models.JSONField()
    target = models.JSONField()
    source = models.CharField(max_length=20, choices=LabelSource.choices)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="labels"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    superseded_by = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="supersedes"
    )
    history = HistoricalRecords(get_user=history_user)

    class Meta:
        indexes = [
            models.Index(
                fields=["predictor", "id"],
                name="label_current_idx",
                condition=models.Q(superseded_by__isnull=True),
            )
        ]

    def __str__(self):
        return f"label #{self.pk} {self.predictor.slug} -> {self.target!r}"
