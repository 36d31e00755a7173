"""Operator API for training runs and model versions."""
from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import exceptions, serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from gateway.api import PROBLEM, _predictor_or_404, _require_object
from gateway.errors import Conflict, FieldValidationError
from gateway.permissions import HasDjangoPerm

from .models import ModelVersion, Stage, TrainingRun
from .presenters import run_as_dict, stage_histories, version_as_dict
from .services import (
    STAGE_REASON_MAX_LENGTH,
    PromotionRefused,
    RollbackRefused,
    model_version_promote,
    model_version_rollback,
)
from .training import TrainingAlreadyActive, training_run_request


class GateResultSerializer(serializers.Serializer):
    gate = serializers.CharField(help_text="e.g. min_metrics.accuracy, beat_champion, min_shadow_agreement")
    passed = serializers.BooleanField(allow_null=True, help_text="null while pending (shadow agreement)")
    value = serializers.JSONField(allow_null=True)
    threshold = serializers.JSONField(allow_null=True)
    detail = serializers.CharField()
    informational = serializers.BooleanField(required=False, help_text="recorded, never blocks (e.g. onnx_parity)")

    class Meta:
        ref_name = "GateResult"


class StageChangeSerializer(serializers.Serializer):
    stage = serializers.ChoiceField(choices=Stage.choices)
    reason = serializers.CharField()
    by = serializers.CharField(allow_null=True, help_text="username; null for automatic changes")
    at = serializers.DateTimeField()

    class Meta:
        ref_name = "StageChange"


def _run_fields() -> dict:
    # Fresh fields per serializer: declaring them moves them out of the mapping.
    return {
        "id": serializers.IntegerField(), "status": serializers.CharField(),
        "trigger": serializers.CharField(), "requested_by": serializers.CharField(allow_null=True),
        "estimator": serializers.CharField(allow_null=True),
        "params": serializers.JSONField(help_text="estimator, hyperparameters, split, grid search"),
        "metrics": serializers.JSONField(help_text="holdout metrics, calibration included"),
        "champion_metrics": serializers.JSONField(help_text="the champion of the time scored on the same holdout"),
        "fairness": serializers.JSONField(help_text="per group of the sensitive attribute, and the gaps"),
        "dataset": serializers.JSONField(help_text="label ids hash, counts, schema version"),
        "environment": serializers.JSONField(), "error": serializers.CharField(allow_null=True),
        "created_at": serializers.DateTimeField(),
        "started_at": serializers.DateTimeField(allow_null=True), "finished_at": serializers.DateTimeField(allow_null=True),
        "duration_seconds": serializers.FloatField(allow_null=True),
        "peak_memory_bytes": serializers.IntegerField(allow_null=True), "links": serializers.JSONField(),
    }


def _version_fields() -> dict:
    return {
        "version": serializers.IntegerField(), "predictor": serializers.CharField(),
        "stage": serializers.ChoiceField(choices=Stage.choices),
        "stage_reason": serializers.CharField(), "stage_history": serializers.ListField(child=StageChangeSerializer()),
        "metrics": serializers.JSONField(), "gates": serializers.ListField(child=GateResultSerializer()),
        "gates_passed": serializers.BooleanField(allow_null=True, help_text="null while a gate is pending"),
        "serving_format": serializers.CharField(),
        "training_run": serializers.IntegerField(), "artifact_sha256": serializers.CharField(),
        "onnx_sha256": serializers.CharField(allow_null=True),
        "schema_version": serializers.IntegerField(), "created_at": serializers.DateTimeField(),
        "promoted_at": serializers.DateTimeField(allow_null=True), "links": serializers.JSONField(),
    }


VersionSerializer = inline_serializer(
    "ModelVersion",
    {**_version_fields(), "run": inline_serializer("ModelVersionRun", _run_fields())},
)
RunSerializer = inline_serializer(
    "TrainingRun",
    {
        **_run_fields(), "predictor": serializers.CharField(),
        "model_version": serializers.IntegerField(allow_null=True),
        "gates": serializers.ListField(child=GateResultSerializer(), allow_null=True),
        "gates_passed": serializers.BooleanField(allow_null=True),
    },
)
RunDetailSerializer = inline_serializer(
    "TrainingRunDetail",
    {
        **_run_fields(), "predictor": serializers.CharField(),
        "model_version": serializers.IntegerField(allow_null=True),
        "gates": serializers.ListField(child=GateResultSerializer(), allow_null=True),
        "gates_passed": serializers.BooleanField(allow_null=True),
        "dataset": serializers.JSONField(help_text="the exact label set: label_ids, their hash, counts"),
        "logs": serializers.CharField(),
        "version": inline_serializer("TrainingRunVersion", _version_fields(), allow_null=True),
    },
)
REASON_MAX_LENGTH = STAGE_REASON_MAX_LENGTH


def _body_errors(request, allowed: tuple[str, ...]) -> tuple[dict, list[dict]]:
    """The optional JSON object body and its field errors (unknown fields, a reason that is
    not a string or too long)."""
    # No body at all parses as {} (or ""); a JSON `null` is a body, and not an object.
    body = _require_object(request.data) if request.data not in ("", b"") else {}
    errors = [{"field": name, "message": "unknown field"} for name in body if name not in allowed]
    reason = body.get("reason")
    if "reason" in body and not isinstance(reason, str):
        errors.append({"field": "reason", "message": "must be a string"})
    elif isinstance(reason, str) and len(reason) > REASON_MAX_LENGTH:
        errors.append({"field": "reason", "message": f"at most {REASON_MAX_LENGTH} characters"})
    return body, errors


class TrainView(APIView):
    permission_classes = [HasDjangoPerm]
    required_perms = ("models_registry.add_trainingrun",)

    @extend_schema(operation_id="train", request=None, responses={202: RunSerializer, 404: PROBLEM, 409: PROBLEM, 422: PROBLEM},
                   description="Queue a training run. The body is empty (or `{}`): a run takes its settings from the "
                   "predictor's definition, so any field sent is refused rather than silently ignored.")
    def post(self, request, slug: str):
        predictor = _predictor_or_404(slug)
        _, errors = _body_errors(request, ())
        if errors:
            raise FieldValidationError(errors)
        try:
            run = training_run_request(predictor=predictor, requested_by=request.user)
        except TrainingAlreadyActive as exc:
            detail = "A training run is already queued or running for this predictor"
            raise Conflict(f"{detail} (run {exc.run.pk})." if exc.run else f"{detail}.") from None
        run = TrainingRun.objects.select_related("predictor").get(pk=run.pk)
        return Response(run_as_dict(run), status=202, headers={"Location": f"/training-runs/{run.pk}"})


class TrainingRunView(APIView):
    permission_classes = [HasDjangoPerm]
    required_perms = ("models_registry.view_trainingrun",)

    @extend_schema(
        operation_id="training_run_get",
        description="Everything the run holds: params, metrics (calibration included), the champion's metrics on "
        "the same holdout, fairness, the exact label set, environment, duration, peak memory and logs; and the "
        "version it produced with its gate results, stage and stage history.",
        responses={200: RunDetailSerializer, 404: PROBLEM},
    )
    def get(self, request, run_id: int):
        run = TrainingRun.objects.select_related("predictor", "requested_by").filter(pk=run_id).first()
        if run is None:
            raise exceptions.NotFound("No such training run.")
        version = ModelVersion.objects.select_related("predictor").filter(run=run).first()
        history = stage_histories([version.pk]).get(version.pk, []) if version else None
        return Response(run_as_dict(run, detail=True, version=version, history=history))


class ModelListView(APIView):
    permission_classes = [HasDjangoPerm]
    required_perms = ("models_registry.view_modelversion",)

    @extend_schema(
        operation_id="models_list",
        description="Every version, newest first, with its stage and stage history (who, why, when), gate results, "
        "serving format and a summary of its training run (no logs, no label ids).",
        responses={200: inline_serializer("ModelVersionList", {"results": serializers.ListField(child=VersionSerializer)}),
                   404: PROBLEM},
    )
    def get(self, request, slug: str):
        predictor = _predictor_or_404(slug)
        versions = list(
            ModelVersion.objects.filter(predictor=predictor)
            .select_related("predictor", "run", "run__predictor", "run__requested_by")
            .defer("run__logs")
            .order_by("-version")
        )
        histories = stage_histories(v.pk for v in versions)
        return Response({"results": [version_as_dict(v, history=histories.get(v.pk, [])) for v in versions]})


class PromoteRequest(serializers.Serializer):
    force = serializers.BooleanField(required=False, help_text="promote past failed or pending gates")
    reason = serializers.CharField(required=False, allow_blank=True, max_length=REASON_MAX_LENGTH,
                                   help_text="kept in the history; required (not blank) with force")
    # In the OpenAPI schema (gateway.schema_extensions.OzAutoSchema): forcing needs a reason.
    openapi_request_extra = {"anyOf": [
        {"properties": {"force": {"not": {"enum": [True]}}}},
        {"required": ["reason"], "properties": {"reason": {"pattern": r"\S"}}},
    ]}

    class Meta:
        ref_name = "PromoteRequest"
RollbackRequest = inline_serializer(
    "RollbackRequest",
    {
        "reason": serializers.CharField(required=False, allow_blank=True, max_length=REASON_MAX_LENGTH,
                                        help_text="kept in the history"),
        "expected_version": serializers.IntegerField(
            required=False, min_value=1, max_value=2_147_483_647,
            help_text="roll back only if this version is still the champion (409 otherwise), so two "
            "operators acting at once do not go back two versions",
        ),
    },
)


def _version_response(pk: int) -> Response:
    version = ModelVersion.objects.select_related("predictor", "run", "run__predictor", "run__requested_by").get(pk=pk)
    return Response(version_as_dict(version))


class PromoteView(APIView):
    permission_classes = [HasDjangoPerm]
    required_perms = ("models_registry.promote_modelversion",)

    @extend_schema(
        operation_id="model_promote",
        description="Make the version the champion (the current one is archived). Refused with 409, naming the "
        "gates, while a gate has failed or is pending, unless `force` with a written `reason`.",
        request=PromoteRequest,
        responses={200: VersionSerializer, 401: PROBLEM, 403: PROBLEM, 404: PROBLEM, 409: PROBLEM, 422: PROBLEM},
    )
    def post(self, request, slug: str, version: int):
        predictor = _predictor_or_404(slug)
        body, errors = _body_errors(request, ("force", "reason"))
        if "force" in body and not isinstance(body["force"], bool):
            errors.append({"field": "force", "message": "must be true or false"})
        if body.get("force") is True and not (isinstance(body.get("reason"), str) and body["reason"].strip()):
            errors.append({"field": "reason", "message": "required when forcing a promotion past its gates"})
        if errors:
            raise FieldValidationError(errors)
        target = ModelVersion.objects.filter(predictor=predictor, version=version).first()
        if target is None:
            raise exceptions.NotFound(f"{slug} has no model version {version}.")
        try:
            target = model_version_promote(
                version=target, user=request.user, reason=body.get("reason", ""), force=body.get("force", False)
            )
        except PromotionRefused as exc:
            raise Conflict(f"{slug} v{version} was not promoted: {exc}.") from None
        return _version_response(target.pk)


class RollbackView(APIView):
    permission_classes = [HasDjangoPerm]
    required_perms = ("models_registry.promote_modelversion",)

    @extend_schema(
        operation_id="predictor_rollback",
        description="The previous champion becomes champion again, in one step; the rolled-back champion is "
        "rejected, so a second rollback goes further back. 409 when there is nothing to roll back to.",
        request=RollbackRequest,
        responses={200: VersionSerializer, 401: PROBLEM, 403: PROBLEM, 404: PROBLEM, 409: PROBLEM, 422: PROBLEM},
    )
    def post(self, request, slug: str):
        predictor = _predictor_or_404(slug)
        body, errors = _body_errors(request, ("reason", "expected_version"))
        expected = body.get("expected_version")
        if "expected_version" in body and (
            not isinstance(expected, int) or isinstance(expected, bool) or not 1 <= expected <= 2_147_483_647
        ):
            errors.append({"field": "expected_version", "message": "must be a whole number from 1 to 2147483647"})
        if errors:
            raise FieldValidationError(errors)
        expected_champion = None
        if expected is not None:
            expected_champion = ModelVersion.objects.filter(predictor=predictor, version=expected).first()
            if expected_champion is None:
                raise Conflict(f"Nothing rolled back: {slug} has no v{expected}.")
        try:
            restored = model_version_rollback(
                predictor=predictor, user=request.user, reason=body.get("reason", ""), expected_champion=expected_champion
            )
        except RollbackRefused as exc:
            raise Conflict(f"Nothing to roll back for {slug}: {exc}.") from None
        return _version_response(restored.pk)


DRIFT_HISTORY_DEFAULT = 20
DRIFT_HISTORY_MAX = 200
DriftReportSerializer = inline_serializer(
    "DriftReport",
    {
        "id": serializers.IntegerField(), "predictor": serializers.CharField(),
        "model_version": serializers.IntegerField(allow_null=True, help_text="the champion compared with"),
        "window_start": serializers.DateTimeField(), "window_end": serializers.DateTimeField(),
        "n_live": serializers.IntegerField(help_text="live rows compared (a uniform sample of at most OZ_DRIFT_MAX_ROWS)"),
        "alert": serializers.BooleanField(help_text="a field's PSI above OZ_DRIFT_PSI_ALERT over enough rows"),
        "fields": serializers.JSONField(help_text='{"field": {"psi", "test": "ks"|"chi2", "statistic", "p_value", "drifted"}}'),
        "outputs": serializers.JSONField(help_text="output mix by source over the window, the training reference, PSI"),
        "created_at": serializers.DateTimeField(),
    },
)


class DriftHistoryView(APIView):
    permission_classes = [HasDjangoPerm]
    required_perms = ("models_registry.view_modelversion",)

    @extend_schema(
        operation_id="predictor_drift",
        description="The predictor's drift reports, newest first (`limit`, default 20, at most 200; `before`: only "
        "reports with a smaller id, for the next page). Each compares a window of live inputs with the training "
        "inputs of the champion of the time: PSI and a KS (numbers) or chi-squared (categories) test per field, "
        "and the output mix by source against the training labels.",
        parameters=[
            OpenApiParameter("limit", {"type": "integer", "minimum": 1, "maximum": DRIFT_HISTORY_MAX},
                             description="reports to return (1-200, default 20)"),
            OpenApiParameter("before", {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
                             description="only reports with an id below this (paging)"),
        ],
        responses={
            200: inline_serializer("DriftReportList", {
                "results": serializers.ListField(child=DriftReportSerializer),
                "next": serializers.CharField(allow_null=True, help_text="the next (older) page"),
            }),
            401: PROBLEM, 403: PROBLEM, 404: PROBLEM, 422: PROBLEM,
        },
    )
    def get(self, request, slug: str):
        from .drift import drift_report_as_dict
        from .models import DriftReport

        predictor = _predictor_or_404(slug)
        errors, numbers = [], {}
        for name, low, high, default in (("limit", 1, DRIFT_HISTORY_MAX, DRIFT_HISTORY_DEFAULT), ("before", 1, 2**63 - 1, None)):
            raw = request.query_params.get(name)
            if raw is None:
                numbers[name] = default
                continue
            try:
                numbers[name] = int(raw)
                if not low <= numbers[name] <= high:
                    raise ValueError
            except ValueError:
                errors.append({"field": name, "message": f"must be a whole number from {low} to {high}"})
        if errors:
            raise FieldValidationError(errors)
        reports = DriftReport.objects.filter(predictor=predictor).select_related("predictor", "model_version").order_by("-id")
        if numbers["before"] is not None:
            reports = reports.filter(id__lt=numbers["before"])
        page = list(reports[: numbers["limit"] + 1])
        more = len(page) > numbers["limit"]
        page = page[: numbers["limit"]]
        next_url = f"/predictors/{slug}/drift?limit={numbers['limit']}&before={page[-1].pk}" if more else None
        return Response({"results": [drift_report_as_dict(r) for r in page], "next": next_url})
