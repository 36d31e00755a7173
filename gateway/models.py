import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from .history import HistoryFromFirstChange, audit_history


class Predictor(models.Model):
    """A prediction endpoint defined as code (YAML): its input schema, output spec and rules."""

    slug = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    input_schema = models.JSONField(help_text="field name -> field spec")
    # PostgreSQL's jsonb does not keep key order, so the declared order is kept apart; it
    # orders forms, exports and the model's feature columns.
    field_order = models.JSONField(default=list)
    output_spec = models.JSONField()
    rules = models.JSONField(default=list, blank=True)
    sensitive_attribute = models.CharField(max_length=100, blank=True)
    # Consensus: how many reviewers must agree before a human answer stands.
    reviews_required = models.PositiveSmallIntegerField(default=1)
    # End users may appeal an answer for this many days after it was given.
    appeal_window_days = models.PositiveIntegerField(default=30)
    # How models are trained for this predictor (YAML `training:`): estimator from the
    # allow-list, hyperparameters, optional grid, split, retrain_after_labels.
    training = models.JSONField(default=dict, blank=True)
    # Promotion gates (YAML `gates:`); each result is stored with the model version.
    gates = models.JSONField(default=dict, blank=True)
    # Promote a candidate that passes every gate without waiting for an operator.
    auto_promote = models.BooleanField(default=False)
    # Bumped whenever input_schema or output_spec changes; predictions record it.
    schema_version = models.PositiveIntegerField(default=1)
    definition_sha256 = models.CharField(max_length=64, blank=True)
    source_path = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    history = audit_history()

    class Meta:
        ordering = ["slug"]

    def __str__(self):
        return self.slug

    @property
    def schema(self) -> dict:
        """The input schema in declaration order."""
        ordered = {name: self.input_schema[name] for name in self.field_order if name in self.input_schema}
        if len(ordered) != len(self.input_schema):  # a schema saved without an order
            ordered.update(self.input_schema)
        return ordered

    @property
    def is_classification(self) -> bool:
        return self.output_spec.get("type") == "label"


class RoutingMode(models.TextChoices):
    HUMAN = "human", "Human reviewers"
    RULE = "rule", "Rule stub"
    MODEL = "model", "Model"


class RoutingFallback(models.TextChoices):
    HUMAN = "human", "Human reviewers"
    RULE = "rule", "Rule stub"
    NONE = "none", "Nobody"


class RoutingPolicy(models.Model):
    """The routing flag of one predictor. `version` rises with every change and is recorded
    on each prediction, so any answer can be traced to the policy that routed it."""

    predictor = models.OneToOneField(Predictor, on_delete=models.CASCADE, related_name="routing")
    mode = models.CharField(max_length=10, choices=RoutingMode.choices, default=RoutingMode.HUMAN)
    # Who answers when the chosen answerer cannot, and who gives a provisional answer when a
    # human misses the SLA (the champion model stands in when the fallback is not `none`
    # and there are no rules).
    fallback = models.CharField(max_length=10, choices=RoutingFallback.choices, default=RoutingFallback.RULE)
    # A pending human prediction older than this gets a provisional answer or expires.
    human_sla_seconds = models.PositiveIntegerField(null=True, blank=True)
    # Classification: a model answer less confident than this goes to the fallback (and,
    # with fallback human, to a `low_confidence` review task showing the model's suggestion).
    confidence_threshold = models.FloatField(null=True, blank=True)
    # Share of traffic (0-100) the model answers while `mode` is human or rule; chosen
    # deterministically from the request key, so a retried request takes the same route.
    canary_percent = models.FloatField(default=0)
    # Run the champion/challenger beside whoever answers; store, never return.
    shadow = models.BooleanField(default=False)
    # Share (0-100) of rule and model answers that also go to review as `qa_sample` tasks.
    qa_sample_percent = models.FloatField(default=0)
    # When more human tasks than this are open, human-routed traffic goes to the fallback.
    max_queue_depth = models.PositiveIntegerField(null=True, blank=True)
    version = models.PositiveIntegerField(default=1)
    updated_at = models.DateTimeField(auto_now=True)
    history = audit_history()

    class Meta:
        verbose_name_plural = "routing policies"

    def __str__(self):
        return f"{self.predictor.slug}: {self.mode} (v{self.version})"


class ApiClient(models.Model):
    """A service that calls /predict. Its keys are stored hashed (see ApiKey)."""

    name = models.CharField(max_length=100, unique=True)
    # Scope: all predictors, or only those listed.
    all_predictors = models.BooleanField(default=True)
    predictors = models.ManyToManyField(Predictor, blank=True, related_name="api_clients")
    # Shared secret for HMAC-signing webhooks; it must be readable to sign, so not hashed.
    webhook_secret = models.CharField(max_length=100)
    # Hosts this client may name in callback_url (exact names, or "*.example.com").
    # Empty: the client cannot use webhooks.
    webhook_hosts = models.JSONField(default=list, blank=True)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    history = audit_history(m2m_fields=[predictors])

    def __str__(self):
        return self.name

    # DRF treats the authenticated principal as request.user.
    is_authenticated = True
    is_anonymous = False

    def may_use(self, predictor: Predictor) -> bool:
        if self.all_predictors:
            return True
        allowed = getattr(self, "allowed_predictor_ids", None)  # set by gateway.verified_keys
        if allowed is not None:
            return predictor.pk in allowed
        return self.predictors.filter(pk=predictor.pk).exists()


class ApiKey(models.Model):
    client = models.ForeignKey(ApiClient, on_delete=models.CASCADE, related_name="keys")
    prefix = models.CharField(max_length=16, unique=True)
    key_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    history = audit_history()

    def __str__(self):
        return f"{self.client.name} {self.prefix}…"


class UserToken(models.Model):
    """API token of a reviewer or operator (`Authorization: Token …`), stored hashed."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="oz_tokens")
    prefix = models.CharField(max_length=16, unique=True)
    key_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    history = audit_history()

    def __str__(self):
        return f"{self.user} {self.prefix}…"


class PredictionStatus(models.TextChoices):
    PENDING = "pending"
    ANSWERED = "answered"
    REVISED = "revised"
    EXPIRED = "expired"


class AnswerSource(models.TextChoices):
    HUMAN = "human"
    RULE = "rule"
    MODEL = "model"


class Prediction(HistoryFromFirstChange, models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Indexed by (predictor, status) below, which serves every lookup by predictor: a second
    # index on the column alone would only cost each /predict INSERT.
    predictor = models.ForeignKey(Predictor, on_delete=models.PROTECT, related_name="predictions", db_index=False)
    client = models.ForeignKey(ApiClient, null=True, blank=True, on_delete=models.SET_NULL, related_name="predictions")
    schema_version = models.PositiveIntegerField()
    input = models.JSONField()
    status = models.CharField(max_length=10, choices=PredictionStatus.choices, default=PredictionStatus.PENDING)
    output = models.JSONField(null=True, blank=True)
    confidence = models.FloatField(null=True, blank=True)
    scores = models.JSONField(null=True, blank=True)
    source = models.CharField(max_length=10, choices=AnswerSource.choices, blank=True)
    provisional = models.BooleanField(default=False)
    model_version = models.PositiveIntegerField(null=True, blank=True)
    # Per-field contributions to the model's answer, when the client asked (`explain: true`):
    # [{"feature": "amount", "contribution": -0.41}, ...], as API.md shows.
    explanation = models.JSONField(null=True, blank=True)
    route = models.JSONField(help_text="{mode, reason, policy_version}")
    callback_url = models.URLField(max_length=2000, blank=True)
    idempotency_key = models.CharField(max_length=255, blank=True)
    request_sha256 = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    answered_at = models.DateTimeField(null=True, blank=True)
    # Set for human-routed predictions when the policy has an SLA; cleared once answered
    # for good. The SLA sweeper reads it through a partial index.
    sla_due_at = models.DateTimeField(null=True, blank=True)
    # SHA-256 of the appeal token (the token itself is derived, never stored). Found by
    # equality only: its index is declared in Meta, which (unlike db_index) adds no second
    # pattern-matching index for LIKE, and is not copied to the history table.
    appeal_token_sha256 = models.CharField(max_length=64, blank=True)
    history = audit_history()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["client", "idempotency_key"],
                condition=~models.Q(idempotency_key=""),
                name="prediction_idempotency_key_unique_per_client",
            )
        ]
        indexes = [
            models.Index(fields=["predictor", "status"]),
            models.Index(fields=["sla_due_at"], name="prediction_sla_due_idx", condition=models.Q(sla_due_at__isnull=False)),
            models.Index(fields=["appeal_token_sha256"], name="prediction_appeal_token_idx"),
        ]

    def __str__(self):
        return f"{self.predictor.slug} {self.id}"

    @property
    def is_pending(self) -> bool:
        return self.status == PredictionStatus.PENDING


class WebhookDelivery(models.Model):
    """One event to POST to a client's callback_url. The row is written in the same
    transaction as the change it reports; the Celery message is only a nudge, and the
    sweeper re-sends anything a broker outage lost."""

    class Status(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed"

    prediction = models.ForeignKey(Prediction, on_delete=models.CASCADE, related_name="webhooks")
    event = models.CharField(max_length=50)
    url = models.URLField(max_length=2000)
    payload = models.JSONField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["status", "next_attempt_at"])]
        verbose_name_plural = "webhook deliveries"

    def __str__(self):
        return f"{self.event} #{self.pk} ({self.status})"


class WebhookAttempt(models.Model):
    """One try at delivering a webhook: when, how long, and what came back."""

    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveSmallIntegerField()
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["delivery", "number"]
        constraints = [models.UniqueConstraint(fields=["delivery", "number"], name="webhook_attempt_number_unique")]

    def __str__(self):
        return f"attempt {self.number} of delivery #{self.delivery_id}"
