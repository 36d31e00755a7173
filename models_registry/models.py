from django.conf import settings
from django.db import models
from simple_history.models import HistoricalRecords

from gateway.history import history_user
from gateway.models import Predictor


class TrainingRun(models.Model):
    """One training attempt, tracked like an MLflow run: what went in, what came out."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    class Trigger(models.TextChoices):
        MANUAL = "manual"
        LABEL_THRESHOLD = "label_threshold"
        SCHEDULE = "schedule"

    predictor = models.ForeignKey(Predictor, on_delete=models.CASCADE, related_name="training_runs")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    trigger = models.CharField(max_length=20, choices=Trigger.choices, default=Trigger.MANUAL)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="training_runs"
    )
    estimator = models.CharField(max_length=100, blank=True)
    params = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    # The exact label set: ids, their hash, counts per class, schema version.
    dataset = models.JSONField(default=dict, blank=True)
    environment = models.JSONField(default=dict, blank=True, help_text="code and library versions")
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_seconds = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # Never two runs at once for one predictor: the database enforces it.
            models.UniqueConstraint(
                fields=["predictor"],
                condition=models.Q(status__in=["queued", "running"]),
                name="one_active_training_run_per_predictor",
            )
        ]

    def __str__(self):
        return f"run #{self.pk} {self.predictor.slug} ({self.status})"


class Stage(models.TextChoices):
    CANDIDATE = "candidate"
    CHAMPION = "champion"
    CHALLENGER = "challenger"
    ARCHIVED = "archived"
    REJECTED = "rejected"


class ModelVersion(models.Model):
    predictor = models.ForeignKey(Predictor, on_delete=models.CASCADE, related_name="model_versions")
    version = models.PositiveIntegerField()
    run = models.OneToOneField(TrainingRun, on_delete=models.PROTECT, related_name="model_version")
    stage = models.CharField(max_length=12, choices=Stage.choices, default=Stage.CANDIDATE)
    schema_version = models.PositiveIntegerField()
    artifact = models.FileField(upload_to="models/", max_length=500)
    artifact_sha256 = models.CharField(max_length=64)
    metrics = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    promoted_at = models.DateTimeField(null=True, blank=True)
    stage_reason = models.TextField(blank=True, help_text="why the stage last changed")
    history = HistoricalRecords(get_user=history_user)

    class Meta:
        ordering = ["predictor", "-version"]
        permissions = [("promote_modelversion", "Can promote and roll back model versions")]
        constraints = [
            models.UniqueConstraint(fields=["predictor", "version"], name="model_version_unique_per_predictor"),
            models.UniqueConstraint(
                fields=["predictor"], condition=models.Q(stage="champion"), name="one_champion_per_predictor"
            ),
        ]

    def __str__(self):
        return f"{self.predictor.slug} v{self.version} ({self.stage})"
