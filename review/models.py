from django.conf import settings
from django.db import models

from gateway.history import HistoryFromFirstChange, audit_history
from gateway.models import Prediction, Predictor


class TaskKind(models.TextChoices):
    APPEAL = "appeal"
    ADJUDICATION = "adjudication"
    LOW_CONFIDENCE = "low_confidence"
    ROUTED = "routed"
    QA_SAMPLE = "qa_sample"


# Higher is served first (appeal > adjudication > low_confidence > routed > qa_sample).
KIND_PRIORITY = {
    TaskKind.APPEAL: 40,
    TaskKind.ADJUDICATION: 35,
    TaskKind.LOW_CONFIDENCE: 30,
    TaskKind.ROUTED: 20,
    TaskKind.QA_SAMPLE: 10,
}


class TaskStatus(models.TextChoices):
    OPEN = "open"
    CLAIMED = "claimed"
    DECIDED = "decided"
    CANCELLED = "cancelled"


class ReviewTask(HistoryFromFirstChange, models.Model):
    """One question for a reviewer about one prediction. A claimed task is held under a
    lease; an expired lease makes it claimable again and voids the holder's right to decide."""

    prediction = models.ForeignKey(Prediction, on_delete=models.CASCADE, related_name="review_tasks")
    predictor = models.ForeignKey(Predictor, on_delete=models.CASCADE, related_name="review_tasks")
    kind = models.CharField(max_length=20, choices=TaskKind.choices)
    priority = models.PositiveSmallIntegerField()
    reason = models.CharField(max_length=200, help_text="why this task exists")
    # Consensus: this many reviewers must agree (copied from the predictor at creation).
    reviews_required = models.PositiveSmallIntegerField(default=1)
    # The task this one follows up (an adjudication's disputed task, an appeal's original).
    origin = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="follow_ups")
    # Who may not take this task (an appeal goes to someone other than the original decider).
    excluded_reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # What a model suggested, shown to the reviewer beside the input: {output, confidence,
    # scores, model_version}. Set for low-confidence tasks (the prediction has no answer).
    suggestion = models.JSONField(null=True, blank=True)
    # The answer the task settled on (consensus, adjudication or appeal outcome).
    final_output = models.JSONField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=TaskStatus.choices, default=TaskStatus.OPEN)
    claimed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="claimed_tasks"
    )
    claimed_at = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    history = audit_history()

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

    # Indexed by the unique (task, reviewer) constraint, which leads with it.
    task = models.ForeignKey(ReviewTask, on_delete=models.CASCADE, related_name="decisions", db_index=False)
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="decisions")
    output = models.JSONField()
    note = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Time from claim to decision: the reviewer's handling time.
    seconds_to_decide = models.FloatField(null=True, blank=True)
    history = audit_history()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["task", "reviewer"], name="one_decision_per_reviewer_per_task")]

    def __str__(self):
        return f"decision on task #{self.task_id}: {self.output!r}"


class LabelSource(models.TextChoices):
    REVIEW = "review"
    QA = "qa"
    LOW_CONFIDENCE = "low_confidence"
    APPEAL = "appeal"
    ADJUDICATION = "adjudication"
    OUTCOME = "outcome"
    IMPORT = "import"


TASK_KIND_LABEL_SOURCE = {
    TaskKind.ROUTED: LabelSource.REVIEW,
    TaskKind.QA_SAMPLE: LabelSource.QA,
    TaskKind.LOW_CONFIDENCE: LabelSource.LOW_CONFIDENCE,
    TaskKind.APPEAL: LabelSource.APPEAL,
    TaskKind.ADJUDICATION: LabelSource.ADJUDICATION,
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
    history = audit_history()

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


class AppealStatus(models.TextChoices):
    OPEN = "open"
    UPHELD = "upheld"
    OVERTURNED = "overturned"


class Appeal(models.Model):
    """An end user's challenge to an answer, filed through the prediction's appeal link.
    It becomes an `appeal` review task for a reviewer other than the original decider."""

    prediction = models.ForeignKey(Prediction, on_delete=models.CASCADE, related_name="appeals")
    status = models.CharField(max_length=12, choices=AppealStatus.choices, default=AppealStatus.OPEN)
    reason = models.TextField()
    requested_output = models.JSONField(null=True, blank=True)
    # The answer appealed against, as it stood when the appeal was filed.
    original_output = models.JSONField(null=True, blank=True)
    original_source = models.CharField(max_length=10, blank=True)
    original_model_version = models.PositiveIntegerField(null=True, blank=True)
    task = models.OneToOneField(ReviewTask, null=True, blank=True, on_delete=models.SET_NULL, related_name="appeal")
    outcome_output = models.JSONField(null=True, blank=True)
    outcome_note = models.TextField(blank=True, help_text="shown to the person who appealed")
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    history = audit_history()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["prediction"], condition=models.Q(status="open"), name="one_open_appeal_per_prediction"
            )
        ]

    def __str__(self):
        return f"appeal #{self.pk} on {self.prediction_id} ({self.status})"
