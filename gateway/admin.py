"""Admin for the gateway: predictors, routing, predictions, API clients and keys, webhooks.

Thin: predictors are defined as code and predictions, keys and webhooks are written by
services, so their pages are read-only; the routing flag changes only through
`routing_update`, which bumps the policy version and records who and why."""
from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from simple_history.admin import SimpleHistoryAdmin

from .admin_readonly import EMPTY, HistoryAdmin, ReadOnlyAdminMixin, json_block, json_inline, search_by_uuid
from .models import ApiClient, ApiKey, Prediction, Predictor, RoutingPolicy, UserToken, WebhookAttempt, WebhookDelivery
from .services import ROUTING_FIELDS, ROUTING_REASON_MAX_LENGTH, RoutingInvalid, routing_check, routing_update
from .webhooks import RedeliveryRefused, webhook_redeliver

admin.site.site_header = "Oz administration"
admin.site.site_title = "Oz admin"
admin.site.index_title = "Review queue, routing and models"
# No "View site" link: Oz has no site at /, only the API (its documentation is at /api/docs).
admin.site.site_url = None


def _change_link(obj, label=None) -> str:
    if obj is None:
        return EMPTY
    url = reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])
    return format_html('<a href="{}">{}</a>', url, label if label is not None else obj)


@admin.register(Predictor)
class PredictorAdmin(HistoryAdmin):
    """Predictors are defined in YAML and loaded with `load_predictors`; only the
    description may be edited here (a later load from a changed file overwrites it)."""

    list_display = ("slug", "description", "routing_display", "schema_version", "updated_at")
    list_select_related = ("routing",)
    search_fields = ("slug", "description")
    fields = (
        "slug", "description", "routing_display", "input_schema_display", "output_spec_display",
        "rules_display", "sensitive_attribute", "schema_version", "definition_sha256", "source_path",
        "created_at", "updated_at",
    )
    readonly_fields = tuple(f for f in fields if f != "description")
    actions = ["train_model"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_train_permission(self, request):
        return request.user.has_perm("models_registry.add_trainingrun")

    def get_urls(self):
        from .dashboard import dashboard_urls  # the operators' dashboard (gateway/dashboard.py)

        return dashboard_urls(self) + super().get_urls()

    @admin.display(description="routing")
    def routing_display(self, obj):
        policy = getattr(obj, "routing", None)  # None when the policy row is missing
        return _change_link(policy, f"{policy.mode} (v{policy.version})") if policy else EMPTY

    @admin.display(description="input schema")
    def input_schema_display(self, obj):
        return json_block(obj.schema)

    @admin.display(description="output spec")
    def output_spec_display(self, obj):
        return json_block(obj.output_spec)

    @admin.display(description="rules")
    def rules_display(self, obj):
        return json_block(obj.rules)

    @admin.action(permissions=["train"], description="Train a new model on the current labels")
    def train_model(self, request, queryset):
        from models_registry.admin import training_request_for

        training_request_for(self, request, list(queryset))


class RoutingPolicyForm(forms.ModelForm):
    reason = forms.CharField(
        required=False,
        max_length=ROUTING_REASON_MAX_LENGTH,
        help_text="Why you change the routing; kept in the history with your name.",
        widget=forms.TextInput(attrs={"size": 60}),
    )

    class Meta:
        model = RoutingPolicy
        fields = ROUTING_FIELDS

    # An empty share box means "none of the traffic".
    BLANK_IS_ZERO = ("canary_percent", "qa_sample_percent")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name in self.BLANK_IS_ZERO:
            if name in self.fields:
                self.fields[name].required = False
                self.fields[name].help_text = "Percent of requests, 0-100; empty means 0."

    def changes(self) -> dict:
        changes = {name: self.cleaned_data[name] for name in ROUTING_FIELDS if name in self.cleaned_data}
        for name in self.BLANK_IS_ZERO:
            if name in changes and changes[name] is None:
                changes[name] = 0.0
        return changes

    def clean(self):
        cleaned = super().clean()
        try:
            routing_check(predictor=self.instance.predictor, changes=self.changes(), reason=cleaned.get("reason", ""))
        except RoutingInvalid as exc:
            for error in exc.errors:
                self.add_error(error.field if error.field in self.fields else None, error.message)
        return cleaned


@admin.register(RoutingPolicy)
class RoutingPolicyAdmin(HistoryAdmin):
    """The change form edits the flag's fields; saving calls `routing_update`, never `save()`.

    The history's "Revert" is on here (and only for those who may change the flag): the
    old version's values fill this same form, so they pass the same checks as any change
    (`routing_check`), and saving goes through `routing_update` — the version rises, the
    history names who reverted and why (by default "reverted to vN")."""

    form = RoutingPolicyForm
    list_display = (
        "predictor", "mode", "fallback", "human_sla_seconds", "confidence_threshold", "canary_percent", "shadow",
        "qa_sample_percent", "max_queue_depth", "version", "updated_at",
    )
    list_filter = ("mode", "fallback", "shadow")
    list_select_related = ("predictor",)
    fields = ("predictor", *ROUTING_FIELDS, "reason", "version", "updated_at")
    readonly_fields = ("predictor", "version", "updated_at")
    actions = ["kill_switch_human", "kill_switch_rule"]

    def has_add_permission(self, request):
        return False  # a policy comes with its predictor (load_predictors)

    def _kill_switch(self, request, queryset, mode: str, who: str):
        """No model answers any more: the mode goes to `mode`, the canary share to 0 and the
        fallback to none (a full queue, an unsure rule or a missed SLA would otherwise call
        the champion). Each predictor changes through `routing_update` (audited, versioned,
        seen by every web process within seconds); one refused change does not stop the others."""
        for policy in queryset.select_related("predictor"):
            slug = policy.predictor.slug
            try:
                routing_update(
                    predictor=policy.predictor, changes={"mode": mode, "canary_percent": 0.0, "fallback": "none"},
                    user=request.user, reason=f"kill switch: {who}",
                )
            except RoutingInvalid as exc:
                problems = "; ".join(f"{e.field}: {e.message}" for e in exc.errors)
                self.message_user(request, f"{slug}: not changed ({problems})", messages.ERROR)
            else:
                self.message_user(request, f"{slug}: every request now goes to {who}; no model answers.", messages.SUCCESS)

    @admin.action(permissions=["change"], description="Kill switch: send all traffic to human reviewers")
    def kill_switch_human(self, request, queryset):
        self._kill_switch(request, queryset, "human", "human reviewers")

    @admin.action(permissions=["change"], description="Kill switch: answer all traffic with the rules")
    def kill_switch_rule(self, request, queryset):
        self._kill_switch(request, queryset, "rule", "the rules")

    def has_delete_permission(self, request, obj=None):
        return False

    def get_fields(self, request, obj=None):
        fields = list(super().get_fields(request, obj))
        if not self.has_change_permission(request, obj):
            fields.remove("reason")  # a form-only field: nothing to show read-only
        return fields

    def revert_disabled(self, request, obj=None):
        return not self.has_change_permission(request, obj)

    def history_form_view(self, request, object_id, version_id, extra_context=None):
        if request.method not in ("GET", "HEAD"):
            if not self.has_change_permission(request):
                raise PermissionDenied
            old = RoutingPolicy.history.filter(id=object_id, history_id=version_id).first()
            request._oz_reverting_to = old.version if old is not None else None
        # Skip HistoryAdmin's read-only guard: the form and save_model below do the checks.
        return SimpleHistoryAdmin.history_form_view(self, request, object_id, version_id, extra_context)

    def save_model(self, request, obj, form, change):
        reason = form.cleaned_data.get("reason", "")
        reverting_to = getattr(request, "_oz_reverting_to", None)
        if not reason and reverting_to is not None:
            reason = f"reverted to v{reverting_to}"
        routing_update(predictor=obj.predictor, changes=form.changes(), user=request.user, reason=reason)
        obj.refresh_from_db()


@admin.register(Prediction)
class PredictionAdmin(ReadOnlyAdminMixin, HistoryAdmin):
    list_display = ("id", "predictor", "status", "source", "output_short", "provisional", "created_at")
    list_filter = ("predictor", "status", "source", "provisional")
    list_select_related = ("predictor",)
    search_fields = ("id",)
    search_help_text = "A prediction's full id."
    date_hierarchy = "created_at"
    show_full_result_count = False
    fields = (
        "id", "predictor", "client", "status", "source", "provisional", "output_display", "confidence",
        "scores_display", "model_version", "input_display", "route_display", "schema_version",
        "callback_url", "idempotency_key", "created_at", "answered_at", "review_tasks_display",
    )
    readonly_fields = ("output_display", "scores_display", "input_display", "route_display", "review_tasks_display")

    def get_search_results(self, request, queryset, search_term):
        if not search_term.strip():
            return queryset, False
        return search_by_uuid(queryset, search_term, "pk"), False

    @admin.display(description="output")
    def output_short(self, obj):
        return json_inline(obj.output)

    @admin.display(description="output")
    def output_display(self, obj):
        return json_block(obj.output)

    @admin.display(description="scores")
    def scores_display(self, obj):
        return json_block(obj.scores)

    @admin.display(description="input")
    def input_display(self, obj):
        return json_block(obj.input)

    @admin.display(description="route")
    def route_display(self, obj):
        return json_block(obj.route)

    @admin.display(description="review tasks")
    def review_tasks_display(self, obj):
        tasks = list(obj.review_tasks.order_by("created_at"))
        if not tasks:
            return EMPTY
        return format_html_join(
            ", ", '<a href="{}">{}</a>',
            ((reverse("admin:review_reviewtask_change", args=[t.pk]), str(t)) for t in tasks),
        )


class ApiKeyInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = ApiKey
    fields = ("prefix_display", "created_at", "last_used_at", "revoked_at")
    extra = 0
    show_change_link = False

    @admin.display(description="key")
    def prefix_display(self, obj):
        return f"{obj.prefix}…"


@admin.register(ApiClient)
class ApiClientAdmin(ReadOnlyAdminMixin, HistoryAdmin):
    """Clients are created with `create_api_client` (the key is shown once). The webhook
    secret is never shown here."""

    list_display = ("name", "is_active", "scope_display", "created_at")
    list_filter = ("is_active",)
    search_fields = ("name",)
    fields = ("name", "is_active", "all_predictors", "predictors", "webhook_hosts_display", "created_at")
    readonly_fields = ("webhook_hosts_display",)
    inlines = [ApiKeyInline]
    history_hidden_fields = ("webhook_secret",)

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("predictors")

    @admin.display(description="webhook hosts")
    def webhook_hosts_display(self, obj):
        return ", ".join(obj.webhook_hosts or []) or "none (webhooks disabled)"

    @admin.display(description="predictors")
    def scope_display(self, obj):
        if obj.all_predictors:
            return "all"
        return ", ".join(p.slug for p in obj.predictors.all()) or EMPTY


class KeyAdmin(ReadOnlyAdminMixin, HistoryAdmin):
    """Keys and tokens: only the prefix is ever shown, never the hash."""

    history_hidden_fields = ("key_hash",)

    @admin.display(description="key", ordering="prefix")
    def prefix_display(self, obj):
        return f"{obj.prefix}…"

    @admin.display(description="active", boolean=True)
    def is_active(self, obj):
        return obj.revoked_at is None

    actions = ["revoke"]

    @admin.action(description="Revoke the selected keys for good", permissions=["revoke"])
    def revoke(self, request, queryset):
        from .services import credential_revoke

        revoked = sum(credential_revoke(credential=c, by=request.user) for c in queryset)
        self.message_user(request, f"Revoked {revoked}; {queryset.count() - revoked} were revoked already.", messages.SUCCESS)

    def has_revoke_permission(self, request):
        # The model's change permission; the generic form stays read-only for everyone.
        return request.user.has_perm(f"{self.opts.app_label}.change_{self.opts.model_name}")


@admin.register(ApiKey)
class ApiKeyAdmin(KeyAdmin):
    list_display = ("prefix_display", "client", "is_active", "created_at", "last_used_at", "revoked_at")
    list_filter = (("revoked_at", admin.EmptyFieldListFilter), "client")
    list_select_related = ("client",)
    search_fields = ("prefix", "client__name")
    fields = ("prefix_display", "client", "created_at", "last_used_at", "revoked_at")
    readonly_fields = ("prefix_display",)


@admin.register(UserToken)
class UserTokenAdmin(KeyAdmin):
    list_display = ("prefix_display", "user", "is_active", "created_at", "revoked_at")
    list_filter = (("revoked_at", admin.EmptyFieldListFilter),)
    list_select_related = ("user",)
    search_fields = ("prefix", "user__username")
    fields = ("prefix_display", "user", "created_at", "revoked_at")
    readonly_fields = ("prefix_display",)


class WebhookAttemptInline(ReadOnlyAdminMixin, admin.TabularInline):
    """The attempt log: one row per try, kept across redeliveries."""

    model = WebhookAttempt
    fields = ("number", "started_at", "duration_ms", "status_code", "error")
    verbose_name_plural = "attempt log"
    extra = 0
    show_change_link = False
    can_delete = False

    def has_view_permission(self, request, obj=None):
        # Part of the delivery's record: whoever may view the delivery sees its attempts.
        return request.user.has_perm("gateway.view_webhookdelivery")


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Deliveries are written by the webhook service; "Redeliver" gives failed ones a fresh
    round of tries through `webhook_redeliver` (the same service as the clients' API)."""

    list_display = ("id", "event", "prediction_id", "status", "attempts", "last_status_code", "next_attempt_at", "delivered_at")
    list_filter = ("status", "event")
    search_fields = ("prediction__id",)
    search_help_text = "A prediction's full id."
    show_full_result_count = False
    fields = (
        "prediction", "event", "url", "status", "attempts", "next_attempt_at", "last_status_code",
        "last_error", "payload_display", "created_at", "delivered_at",
    )
    readonly_fields = ("payload_display",)
    inlines = [WebhookAttemptInline]
    actions = ["redeliver"]

    def has_redeliver_permission(self, request):
        return request.user.has_perm("gateway.change_webhookdelivery")

    @admin.action(permissions=["redeliver"], description="Redeliver (a new round of tries for failed deliveries)")
    def redeliver(self, request, queryset):
        done = 0
        for delivery in queryset.order_by("pk"):
            try:
                webhook_redeliver(delivery=delivery, user=request.user)
            except RedeliveryRefused as exc:
                self.message_user(request, f"Delivery #{delivery.pk} not redelivered: {exc}.", messages.WARNING)
                continue
            done += 1
        if done:
            self.message_user(request, f"{done} deliver{'y' if done == 1 else 'ies'} queued for a new round of tries.", messages.SUCCESS)

    def get_search_results(self, request, queryset, search_term):
        if not search_term.strip():
            return queryset, False
        return search_by_uuid(queryset, search_term, "prediction_id"), False

    @admin.display(description="payload")
    def payload_display(self, obj):
        return json_block(obj.payload)
