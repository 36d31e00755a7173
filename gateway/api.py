"""Gateway HTTP API: /predict, predictions, predictors and routing, health."""
from __future__ import annotations

import time
import uuid

from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from models_registry.models import ModelVersion, Stage

from . import serializers as s
from .auth import touch_key
from .errors import Conflict, FieldValidationError, problem_response
from .models import Prediction, PredictionStatus, Predictor
from .observability import prediction_observe
from .permissions import HasDjangoPerm, IsApiClient, IsApiClientOrHasPerm, is_api_client
from .presenters import prediction_as_dict
from .schema import input_validate, output_error
from .selectors import prediction_wait, predictor_for_request
from .services import (
    IdempotencyConflict,
    RoutingInvalid,
    prediction_create,
    request_fingerprint,
    routing_update,
)
from .serving_cache import serving_get

PREDICT_FIELDS = {"input", "callback_url", "wait", "explain", "routing_key"}
PROBLEM = OpenApiResponse(s.ProblemSerializer, description="problem+json")


def _status_for(prediction: Prediction) -> int:
    return 202 if prediction.status == PredictionStatus.PENDING else 200


def _require_object(data) -> dict:
    if not isinstance(data, dict):
        raise FieldValidationError([{"field": "", "message": "the body must be a JSON object"}])
    return data


def _wait_param(request) -> int:
    raw = request.query_params.get("wait")
    if raw is None:  # absent; an empty value (`?wait=`) is not a number, so it is refused below
        return 0
    try:
        value = int(raw)
    except ValueError:
        raise FieldValidationError([{"field": "wait", "message": "must be a whole number of seconds"}]) from None
    if not 0 <= value <= settings.OZ_MAX_WAIT_SECONDS:
        raise FieldValidationError([{"field": "wait", "message": f"must be between 0 and {settings.OZ_MAX_WAIT_SECONDS}"}])
    return value


def _predictor_or_404(slug: str) -> Predictor:
    predictor = predictor_for_request(slug)
    if predictor is None:
        raise exceptions.NotFound(f"No predictor named {slug!r}.")
    return predictor


class PredictView(APIView):
    permission_classes = [IsApiClient]

    @extend_schema(
        operation_id="predict",
        request=s.PredictRequestSerializer,
        parameters=[OpenApiParameter(
            "Idempotency-Key", {"type": "string", "maxLength": 255, "pattern": s.NO_CONTROL_CHARACTERS},
            OpenApiParameter.HEADER, required=False,
            description="A retry with the same key and body returns the same prediction (at most 255 characters, "
            "no control characters).",
        )],
        responses={200: s.PredictionSerializer, 202: s.PredictionSerializer, 401: PROBLEM, 403: PROBLEM,
                   404: PROBLEM, 409: PROBLEM, 413: PROBLEM, 415: PROBLEM, 422: PROBLEM, 429: PROBLEM},
        description="Ask a predictor. 200 when answered now, 202 when a human must answer (poll the "
        "prediction or wait for the webhook).",
    )
    def post(self, request, slug: str):
        started = time.perf_counter()
        # Predictor, flag and live model versions from the per-process serving cache: no
        # database read for them on the hot path (changes reach it within seconds).
        state = serving_get(slug)
        if state is None:
            raise exceptions.NotFound(f"No predictor named {slug!r}.")
        predictor = state.predictor
        client = request.user
        if not client.may_use(predictor):
            raise exceptions.PermissionDenied("This API key may not call this predictor.")
        body = _require_object(request.data)
        errors = [{"field": name, "message": "unknown field"} for name in body if name not in PREDICT_FIELDS]
        if len(body) == 1 and isinstance(body.get("input"), dict):
            # Most requests are only an input object: nothing for the envelope serializer to
            # check (building one copies all its fields), and its defaults are these.
            data = {}
        else:
            # The context's client: callback_url must name one of its registered webhook hosts.
            envelope = s.PredictRequestSerializer(data=body, context={"client": client})
            if not envelope.is_valid():
                from .errors import flatten_errors

                errors.extend(flatten_errors(envelope.errors))
            data = envelope.validated_data if not errors else {}
        clean_input, input_errors = input_validate(predictor.schema, body.get("input"))
        if "input" in body:
            # `input: null` is refused by the envelope and by input_validate alike: once.
            # (A set, not a scan of the list per error: an input of 100k unknown fields is
            # 100k errors.)
            reported = {(e["field"], e["message"]) for e in errors}
            errors.extend(d for d in (e.as_dict() for e in input_errors) if (d["field"], d["message"]) not in reported)
        if errors:
            raise FieldValidationError(errors)
        idempotency_key = request.headers.get("Idempotency-Key", "")
        if len(idempotency_key) > 255 or s.has_control_characters(idempotency_key):
            raise FieldValidationError(
                [{"field": "Idempotency-Key", "message": "must be at most 255 characters, none of them control characters"}]
            )
        try:
            prediction, created = prediction_create(
                predictor=predictor,
                policy=state.policy,
                client=client,
                clean_input=clean_input,
                callback_url=data.get("callback_url", ""),
                idempotency_key=idempotency_key,
                routing_key=data.get("routing_key", ""),
                live_versions=(state.champion, state.challenger),
                explain=data.get("explain", False),
                request_sha256=request_fingerprint(predictor_slug=predictor.slug, body=body) if idempotency_key else "",
            )
        except IdempotencyConflict as exc:
            raise Conflict(str(exc)) from None
        touch_key(request.auth)
        prediction = prediction_wait(prediction=prediction, seconds=data.get("wait", 0))
        if created:  # one count and one `prediction` log event per prediction (a replay adds none)
            prediction_observe(prediction=prediction, predictor=predictor, client=client, seconds=time.perf_counter() - started)
        headers = {"Location": f"/predictions/{prediction.id}"}
        if not created:
            headers["Idempotent-Replayed"] = "true"
        return Response(prediction_as_dict(prediction), status=_status_for(prediction), headers=headers)


def _prediction_for(request, prediction_id: str) -> Prediction:
    try:
        pk = uuid.UUID(prediction_id)
    except ValueError:
        raise exceptions.NotFound("No such prediction.") from None
    prediction = Prediction.objects.select_related("predictor").filter(pk=pk).first()
    user = request.user
    allowed = prediction is not None and (
        (is_api_client(user) and prediction.client_id == user.pk)
        or (not is_api_client(user) and user.has_perm("gateway.view_prediction"))
    )
    if not allowed:
        # Other clients' predictions are indistinguishable from missing ones.
        raise exceptions.NotFound("No such prediction.")
    return prediction


class PredictionDetailView(APIView):
    permission_classes = [IsApiClientOrHasPerm]
    # People who may read predictions at all (operators); a reviewer is refused with 403
    # whatever the id, which confirms nothing about any prediction.
    required_perms = ("gateway.view_prediction",)

    @extend_schema(
        operation_id="prediction_get",
        parameters=[OpenApiParameter(
            "wait", {"type": "integer", "minimum": 0, "maximum": settings.OZ_MAX_WAIT_SECONDS},
            description="Hold up to N seconds (max 30) while pending.",
        )],
        responses={200: s.PredictionSerializer, 202: s.PredictionSerializer, 404: PROBLEM, 422: PROBLEM},
    )
    def get(self, request, prediction_id: str):
        wait = _wait_param(request)
        prediction = _prediction_for(request, prediction_id)
        prediction = prediction_wait(prediction=prediction, seconds=wait)
        return Response(prediction_as_dict(prediction), status=_status_for(prediction))


class PredictionOutcomeView(APIView):
    permission_classes = [IsApiClient]

    @extend_schema(
        operation_id="prediction_outcome",
        request=s.OutcomeRequestSerializer,
        responses={201: OpenApiResponse(s.OutcomeSerializer, description="Recorded as a label with source `outcome`."),
                   404: PROBLEM, 422: PROBLEM},
    )
    def post(self, request, prediction_id: str):
        from review.models import LabelSource
        from review.services import label_record

        prediction = _prediction_for(request, prediction_id)
        body = _require_object(request.data)
        errors = [{"field": name, "message": "unknown field"} for name in body if name != "output"]
        if "output" not in body:
            errors.append({"field": "output", "message": "this field is required"})
        else:
            problem = output_error(prediction.predictor.output_spec, body["output"])
            if problem:
                errors.append({"field": "output", "message": problem})
        if errors:
            raise FieldValidationError(errors)
        with transaction.atomic():
            # An outcome reported again (a retry, or the client correcting itself) replaces
            # the earlier outcome, so they do not pile up as contradicting labels. People's
            # labels are left as they are: the shadow gate and the appeal's last word read them.
            # The prediction's row lock keeps two reports at once from both staying current.
            Prediction.objects.select_for_update().filter(pk=prediction.pk).values_list("pk").get()
            label = label_record(prediction=prediction, target=body["output"], source=LabelSource.OUTCOME,
                                 supersede=True, supersede_sources=(LabelSource.OUTCOME,))
        return Response({"label_id": label.pk, "prediction": str(prediction.id), "output": label.target}, status=201)


def _champions(predictors) -> dict:
    versions = ModelVersion.objects.filter(predictor__in=predictors, stage=Stage.CHAMPION)
    return {v.predictor_id: v for v in versions}


def _predictor_context(predictors) -> dict:
    from models_registry.drift import drift_latest

    return {"champions": _champions(predictors), "drift": drift_latest(p.pk for p in predictors)}


class PredictorListView(APIView):
    permission_classes = [IsApiClientOrHasPerm]
    required_perms = ("gateway.view_predictor",)

    @extend_schema(operation_id="predictors_list", responses={200: s.PredictorListSerializer})
    def get(self, request):
        predictors = Predictor.objects.select_related("routing").order_by("slug")
        user = request.user
        if is_api_client(user) and not user.all_predictors:
            predictors = predictors.filter(api_clients=user)
        predictors = list(predictors)
        data = s.PredictorSerializer(predictors, many=True, context=_predictor_context(predictors)).data
        return Response({"results": data})


class PredictorDetailView(APIView):
    permission_classes = [IsApiClientOrHasPerm]
    required_perms = ("gateway.view_predictor",)

    @extend_schema(operation_id="predictor_get", responses={200: s.PredictorSerializer, 404: PROBLEM})
    def get(self, request, slug: str):
        predictor = _predictor_or_404(slug)
        if is_api_client(request.user) and not request.user.may_use(predictor):
            raise exceptions.NotFound(f"No predictor named {slug!r}.")
        return Response(s.PredictorSerializer(predictor, context=_predictor_context([predictor])).data)


class RoutingView(APIView):
    permission_classes = [HasDjangoPerm]
    required_perms = ("gateway.change_routingpolicy",)

    @extend_schema(
        operation_id="routing_update",
        request=s.RoutingRequestSerializer,
        responses={200: s.RoutingSerializer, 404: PROBLEM, 422: PROBLEM},
        description="Change any fields of the routing flag; audited (who, when, `reason`). The policy version "
        "rises with each change, and every web worker routes by the new flag within a few seconds "
        "(OZ_SERVING_CACHE_SECONDS).",
    )
    def patch(self, request, slug: str):
        predictor = _predictor_or_404(slug)
        body = _require_object(request.data)
        changes = {k: v for k, v in body.items() if k != "reason"}
        reason = body.get("reason", "")
        if not isinstance(reason, str):
            raise FieldValidationError([{"field": "reason", "message": "must be a string"}])
        if "\x00" in reason:  # PostgreSQL text cannot hold NUL
            raise FieldValidationError([{"field": "reason", "message": "must not contain NUL characters"}])
        try:
            policy = routing_update(predictor=predictor, changes=changes, user=request.user, reason=reason)
        except RoutingInvalid as exc:
            raise FieldValidationError([e.as_dict() for e in exc.errors]) from None
        return Response(s.RoutingSerializer(policy).data)


class HealthView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes: list = []

    @extend_schema(operation_id="healthz", responses={200: OpenApiResponse(s.HealthSerializer, description="The process is up.")})
    def get(self, request):
        return Response({"status": "ok"})


class ReadyView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes: list = []

    @extend_schema(operation_id="readyz", responses={
        200: OpenApiResponse(s.ReadySerializer, description="Dependencies reachable."),
        503: OpenApiResponse(s.UnreadySerializer, description="A dependency is unreachable (problem+json, with `checks`)."),
    })
    def get(self, request):
        checks = {}
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"error: {exc.__class__.__name__}"
        if settings.REDIS_URL:
            try:
                cache.set("oz:readyz", "1", timeout=5)
                checks["redis"] = "ok" if cache.get("oz:readyz") == "1" else "error: no round trip"
            except Exception as exc:
                checks["redis"] = f"error: {exc.__class__.__name__}"
        if all(v == "ok" for v in checks.values()):
            return Response({"status": "ok", "checks": checks})
        response = problem_response(503, "A dependency is unreachable.", code="unavailable")
        response.data["checks"] = checks
        return response
