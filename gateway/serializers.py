"""Request and response shapes of the gateway API (also the source of the OpenAPI schema)."""
from rest_framework import serializers

from .models import RoutingFallback, RoutingMode
from .webhooks import HostNotRegistered, callback_host_check


class PredictRequestSerializer(serializers.Serializer):
    input = serializers.JSONField(help_text="Field values, as the predictor's input schema says.")
    callback_url = serializers.URLField(required=False, allow_blank=True, max_length=2000)
    wait = serializers.IntegerField(required=False, min_value=0, max_value=30, help_text="Seconds to hold for a human answer.")
    explain = serializers.BooleanField(required=False, default=False)

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


class RouteSerializer(serializers.Serializer):
    mode = serializers.ChoiceField(choices=RoutingMode.choices)
    reason = serializers.CharField()
    policy_version = serializers.IntegerField()


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
    output = serializers.JSONField()


class RoutingRequestSerializer(serializers.Serializer):
    mode = serializers.ChoiceField(choices=RoutingMode.choices, required=False)
    fallback = serializers.ChoiceField(choices=RoutingFallback.choices, required=False)
    human_sla_seconds = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    reason = serializers.CharField(required=False, allow_blank=True, max_length=500, help_text="Why; kept in the audit history.")


class RoutingSerializer(serializers.Serializer):
    mode = serializers.ChoiceField(choices=RoutingMode.choices)
    fallback = serializers.ChoiceField(choices=RoutingFallback.choices)
    human_sla_seconds = serializers.IntegerField(allow_null=True)
    version = serializers.IntegerField()
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

    def get_has_rules(self, obj) -> bool:
        return bool(obj.rules)

    def get_champion(self, obj) -> dict | None:
        champion = self.context.get("champions", {}).get(obj.pk)
        if champion is None:
            return None
        return {"version": champion.version, "metrics": champion.metrics, "promoted_at": champion.promoted_at}


class ProblemSerializer(serializers.Serializer):
    type = serializers.CharField()
    title = serializers.CharField()
    status = serializers.IntegerField()
    detail = serializers.CharField()
    errors = serializers.ListField(child=serializers.DictField(), required=False)
