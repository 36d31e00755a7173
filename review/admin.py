"""Admin for the review app: the reviewer's queue pages (review/admin_queue.py) on the
ReviewTask admin, and read-only lists of tasks, decisions and labels."""
from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from gateway.admin_readonly import EMPTY, HistoryAdmin, ReadOnlyAdminMixin, json_block, json_inline, search_by_uuid

from .admin_queue import DECIDE_PERMISSION, ReviewQueueAdminMixin
from .models import Decision, Label, ReviewTask, TaskStatus
from .selectors import own_tasks, task_listed_for


class PredictionSearchMixin:
    search_fields = ("prediction__id",)
    search_help_text = "A prediction's full id."

    def get_search_results(self, request, queryset, search_term):
        if not search_term.strip():
            return queryset, False
        return search_by_uuid(queryset, search_term, "prediction_id"), False


@admin.register(ReviewTask)
class ReviewTaskAdmin(ReviewQueueAdminMixin, PredictionSearchMixin, ReadOnlyAdminMixin, HistoryAdmin):
    list_display = ("id", "kind", "priority", "status", "predictor", "claimed_by", "lease_expires_at", "created_at", "decided_at")
    list_filter = ("status", "kind", "predictor")
    list_select_related = ("predictor", "claimed_by")
    show_full_result_count = False
    fields = (
        "decision_page", "prediction", "predictor", "kind", "priority", "reason", "status", "claimed_by", "claimed_at",
        "lease_expires_at", "created_at", "decided_at", "input_display", "decisions_display",
    )
    readonly_fields = ("decision_page", "input_display", "decisions_display")

    def get_queryset(self, request):
        """Operators (who may read every decision) see every task; a reviewer sees the tasks
        they hold or have answered, not the whole queue's inputs and everyone's answers."""
        tasks = super().get_queryset(request)
        if request.user.has_perm("review.view_decision"):
            return tasks
        return tasks.filter(own_tasks(request.user))

    def has_view_permission(self, request, obj=None):
        # The same rule for one task: its change page and its history pages (which
        # simple-history serves without get_queryset).
        allowed = super().has_view_permission(request, obj)
        return allowed and (obj is None or task_listed_for(request.user, obj))

    def get_fields(self, request, obj=None):
        fields = list(super().get_fields(request, obj))
        if not request.user.has_perm(DECIDE_PERMISSION):
            fields.remove("decision_page")
        elif obj is not None and obj.status not in (TaskStatus.DECIDED, TaskStatus.CANCELLED):
            # A reviewer who may still answer this task must not see the others' answers
            # first (anchoring); the decision page shows what they may see.
            fields.remove("decisions_display")
        return fields

    @admin.display(description="reviewer's page")
    def decision_page(self, obj):
        return format_html('<a href="{}">open the decision page</a>', reverse("admin:review_reviewtask_decide", args=[obj.pk]))

    @admin.display(description="input")
    def input_display(self, obj):
        return json_block(obj.prediction.input)

    @admin.display(description="decisions")
    def decisions_display(self, obj):
        decisions = list(obj.decisions.select_related("reviewer").order_by("created_at"))
        if not decisions:
            return EMPTY
        return format_html_join(
            "", "<div>{}: {} by {} at {}</div>",
            ((f"#{d.pk}", json_inline(d.output), d.reviewer, d.created_at) for d in decisions),
        )


@admin.register(Decision)
class DecisionAdmin(ReadOnlyAdminMixin, HistoryAdmin):
    list_display = ("id", "task", "predictor", "reviewer", "output_short", "created_at", "seconds_to_decide")
    list_filter = ("task__predictor", "task__kind", "reviewer")
    list_select_related = ("task__predictor", "reviewer")
    show_full_result_count = False
    fields = ("task", "reviewer", "output_display", "note", "created_at", "seconds_to_decide")
    readonly_fields = ("output_display",)

    @admin.display(description="predictor", ordering="task__predictor__slug")
    def predictor(self, obj):
        return obj.task.predictor

    @admin.display(description="output")
    def output_short(self, obj):
        return json_inline(obj.output)

    @admin.display(description="output")
    def output_display(self, obj):
        return json_block(obj.output)


class CurrentLabelFilter(admin.SimpleListFilter):
    """Current labels form the training set; superseded ones (e.g. by an appeal) stay for audit."""

    title = "in the training set"
    parameter_name = "current"

    def lookups(self, request, model_admin):
        return [("yes", "current"), ("no", "superseded")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(superseded_by__isnull=True)
        if self.value() == "no":
            return queryset.filter(superseded_by__isnull=False)
        return queryset


@admin.register(Label)
class LabelAdmin(PredictionSearchMixin, ReadOnlyAdminMixin, HistoryAdmin):
    list_display = ("id", "predictor", "target_short", "source", "created_by", "created_at", "is_current")
    list_filter = ("predictor", "source", CurrentLabelFilter)
    list_select_related = ("predictor", "created_by")
    show_full_result_count = False
    fields = (
        "predictor", "prediction", "task", "schema_version", "input_display", "target_display", "source",
        "created_by", "created_at", "superseded_by",
    )
    readonly_fields = ("input_display", "target_display")

    @admin.display(description="target")
    def target_short(self, obj):
        return json_inline(obj.target)

    @admin.display(description="current", boolean=True)
    def is_current(self, obj):
        return obj.superseded_by_id is None

    @admin.display(description="input")
    def input_display(self, obj):
        return json_block(obj.input)

    @admin.display(description="target")
    def target_display(self, obj):
        return json_block(obj.target)
