"""Admin for training runs and model versions: read-only records, and pages that call the
services — request a training run, promote a version (its gate results shown; forcing past
a failed or pending gate needs a written reason), roll the champion back (a confirmation
page asking why) — plus two read-only views: runs compared side by side, and each metric
over a predictor's versions as a server-drawn SVG chart with a table beside it."""
from __future__ import annotations

import math

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from gateway.admin_readonly import EMPTY, HistoryAdmin, ReadOnlyAdminMixin, json_block, json_inline
from gateway.models import Predictor

from .gates import metric_lower_is_better
from .models import ModelVersion, Stage, TrainingRun
from .services import (
    STAGE_REASON_MAX_LENGTH,
    PromotionRefused,
    RollbackRefused,
    gates_blocking,
    model_version_promote,
    model_version_rollback,
    rollback_target,
)
from .training import TrainingAlreadyActive, training_run_request

# The metric shown in change lists, by output type.
HEADLINE_METRICS = ("accuracy", "f1_macro", "rmse", "r2")
PROMOTE_PERMISSION = "models_registry.promote_modelversion"
# Metrics (last part of a dotted name) where higher is better; lower-is-better ones are in
# gates.LOWER_IS_BETTER, plus calibration errors and fairness gaps. Others are not ranked.
HIGHER_IS_BETTER = frozenset({"accuracy", "f1_macro", "roc_auc", "r2", "balanced_accuracy", "precision", "recall"})
LOWER_IS_BETTER_EXTRA = frozenset({"ece", "expected_calibration_error", "max_calibration_error"})
MAX_COMPARED_RUNS = 20


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
    shown = [f"{name} {metrics[name]:.3f}" for name in HEADLINE_METRICS if _is_number(metrics.get(name))]
    return ", ".join(shown[:2]) or EMPTY


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _flatten(data, prefix: str = "") -> dict:
    """Nested mappings as dotted names (`calibration.brier`); lists stay whole values."""
    out: dict = {}
    for key, value in (data or {}).items() if isinstance(data, dict) else ():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def metric_direction(name: str) -> str | None:
    """"higher", "lower" or None (not ranked) for a metric's dotted name."""
    last = name.rsplit(".", 1)[-1]
    if last in HIGHER_IS_BETTER:
        return "higher"
    if metric_lower_is_better(last) or last in LOWER_IS_BETTER_EXTRA or last.endswith(("_difference", "_gap")):
        return "lower"
    return None


def _cell(value) -> str:
    if _is_number(value) and isinstance(value, float):
        return f"{value:.4g}"
    if value is None or value == "":
        return EMPTY
    return json_inline(value)


def gates_table(gates: list[dict] | None) -> str:
    """Gate results as a small HTML table (passed / FAILED / pending)."""
    if not gates:
        return "no gates evaluated"
    state = {True: ("passed", "#2e7d32"), False: ("FAILED", "#c62828"), None: ("pending", "#b26a00")}
    rows = []
    for gate in gates:
        label, colour = state.get(gate.get("passed"), ("?", "inherit"))
        if gate.get("informational"):
            label += " (informational)"
        rows.append((gate.get("gate", "?"), colour, label, _cell(gate.get("value")), _cell(gate.get("threshold")),
                     gate.get("detail", "")))
    body = format_html_join(
        "", '<tr><td>{}</td><td style="color:{};font-weight:600">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>', rows
    )
    return format_html(
        '<table class="oz-gates"><thead><tr><th>gate</th><th>result</th><th>value</th><th>threshold</th>'
        "<th>detail</th></tr></thead><tbody>{}</tbody></table>",
        body,
    )


def _gates_state(version: ModelVersion) -> str:
    if version.gates_passed is True:
        return "passed"
    if version.gates_passed is False:
        return "failed"
    return "pending" if version.gates else "not evaluated"


# --- training runs ------------------------------------------------------------------------


def compare_rows(runs: list[TrainingRun]) -> list[dict]:
    """The rows of the comparison page: sections of named rows, one cell per run, the best
    cell of each ranked metric marked (only when two or more runs have a value)."""
    versions = {v.run_id: v for v in ModelVersion.objects.filter(run__in=runs)}
    sections: list[dict] = []

    def plain(title: str, values: dict[str, list]) -> None:
        rows = [{"name": name, "cells": [{"text": _cell(v), "best": False} for v in cells]} for name, cells in values.items()]
        sections.append({"title": title, "rows": rows})

    def ranked(title: str, per_run: list[dict], rank: bool) -> None:
        names: list[str] = []
        for flat in per_run:
            names.extend(n for n in flat if n not in names)
        rows = []
        for name in names:
            values = [flat.get(name) for flat in per_run]
            numbers = [v for v in values if _is_number(v)]
            # Per-group rows (selection rate, accuracy of a group) describe, they do not rank.
            direction = metric_direction(name) if rank and not name.startswith("by_group.") else None
            best = None
            if direction and len(numbers) >= 2 and len(set(numbers)) > 1:
                best = max(numbers) if direction == "higher" else min(numbers)
            rows.append({
                "name": name,
                "direction": direction,
                "cells": [{"text": _cell(v), "best": best is not None and _is_number(v) and v == best} for v in values],
            })
        sections.append({"title": title, "rows": rows})

    def version_text(run):
        version = versions.get(run.pk)
        return f"v{version.version} ({version.stage})" if version else None

    plain("Run", {
        "predictor": [run.predictor.slug for run in runs],
        "status": [run.status for run in runs],
        "trigger": [run.trigger for run in runs],
        "model version": [version_text(run) for run in runs],
        "gates": [_gates_state(versions[run.pk]) if run.pk in versions else None for run in runs],
        "labels": [(run.dataset or {}).get("n_labels") for run in runs],
        "label set (sha256)": [((run.dataset or {}).get("label_ids_sha256") or "")[:12] for run in runs],
        "estimator": [run.estimator for run in runs],
        "created": [run.created_at.strftime("%Y-%m-%d %H:%M") for run in runs],
        "duration (s)": [run.duration_seconds for run in runs],
        "peak memory (MiB)": [run.peak_memory_bytes / 2**20 if run.peak_memory_bytes else None for run in runs],
    })
    ranked("Params", [_flatten(run.params) for run in runs], rank=False)
    ranked("Metrics (holdout)", [_flatten(run.metrics) for run in runs], rank=True)
    ranked("Champion on the same holdout", [_flatten(run.champion_metrics) for run in runs], rank=False)
    ranked("Fairness", [_flatten(run.fairness) for run in runs], rank=True)
    return [section for section in sections if section["rows"]]


CHART_WIDTH, CHART_HEIGHT = 520, 180
CHART_PAD = {"left": 56, "right": 16, "top": 14, "bottom": 30}


def metric_chart(name: str, points: list[tuple[int, float]]) -> dict:
    """Geometry of one line chart (x: version, y: the metric), drawn by the template as
    inline SVG. Versions are spaced evenly; a single point sits in the middle."""
    left, right = CHART_PAD["left"], CHART_WIDTH - CHART_PAD["right"]
    top, bottom = CHART_PAD["top"], CHART_HEIGHT - CHART_PAD["bottom"]
    values = [value for _, value in points]
    low, high = min(values), max(values)
    if low == high:
        spread = abs(low) * 0.05 or 0.5
        low, high = low - spread, high + spread
    step = (right - left) / (len(points) - 1) if len(points) > 1 else 0
    marks = []
    for i, (version, value) in enumerate(points):
        x = left + i * step if len(points) > 1 else (left + right) / 2
        y = bottom - (value - low) / (high - low) * (bottom - top)
        marks.append({"x": round(x, 1), "y": round(y, 1), "version": version, "value": f"{value:.4g}"})
    direction = metric_direction(name)
    return {
        "name": name,
        "direction": {"higher": "higher is better", "lower": "lower is better"}.get(direction, ""),
        "width": CHART_WIDTH, "height": CHART_HEIGHT, "left": left, "right": right, "top": top, "bottom": bottom,
        "low": f"{low:.4g}", "high": f"{high:.4g}",
        "polyline": " ".join(f"{m['x']},{m['y']}" for m in marks),
        "marks": marks,
        "label_y": CHART_HEIGHT - 8,
    }


def metric_charts(predictor: Predictor) -> tuple[list[dict], list[str], list[dict]]:
    """(charts, metric names, table rows) for every numeric metric over the predictor's
    versions, oldest first. Counts (n_train, n_holdout) are left out of the charts."""
    versions = list(ModelVersion.objects.filter(predictor=predictor).order_by("version").values("version", "stage", "metrics"))
    flats = [(v, _flatten(v["metrics"])) for v in versions]
    names: list[str] = []
    for _, flat in flats:
        names.extend(n for n, value in flat.items() if _is_number(value) and n not in names and not n.startswith("n_"))
    charts = []
    for name in names:
        points = [(v["version"], flat[name]) for v, flat in flats if _is_number(flat.get(name))]
        if points:
            charts.append(metric_chart(name, points))
    rows = [{"version": v["version"], "stage": v["stage"], "cells": [_cell(flat.get(n)) for n in names]} for v, flat in flats]
    return charts, names, rows


class RegistryAdminPages:
    """Helpers shared by the two admins' own pages."""

    def _url(self, name: str, *args) -> str:
        return reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_{name}", args=args,
                       current_app=self.admin_site.name)

    def _render(self, request, template: str, title: str, context: dict):
        context = {**self.admin_site.each_context(request), "opts": self.opts, "title": title, **context}
        return TemplateResponse(request, template, context)


@admin.register(TrainingRun)
class TrainingRunAdmin(RegistryAdminPages, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("id", "predictor", "status", "trigger", "requested_by", "metrics_short", "n_labels", "created_at", "duration_display")
    list_filter = ("predictor", "status", "trigger")
    list_select_related = ("predictor", "requested_by")
    change_list_template = "admin/models_registry/trainingrun/change_list.html"
    fields = (
        "predictor", "status", "trigger", "requested_by", "model_version_link", "estimator", "params_display",
        "metrics_display", "champion_metrics_display", "fairness_display", "dataset_display", "environment_display",
        "error_display", "logs_display", "created_at", "started_at", "finished_at", "duration_seconds",
        "peak_memory_display", "chart_link",
    )
    readonly_fields = (
        "model_version_link", "params_display", "metrics_display", "champion_metrics_display", "fairness_display",
        "dataset_display", "environment_display", "error_display", "logs_display", "peak_memory_display", "chart_link",
    )
    actions = ["compare_runs", "train_again"]

    def get_queryset(self, request):
        return super().get_queryset(request).defer("logs")

    def get_urls(self):
        view = self.admin_site.admin_view  # staff login, never cached
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        own = [
            path("compare/", view(self.compare_view), name=f"{prefix}_compare"),
            path("charts/", view(self.charts_index_view), name=f"{prefix}_charts"),
            path("charts/<slug:slug>/", view(self.chart_view), name=f"{prefix}_chart"),
        ]
        # Before the model admin's own URLs, whose "<object_id>/" would swallow "compare/".
        return own + super().get_urls()

    def has_train_permission(self, request):
        return request.user.has_perm("models_registry.add_trainingrun")

    @admin.action(permissions=["train"], description="Train again (a new run for each selected run's predictor)")
    def train_again(self, request, queryset):
        predictors = {run.predictor_id: run.predictor for run in queryset.select_related("predictor")}
        training_request_for(self, request, predictors.values())

    @admin.action(permissions=["view"], description="Compare the selected runs (two or more)")
    def compare_runs(self, request, queryset):
        ids = sorted(queryset.values_list("pk", flat=True))
        if len(ids) < 2:
            self.message_user(request, "Select two or more runs to compare.", messages.WARNING)
            return None
        return HttpResponseRedirect(f"{self._url('compare')}?ids={','.join(map(str, ids[:MAX_COMPARED_RUNS]))}")

    # --- pages ----------------------------------------------------------------------------

    def compare_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        # Plain ASCII digits of a size a key can have ("²".isdigit() is true; int() refuses it).
        parts = (part.strip() for part in request.GET.get("ids", "").split(","))
        wanted = [int(p) for p in parts if p.isascii() and p.isdecimal() and len(p) <= 18][:MAX_COMPARED_RUNS]
        runs = list(TrainingRun.objects.filter(pk__in=wanted).select_related("predictor").defer("logs").order_by("pk"))
        return self._render(request, "admin/models_registry/trainingrun/compare.html", "Compare training runs", {
            "runs": [{"run": run, "url": self._url("change", run.pk)} for run in runs],
            "sections": compare_rows(runs) if runs else [],
            "changelist_url": self._url("changelist"),
        })

    def charts_index_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        predictors = [{"slug": p.slug, "url": self._url("chart", p.slug), "description": p.description}
                      for p in Predictor.objects.order_by("slug")]
        return self._render(request, "admin/models_registry/trainingrun/charts.html", "Metrics over versions", {
            "predictors": predictors, "changelist_url": self._url("changelist"),
        })

    def chart_view(self, request, slug: str):
        if not self.has_view_permission(request):
            raise PermissionDenied
        predictor = get_object_or_404(Predictor, slug=slug)
        charts, names, rows = metric_charts(predictor)
        return self._render(request, "admin/models_registry/trainingrun/chart.html", f"{predictor.slug}: metrics over versions", {
            "predictor": predictor, "charts": charts, "names": names, "rows": rows,
            "changelist_url": self._url("changelist"), "charts_url": self._url("charts"),
        })

    # --- fields ---------------------------------------------------------------------------

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
        return format_html('<a href="{}">{}</a> — gates {}', url, version, _gates_state(version))

    @admin.display(description="params")
    def params_display(self, obj):
        return json_block(obj.params)

    @admin.display(description="metrics")
    def metrics_display(self, obj):
        return json_block(obj.metrics)

    @admin.display(description="champion on the same holdout")
    def champion_metrics_display(self, obj):
        return json_block(obj.champion_metrics) if obj.champion_metrics else "no champion at the time"

    @admin.display(description="fairness")
    def fairness_display(self, obj):
        return json_block(obj.fairness) if obj.fairness else EMPTY

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

    @admin.display(description="logs")
    def logs_display(self, obj):
        if not obj.logs:
            return EMPTY
        return format_html('<pre style="margin:0;white-space:pre-wrap;max-height:30em;overflow:auto">{}</pre>', obj.logs)

    @admin.display(description="peak memory")
    def peak_memory_display(self, obj):
        return f"{obj.peak_memory_bytes / 2**20:.1f} MiB" if obj.peak_memory_bytes else EMPTY

    @admin.display(description="metrics over versions")
    def chart_link(self, obj):
        return format_html('<a href="{}">{} — chart and table</a>', self._url("chart", obj.predictor.slug), obj.predictor.slug)


# --- model versions -----------------------------------------------------------------------


class PromoteForm(forms.Form):
    reason = forms.CharField(
        required=False, max_length=STAGE_REASON_MAX_LENGTH,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 70}),
        help_text="Why; kept in the version's history with your name.",
    )

    def __init__(self, *args, needs_force: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.needs_force = needs_force
        if needs_force:
            self.fields["force"] = forms.BooleanField(
                required=True, label="Promote anyway, past the gates that did not pass",
            )
            self.fields["reason"].required = True
            self.fields["reason"].help_text = "Required to force a promotion; kept in the history with your name."

    def clean_reason(self):
        reason = self.cleaned_data["reason"].strip()
        if self.needs_force and not reason:
            raise forms.ValidationError("Write why you promote past the gates.")
        return reason


class RollbackForm(forms.Form):
    reason = forms.CharField(
        max_length=STAGE_REASON_MAX_LENGTH,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 70}),
        help_text="Why you roll back; kept in the history of both versions with your name.",
    )

    def clean_reason(self):
        reason = self.cleaned_data["reason"].strip()
        if not reason:
            raise forms.ValidationError("Write why you roll back.")
        return reason


@admin.register(ModelVersion)
class ModelVersionAdmin(RegistryAdminPages, ReadOnlyAdminMixin, HistoryAdmin):
    list_display = ("predictor", "version", "stage", "stage_why", "gates_state", "metrics_short", "serving_format",
                    "created_at", "promoted_at", "stage_buttons")
    list_filter = ("predictor", "stage", "gates_passed")
    list_select_related = ("predictor",)
    fields = (
        "predictor", "version", "stage", "stage_buttons", "stage_reason", "run", "schema_version", "gates_passed",
        "gates_display", "metrics_display", "serving_format", "artifact_name", "artifact_sha256", "onnx_sha256",
        "created_at", "promoted_at",
    )
    readonly_fields = ("stage_buttons", "gates_display", "metrics_display", "artifact_name")
    actions = ["promote_to_champion"]

    def get_urls(self):
        view = self.admin_site.admin_view  # staff login, never cached, CSRF protected
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        own = [
            path("<int:object_id>/promote/", view(self.promote_view), name=f"{prefix}_promote"),
            path("<int:object_id>/rollback/", view(self.rollback_view), name=f"{prefix}_rollback"),
        ]
        return own + super().get_urls()

    def has_promote_permission(self, request):
        return request.user.has_perm(PROMOTE_PERMISSION)

    # The stage buttons lead to pages only promoters may use: others do not see them.
    def get_list_display(self, request):
        shown = super().get_list_display(request)
        return shown if self.has_promote_permission(request) else [f for f in shown if f != "stage_buttons"]

    def get_fields(self, request, obj=None):
        shown = super().get_fields(request, obj)
        return shown if self.has_promote_permission(request) else [f for f in shown if f != "stage_buttons"]

    def _require_promoter(self, request):
        if not self.has_promote_permission(request):
            raise PermissionDenied

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
            if gates_blocking(version):
                if len(by_predictor) == 1:
                    # The promote page shows the gates and asks for a reason to force past them.
                    return HttpResponseRedirect(self._url("promote", version.pk))
                self.message_user(request, format_html(
                    'Version {} of {} has gates that did not pass: <a href="{}">see them, and force it with a reason</a>.',
                    version.version, version.predictor.slug, self._url("promote", version.pk),
                ), messages.WARNING)
                continue
            try:
                model_version_promote(version=version, user=request.user, reason="promoted in the admin")
            except PromotionRefused as exc:
                self.message_user(request, f"Cannot promote {version.predictor.slug} v{version.version}: {exc}.", messages.ERROR)
                continue
            self.message_user(
                request, f"Version {version.version} of {version.predictor.slug} is now the champion.", messages.SUCCESS
            )
        return None

    # --- pages ----------------------------------------------------------------------------

    def promote_view(self, request, object_id: int):
        self._require_promoter(request)
        version = get_object_or_404(ModelVersion.objects.select_related("predictor"), pk=object_id)
        change_url = self._url("change", version.pk)
        if version.stage == Stage.CHAMPION:
            messages.info(request, f"Version {version.version} of {version.predictor.slug} is already the champion.")
            return HttpResponseRedirect(change_url)
        blocking = gates_blocking(version)
        needs_force = bool(blocking) or version.stage == Stage.REJECTED
        form = PromoteForm(request.POST if request.method == "POST" else None, needs_force=needs_force)
        if request.method == "POST" and form.is_valid():
            try:
                model_version_promote(
                    version=version, user=request.user, force=form.cleaned_data.get("force", False),
                    reason=form.cleaned_data["reason"] or "promoted in the admin",
                )
            except PromotionRefused as exc:
                form.add_error(None, f"Not promoted: {exc}.")
            else:
                messages.success(request, f"Version {version.version} of {version.predictor.slug} is now the champion.")
                return HttpResponseRedirect(change_url)
        champion = ModelVersion.objects.filter(predictor=version.predictor, stage=Stage.CHAMPION).first()
        return self._render(request, "admin/models_registry/modelversion/promote.html",
                            f"Promote {version.predictor.slug} v{version.version}", {
                                "version": version, "champion": champion, "gates": gates_table(version.gates),
                                "blocking": blocking, "needs_force": needs_force, "form": form,
                                "change_url": change_url, "changelist_url": self._url("changelist"),
                            })

    def rollback_view(self, request, object_id: int):
        self._require_promoter(request)
        version = get_object_or_404(ModelVersion.objects.select_related("predictor"), pk=object_id)
        change_url = self._url("change", version.pk)
        if version.stage != Stage.CHAMPION:
            messages.error(
                request, f"Version {version.version} of {version.predictor.slug} is not the champion; only the champion is rolled back."
            )
            return HttpResponseRedirect(change_url)
        form = RollbackForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            try:
                restored = model_version_rollback(
                    predictor=version.predictor, user=request.user, reason=form.cleaned_data["reason"],
                    expected_champion=version,
                )
            except RollbackRefused as exc:
                messages.error(request, f"Nothing rolled back: {exc}.")
                return HttpResponseRedirect(change_url)
            messages.success(
                request,
                f"Rolled back {version.predictor.slug}: v{restored.version} is the champion again; v{version.version} is rejected.",
            )
            return HttpResponseRedirect(self._url("change", restored.pk))
        others = ModelVersion.objects.filter(predictor=version.predictor).exclude(pk=version.pk)
        return self._render(request, "admin/models_registry/modelversion/rollback.html",
                            f"Roll back {version.predictor.slug} v{version.version}", {
                                "version": version, "target": rollback_target(others), "form": form,
                                "change_url": change_url, "changelist_url": self._url("changelist"),
                            })

    # --- fields ---------------------------------------------------------------------------

    @admin.display(description="why")
    def stage_why(self, obj):
        # The last stage change's reason ("gates failed: …", "rolled back to v1: …"), in full on hover.
        reason = obj.stage_reason or ""
        if len(reason) <= 70:
            return reason or EMPTY
        return format_html('<span title="{}">{}…</span>', reason, reason[:70])

    @admin.display(description="gates", ordering="gates_passed")
    def gates_state(self, obj):
        return _gates_state(obj)

    @admin.display(description="stage actions")
    def stage_buttons(self, obj):
        # Links to confirmation pages; the change itself is a POST there (CSRF, a reason).
        if obj is None or obj.pk is None:
            return EMPTY
        if obj.stage == Stage.CHAMPION:
            return format_html('<a class="button" href="{}">Roll back</a>', self._url("rollback", obj.pk))
        return format_html('<a class="button" href="{}">Promote…</a>', self._url("promote", obj.pk))

    @admin.display(description="gate results")
    def gates_display(self, obj):
        return gates_table(obj.gates)

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
