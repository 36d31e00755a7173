"""Operator API for training runs and model versions."""
from __future__ import annotations

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import exceptions, serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from gateway.api import PROBLEM, _predictor_or_404, _require_object
from gateway.errors import Conflict, FieldValidationError
from gateway.permissions import HasDjangoPerm

from .models import ModelVersion, TrainingRun
from .presenters import run_as_dict, version_as_dict
from .services import PromotionRefused, model_version_promote
from .training import TrainingAlreadyActive, training_run_request

RunSerializer = inline_serializer(
    "TrainingRun",
    {
        "id": serializers.IntegerField(), "predictor": serializers.CharField(), "status": serializers.CharField(),
        "trigger": serializers.CharField(), "estimator": serializers.CharField(allow_null=True),
        "params": serializers.JSONField(), "metrics": serializers.JSONField(), "dataset": serializers.JSONField(),
        "environment": serializers.JSONField(), "error": serializers.CharField(allow_null=True),
        "model_version": serializers.IntegerField(allow_null=True), "created_at": serializers.DateTimeField(),
        "started_at": serializers.DateTimeField(allow_null=True), "finished_at": serializers.DateTimeField(allow_null=True),
        "duration_seconds": serializers.FloatField(allow_null=True), "links": serializers.JSONField(),
    },
)
VersionSerializer = inline_serializer(
    "ModelVersion",
    {
        "version": serializers.IntegerField(), "predictor": serializers.CharField(), "stage": serializers.CharField(),
        "stage_reason": serializers.CharField(), "metrics": serializers.JSONField(),
        "training_run": serializers.IntegerField(), "artifact_sha256": serializers.CharField(),
        "schema_version": serializers.IntegerField(), "created_at": serializers.DateTimeField(),
        "promoted_at": serializers.DateTimeField(allow_null=True),
    },
)


class TrainView(APIView):
    permission_classes = [HasDjangoPerm]
    required_perms = ("models_registry.add_trainingrun",)

    @extend_schema(operation_id="train", request=None, responses={202: RunSerializer, 404: PROBLEM, 409: PROBLEM})
    def post(self, request, slug: str):
        predictor = _predictor_or_404(slug)
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

    @extend_schema(operation_id="training_run_get", responses={200: RunSerializer, 404: PROBLEM})
    def get(self, request, run_id: int):
        run = TrainingRun.objects.select_related("predictor", "model_version").filter(pk=run_id).first()
        if run is None:
            raise exceptions.NotFound("No such training run.")
        return Response(run_as_dict(run))


class ModelListView(APIView):
    permission_classes = [HasDjangoPerm]
    required_perms = ("models_registry.view_modelversion",)

    @extend_schema(
        operation_id="models_list",
        responses={200: inline_serializer("ModelVersionList", {"results": serializers.ListField(child=VersionSerializer)}),
                   404: PROBLEM},
    )
    def get(self, request, slug: str):
        predictor = _predictor_or_404(slug)
        versions = ModelVersion.objects.filter(predictor=predictor).select_related("predictor").order_by("-version")
        return Response({"results": [version_as_dict(v) for v in versions]})


PromoteRequest = inline_serializer(
    "PromoteRequest",
    {"force": serializers.BooleanField(required=False), "reason": serializers.CharField(required=False)},
)


class PromoteView(APIView):
    permission_classes = [HasDjangoPerm]
    required_perms = ("models_registry.promote_modelversion",)

    @extend_schema(operation_id="model_promote", request=PromoteRequest,
                   responses={200: VersionSerializer, 404: PROBLEM, 409: PROBLEM, 422: PROBLEM})
    def post(self, request, slug: str, version: int):
        predictor = _predictor_or_404(slug)
        body = _require_object(request.data) if request.data else {}
        errors = [{"field": name, "message": "unknown field"} for name in body if name not in ("force", "reason")]
        if "reason" in body and not isinstance(body["reason"], str):
            errors.append({"field": "reason", "message": "must be a string"})
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
            raise Conflict(str(exc)) from None
        target = ModelVersion.objects.select_related("predictor").get(pk=target.pk)
        return Response(version_as_dict(target))
