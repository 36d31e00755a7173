from django.conf import settings
from django.db import models

from gateway.history import audit_history
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
    # The champion of the time, scored on this run's holdout so the two compare like for like.
    champion_metrics = models.JSONField(default=dict, blank=True)
    # Per group of the predictor's sensitive attribute (fairlearn MetricFrame) and the gaps.
    fairness = models.JSONField(default=dict, blank=True)
    logs = models.TextField(blank=True)
    error = models.TextField(blank=True)
    # Where it runs and a heartbeat while it does: a run whose worker died (SIGKILL, OOM)
    # stops beating and the sweeper marks it failed, freeing the predictor for the next run.
    worker = models.CharField(max_length=200, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    peak_memory_bytes = models.BigIntegerField(null=True, blank=True)
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
    # The ONNX export of the same pipeline, served with onnxruntime when it converts and
    # agrees with the skops pipeline on the holdout; otherwise the skops artifact is served.
    onnx_artifact = models.FileField(upload_to="models/", max_length=500, blank=True)
    onnx_sha256 = models.CharField(max_length=64, blank=True)
    serving_format = models.CharField(max_length=10, choices=[("onnx", "ONNX"), ("skops", "skops")], default="skops")
    metrics = models.JSONField(default=dict, blank=True)
    # [{"gate", "passed", "value", "threshold", "detail"}], evaluated at training time and
    # again when shadow traffic accumulates; gates_passed is None while a gate is pending.
    gates = models.JSONField(default=list, blank=True)
    gates_passed = models.BooleanField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    promoted_at = models.DateTimeField(null=True, blank=True)
    stage_reason = models.TextField(blank=True, help_text="why the stage last changed")
    # Statistics of the training inputs, per input field, that live traffic is compared
    # with (models_registry.drift): {"field": {"type": "numeric", "bins": [...edges],
    # "counts": [...], "n": N, "missing": M} | {"type": "categorical", "counts": {...}, ...}}.
    reference_stats = models.JSONField(default=dict, blank=True)
    history = audit_history()

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


class ShadowPrediction(models.Model):
    """What a model that did not answer would have said: run beside the real answerer when
    the routing flag asks for shadow traffic, stored and never returned. Compared with the
    human decision on the same prediction, it is the evidence for the agreement gate."""

    prediction = models.ForeignKey("gateway.Prediction", on_delete=models.CASCADE, related_name="shadow_predictions")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="shadow_predictions")
    output = models.JSONField(null=True, blank=True)
    confidence = models.FloatField(null=True, blank=True)
    scores = models.JSONField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["prediction", "model_version"], name="one_shadow_per_prediction_and_version"),
        ]
        indexes = [models.Index(fields=["model_version", "created_at"])]

    def __str__(self):
        return f"shadow of v{self.model_version_id} on {self.prediction_id}"


class DriftReport(models.Model):
    """One comparison of a window of live inputs (and outputs) with the reference statistics
    of the version that was champion: per field PSI and a KS (numbers) or chi-squared
    (categories) test, the output mix by source, and whether it raises the alert. Written
    by the periodic drift task; kept over time so drift can be plotted."""

    predictor = models.ForeignKey(Predictor, on_delete=models.CASCADE, related_name="drift_reports")
    model_version = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="drift_reports")
    window_start = models.DateTimeField()
    window_end = models.DateTimeField()
    n_live = models.PositiveIntegerField(default=0)
    # {"field": {"psi": x, "test": "ks"|"chi2", "statistic": x, "p_value": x, "drifted": bool}}
    fields = models.JSONField(default=dict, blank=True)
    # {"by_source": {"model": {"approve": 0.7, ...}, ...}, "reference": {...}}
    outputs = models.JSONField(default=dict, blank=True)
    alert = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["predictor", "-created_at"])]

    def __str__(self):
        return f"drift of {self.predictor.slug} at {self.window_end:%Y-%m-%d %H:%M}{' (alert)' if self.alert else ''}"


class ExplanationSample(models.Model):
    """The explanation of one model answer, kept for a sample of traffic (and for every
    answer a client asked to have explained), so contributions can be averaged per field
    over time."""

    prediction = models.OneToOneField("gateway.Prediction", on_delete=models.CASCADE, related_name="explanation_sample")
    predictor = models.ForeignKey(Predictor, on_delete=models.CASCADE, related_name="explanation_samples")
    model_version = models.PositiveIntegerField()
    # {"amount": -0.41, "sector": 0.12, ...}: one number per input field
    contributions = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["predictor", "created_at"])]

    def __str__(self):
        return f"explanation of {self.prediction_id} (v{self.model_version})"
