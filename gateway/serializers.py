"""Request and response shapes of the gateway API (also the source of the OpenAPI schema)."""
import re

from django.core.validators import RegexValidator
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from .models import RoutingFallback, RoutingMode
from .schema import MAX_QUEUE_DEPTH, MAX_SLA_SECONDS
from .webhooks import HostNotRegistered, callback_host_check

# Keys a client picks (routing_key, Idempotency-Key) may hold any character but the control
# characters (C0, DEL, C1): they would corrupt logs and headers. Written so that Python, the
# OpenAPI schema's `pattern` and any JSON Schema validator read it alike.
NO_CONTROL_CHARACTERS = r"^[^\x00-\x1f\x7f-\x9f]*$"
_NO_CONTROL = re.compile(NO_CONTROL_CHARACTERS)


def has_control_characters(value: str) -> bool:
    return not _NO_CONTROL.match(value)


# Field errors in Oz's own words ("must be …"), as gateway.schema words an input's: DRF's
# stock sentences ("A valid integer is required.") would sit beside them in one response.
_OZ_MESSAGES = {"required": "this field is required", "null": "must not be null"}


class StrictCharField(serializers.CharField):
    """A string, and only a string (DRF's CharField would turn 17 into "17")."""

    default_error_messages = {
        **_OZ_MESSAGES, "invalid": "must be a string", "blank": "must not be empty",
        "max_length": "must be at most {max_length} characters", "min_length": "must be at least {min_length} characters",
    }

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    """true or false, and nothing else (DRF's BooleanField would take 0, 1, "yes", "on" …)."""

    default_error_messages = {**_OZ_MESSAGES, "invalid": "must be true or false"}

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class StrictIntegerField(serializers.IntegerField):
    """A JSON number without a fraction (DRF's IntegerField would take "10" and true)."""

    default_error_messages = {
        **_OZ_MESSAGES, "invalid": "must be an integer", "max_string_length": "must be an integer",
        "max_value": "must be at most {max_value}", "min_value": "must be at least {min_value}",
    }

    def to_internal_value(self, data):
        if isinstance(data, (bool, str)):
            self.fail("invalid")
        return super().to_internal_value(data)


@extend_schema_field({"type": "object", "additionalProperties": True})
class ObjectJSONField(serializers.JSONField):
    """A JSON object, documented as one; the view checks its fields (gateway.schema), and
    says of null what it says of any other non-object."""

    default_error_messages = {**_OZ_MESSAGES, "null": "must be an object"}


@extend_schema_field({"oneOf": [{"type": "string"}, {"type": "number"}]})
class AnswerJSONField(serializers.JSONField):
    """An answer: one of a label output's labels, or a number within a number output's bounds
    (which of them depends on the predictor; the view checks it, gateway.schema.output_error)."""


class PredictRequestSerializer(serializers.Serializer):
    input = ObjectJSONField(help_text="Field values, as the predictor's input schema says (the typed "
                            "`POST /predict/<slug>` of each predictor lists them).")
    callback_url = serializers.URLField(required=False, allow_blank=True, max_length=2000, error_messages={
        "invalid": "must be an http or https URL", "max_length": "must be at most {max_length} characters",
    })
    wait = StrictIntegerField(required=False, min_value=0, max_value=30, help_text="Seconds to hold for a human answer.")
    explain = StrictBooleanField(required=False, default=False)
    routing_key = StrictCharField(
        required=False, max_length=255, trim_whitespace=False,
        validators=[RegexValidator(NO_CONTROL_CHARACTERS, message="must not contain control characters")],
        help_text="Picks the canary bucket: requests with the same key take the same route. Defaults to the "
        "Idempotency-Key, else the prediction's id. Part of the idempotency fingerprint.",
    )

    def validate_callback_url(self, value):
        if value and not value.lower().startswith(("http://", "https://")):
            raise serializers.ValidationError("must be an http or https URL")
        client = self.context.get("client")
        if value and client is not None:
            try:
                callback_host_check(client=client, url=value)
            except HostNotRegistered as exc:
                raise serializers.ValidationError(str(exc)) from None
        return value


ROUTE_REASONS = ["mode", "canary", "low_confidence", "model_error", "no_model", "rule_error", "queue_full", "sla_expired"]


class RouteSerializer(serializers.Serializer):
    mode = serializers.ChoiceField(choices=RoutingMode.choices, help_text="The flag's mode when the request came.")
    reason = serializers.ChoiceField(choices=ROUTE_REASONS, help_text="Why it took this route.")
    policy_version = serializers.IntegerField(help_text="The routing flag's version that routed it.")
    canary = serializers.BooleanField(required=False, help_text="Present (true) when the request fell in the canary share.")
    qa_sample = serializers.BooleanField(required=False, help_text="Present (true) when the answer also went to review.")
    shadow = serializers.ListField(
        child=serializers.IntegerField(), required=False, help_text="Model versions run in shadow on this input."
    )


class PredictionSerializer(serializers.Serializer):
    """Documentation of the prediction object (responses are built by gateway.presenters)."""

    id = serializers.UUIDField()
    predictor = serializers.CharField()
    status = serializers.ChoiceField(choices=["pending", "answered", "revised", "expired"])
    output = serializers.JSONField(allow_null=True)
    confidence = serializers.FloatField(allow_null=True)
    scores = serializers.DictField(child=serializers.FloatField(), allow_null=True)
    source = serializers.ChoiceField(choices=["human", "rule", "model"], allow_null=True)
    provisional = serializers.BooleanField()
    model_version = serializers.IntegerField(allow_null=True)
    explanation = serializers.JSONField(allow_null=True)
    route = RouteSerializer()
    created_at = serializers.DateTimeField()
    answered_at = serializers.DateTimeField(allow_null=True)
    appeal_url = serializers.CharField(allow_null=True)
    links = serializers.DictField(child=serializers.CharField())


class OutcomeRequestSerializer(serializers.Serializer):
    output = AnswerJSONField(help_text="A label of the predictor's output, or a number within its bounds.")


class OutcomeSerializer(serializers.Serializer):
    label_id = serializers.IntegerField()
    prediction = serializers.UUIDField()
    output = serializers.JSONField()


class HealthSerializer(serializers.Serializer):
    status = serializers.CharField(help_text="`ok`")


class ReadySerializer(serializers.Serializer):
    status = serializers.CharField(help_text="`ok`")
    checks = serializers.DictField(child=serializers.CharField(), help_text="database, redis: `ok` or `error: …`")


class UnreadySerializer(serializers.Serializer):
    type = serializers.CharField()
    title = serializers.CharField()
    status = serializers.IntegerField()
    detail = serializers.CharField()
    checks = serializers.DictField(child=serializers.CharField(), help_text="database, redis: `ok` or `error: …`")


_HELP = {
    "mode": "Who answers by default.",
    "fallback": "Who answers when the model errors, has no champion or is below the confidence threshold, "
    "when the human queue is over max_queue_depth, and who gives a provisional answer past the SLA.",
    "human_sla_seconds": "After this a pending human prediction gets a provisional fallback answer.",
    "confidence_threshold": "Label outputs only: a model answer less confident than this goes to the fallback.",
    "canary_percent": "Share (0-100) of traffic the champion answers while mode is human or rule; "
    "deterministic per request key.",
    "shadow": "Run the champion and challenger beside whoever answers; stored, never returned.",
    "qa_sample_percent": "Share (0-100) of rule and model answers that also go to review (qa_sample tasks).",
    "max_queue_depth": "When more human tasks than this are open or claimed, human-routed traffic goes to the fallback.",
}


class RoutingRequestSerializer(serializers.Serializer):
    mode = serializers.ChoiceField(choices=RoutingMode.choices, required=False, help_text=_HELP["mode"])
    fallback = serializers.ChoiceField(choices=RoutingFallback.choices, required=False, help_text=_HELP["fallback"])
    human_sla_seconds = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, max_value=MAX_SLA_SECONDS, help_text=_HELP["human_sla_seconds"]
    )
    confidence_threshold = serializers.FloatField(
        required=False, allow_null=True, min_value=0, max_value=1, help_text=_HELP["confidence_threshold"]
    )
    canary_percent = serializers.FloatField(required=False, min_value=0, max_value=100, help_text=_HELP["canary_percent"])
    shadow = serializers.BooleanField(required=False, help_text=_HELP["shadow"])
    qa_sample_percent = serializers.FloatField(required=False, min_value=0, max_value=100, help_text=_HELP["qa_sample_percent"])
    max_queue_depth = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, max_value=MAX_QUEUE_DEPTH, help_text=_HELP["max_queue_depth"]
    )
    reason = serializers.CharField(required=False, allow_blank=True, max_length=100, help_text="Why; kept in the audit history.")


class RoutingSerializer(serializers.Serializer):
    mode = serializers.ChoiceField(choices=RoutingMode.choices, help_text=_HELP["mode"])
    fallback = serializers.ChoiceField(choices=RoutingFallback.choices, help_text=_HELP["fallback"])
    human_sla_seconds = serializers.IntegerField(allow_null=True, help_text=_HELP["human_sla_seconds"])
    confidence_threshold = serializers.FloatField(allow_null=True, help_text=_HELP["confidence_threshold"])
    canary_percent = serializers.FloatField(help_text=_HELP["canary_percent"])
    shadow = serializers.BooleanField(help_text=_HELP["shadow"])
    qa_sample_percent = serializers.FloatField(help_text=_HELP["qa_sample_percent"])
    max_queue_depth = serializers.IntegerField(allow_null=True, help_text=_HELP["max_queue_depth"])
    version = serializers.IntegerField(help_text="Rises by one with every change; each prediction records it.")
    updated_at = serializers.DateTimeField()


class PredictorSerializer(serializers.Serializer):
    slug = serializers.CharField()
    description = serializers.CharField()
    input = serializers.JSONField(source="schema")
    output = serializers.JSONField(source="output_spec")
    sensitive_attribute = serializers.CharField(allow_blank=True)
    schema_version = serializers.IntegerField()
    routing = RoutingSerializer()
    has_rules = serializers.SerializerMethodField()
    champion = serializers.SerializerMethodField()
    drift = serializers.SerializerMethodField(
        help_text="The latest drift check of the champion's inputs (models_registry.drift): whether it raised the "
        "alert, when it ran, its live rows and the PSI of each field; null before the first check."
    )
    model_health = serializers.SerializerMethodField(
        help_text="Whether the champion can be served: `status` is \"broken\" when the file it is served from is "
        "missing, corrupt (sha256 mismatch) or unreadable, and then its traffic goes to the routing flag's fallback "
        "(`fallback`). Null without a champion."
    )

    def get_has_rules(self, obj) -> bool:
        return bool(obj.rules)

    @extend_schema_field({
        "type": "object", "nullable": True,
        "properties": {
            "alert": {"type": "boolean"}, "checked_at": {"type": "string", "format": "date-time"},
            "n_live": {"type": "integer"},
            "fields": {"type": "object", "additionalProperties": {"type": "number", "nullable": True}},
        },
    })
    def get_drift(self, obj) -> dict | None:
        from models_registry.drift import drift_summary

        return drift_summary(self.context.get("drift", {}).get(obj.pk))

    @extend_schema_field({
        "type": "object", "nullable": True,
        "properties": {
            "status": {"type": "string", "enum": ["ok", "broken"]}, "version": {"type": "integer"},
            "format": {"type": "string"}, "artifact": {"type": "string"},
            "problem": {"type": "string", "nullable": True, "enum": ["missing", "corrupt", "unreadable", "schema_mismatch", None]},
            "detail": {"type": "string", "nullable": True}, "fallback": {"type": "string"},
        },
    })
    def get_model_health(self, obj) -> dict | None:
        from models_registry.serving import model_health

        policy = getattr(obj, "routing", None)
        return model_health(self.context.get("champions", {}).get(obj.pk), fallback=getattr(policy, "fallback", None),
                            schema_version=obj.schema_version)

    def get_champion(self, obj) -> dict | None:
        champion = self.context.get("champions", {}).get(obj.pk)
        if champion is None:
            return None
        return {"version": champion.version, "metrics": champion.metrics, "promoted_at": champion.promoted_at}


class ProblemFieldErrorSerializer(serializers.Serializer):
    field = serializers.CharField(allow_blank=True, help_text="Path of the field at fault (`input.amount`); empty for the whole body.")
    message = serializers.CharField()


class ProblemSerializer(serializers.Serializer):
    """RFC 9457 problem details (gateway/errors.py), the body of every 4xx and 5xx."""

    type = serializers.CharField()
    title = serializers.CharField()
    status = serializers.IntegerField()
    detail = serializers.CharField()
    errors = ProblemFieldErrorSerializer(many=True, required=False, help_text="422: every field at fault.")


class PredictorListSerializer(serializers.Serializer):
    results = PredictorSerializer(many=True)
