"""Admin for training runs and model versions: read-only records, and two actions that call
the services (request a training run, promote a version to champion)."""
from __future__ import annotations

from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html

from gateway.admin_readonly import EMPTY, HistoryAdmin, ReadOnlyAdminMixin, json_block

from .models import ModelVersion, Stage, TrainingRun
from .services import PromotionRefused, model_version_promote
from .training import TrainingAlreadyActive, training_run_request

# The metric shown in change lists, by output type.
HEADLINE_METRICS = ("accuracy", "f1_macro", "rmse", "r2")


def training_request_for(modeladmin, request, predictors) -> None:
    """Request one training run per predictor, reporting each outcome as a message.
    Shared by the "train" actions of the predictor and training-run admins."""
    for predictor in predictors:
        try:
            run = training_run_request(predictor=predictor, requested_by=request.user)
        except TrainingAlreadyActive as exc:
            which = f" (run #{exc.run.pk})" if exc.run else ""
            modeladmin.message_user(
                request,
                f"A training run for {predictor.slug} is already queued or running{which}; try again when it ends.",
                messages.WARNING,
            )
            continue
        run.refresh_from_db(fields=["status"])  # eager Celery (make run) has already run it
        modeladmin.message_user(request, f"Training run #{run.pk} for {predictor.slug} requested ({run.status}).", messages.SUCCESS)


def _metrics_short(metrics: dict) -> str:
    shown = [f"{name} {metrics[name]:.3f}" for name in HEADLINE_METRICS if isinstance(metrics.get(name), (int, float))]
    return ", ".join(shown[:2]) or EMPTY


@admin.register(TrainingRun)
class TrainingRunAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("id", "predictor", "status", "trigger", "requested_by", "metrics_short", "n_labels", "created_at", "duration_display")
    list_filter = ("predictor", "status", "trigger")
    list_select_related = ("predictor", "requested_by")
    fields = (
        "predictor", "status", "trigger", "requested_by", "model_version_link", "estimator", "params_display",
        "metrics_display", "dataset_display", "environment_display", "error_display", "created_at", "started_at",
        "finished_at", "duration_seconds",
    )
    readonly_fields = (
        "model_version_link", "params_display", "metrics_display", "dataset_display", "environment_display",
        "error_display",
    )
    actions = ["train_again"]

    def has_train_permission(self, request):
        return request.user.has_perm("models_registry.add_trainingrun")

    @admin.action(permissions=["train"], description="Train again (a new run for each selected run's predictor)")
    def train_again(self, request, queryset):
        predictors = {run.predictor_id: run.predictor for run in queryset.select_related("predictor")}
        training_request_for(self, request, predictors.values())

    @admin.display(description="metrics")
    def metrics_short(self, obj):
        return _metrics_short(obj.metrics or {})

    @admin.display(description="labels")
    def n_labels(self, obj):
        return (obj.dataset or {}).get("n_labels", EMPTY)

    @admin.display(description="duration", ordering="duration_seconds")
    def duration_display(self, obj):
        return f"{obj.duration_seconds:.1f} s" if obj.duration_seconds is not None else EMPTY

    @admin.display(description="model version")
    def model_version_link(self, obj):
        version = ModelVersion.objects.filter(run=obj).first()
        if version is None:
            return EMPTY
        url = reverse("admin:models_registry_modelversion_change", args=[version.pk])
        return format_html('<a href="{}">{}</a>', url, version)

    @admin.display(description="params")
    def params_display(self, obj):
        return json_block(obj.params)

    @admin.display(description="metrics")
    def metrics_display(self, obj):
        return json_block(obj.metrics)

    @admin.display(description="dataset")
    def dataset_display(self, obj):
        dataset = dict(obj.dataset or {})
        ids = dataset.pop("label_ids", None)
        if ids is not None:
            dataset["label_ids"] = f"{len(ids)} ids (see label_ids_sha256)"
        return json_block(dataset)

    @admin.display(description="environment")
    def environment_display(self, obj):
        return json_block(obj.environment)

    @admin.display(description="error")
    def error_display(self, obj):
        if not obj.error:
            return EMPTY
        return format_html('<pre style="margin:0;white-space:pre-wrap">{}</pre>', obj.error)


@admin.register(ModelVersion)
class ModelVersionAdmin(ReadOnlyAdminMixin, HistoryAdmin):
    list_display = ("predictor", "version", "stage", "metrics_short", "created_at", "promoted_at")
    list_filter = ("predictor", "stage")
    list_select_related = ("predictor",)
    fields = (
        "predictor", "version", "stage", "stage_reason", "run", "schema_version", "metrics_display",
        "artifact_name", "artifact_sha256", "created_at", "promoted_at",
    )
    readonly_fields = ("metrics_display", "artifact_name")
    actions = ["promote_to_champion"]

    def has_promote_permission(self, request):
        return request.user.has_perm("models_registry.promote_modelversion")

    @admin.action(permissions=["promote"], description="Promote to champion")
    def promote_to_champion(self, request, queryset):
        by_predictor: dict[int, list[ModelVersion]] = {}
        for version in queryset.select_related("predictor").order_by("predictor_id", "version"):
            by_predictor.setdefault(version.predictor_id, []).append(version)
        for versions in by_predictor.values():
            if len(versions) > 1:
                self.message_user(
                    request,
                    f"Select one version of {versions[0].predictor.slug} to promote, not {len(versions)}.",
                    messages.ERROR,
                )
                continue
            version = versions[0]
            if version.stage == Stage.CHAMPION:
                self.message_user(request, f"Version {version.version} of {version.predictor.slug} is already the champion.", messages.INFO)
                continue
            try:
                model_version_promote(version=version, user=request.user, reason="promoted in the admin")
            except PromotionRefused as exc:
                self.message_user(request, f"Cannot promote {version.predictor.slug} v{version.version}: {exc}.", messages.ERROR)
                continue
            self.message_user(
                request, f"Version {version.version} of {version.predictor.slug} is now the champion.", messages.SUCCESS
            )

    @admin.display(description="metrics")
    def metrics_short(self, obj):
        return _metrics_short(obj.metrics or {})

    @admin.display(description="metrics")
    def metrics_display(self, obj):
        return json_block(obj.metrics)

    @admin.display(description="artifact")
    def artifact_name(self, obj):
        # The file's name only: artifacts are not served over HTTP.
        return obj.artifact.name or EMPTY
