"""Reviewer HTTP API: claim, decide, release, extend. Same services as the admin pages."""
from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import exceptions, serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from gateway.api import PROBLEM, _require_object
from gateway.errors import Conflict, FieldValidationError
from gateway.permissions import HasDjangoPerm

from .models import ReviewTask
from .presenters import task_as_dict
from .services import (
    InvalidDecision,
    TaskConflict,
    review_task_claim_next,
    review_task_decide,
    review_task_extend,
    review_task_release,
)

TaskSerializer = inline_serializer(
    "ReviewTask",
    {
        "id": serializers.IntegerField(),
        "kind": serializers.CharField(),
        "priority": serializers.IntegerField(),
        "reason": serializers.CharField(),
        "status": serializers.CharField(),
        "predictor": serializers.CharField(),
        "prediction": serializers.UUIDField(),
        "input": serializers.JSONField(),
        "input_schema": serializers.JSONField(),
        "output_spec": serializers.JSONField(),
        "suggestion": serializers.JSONField(allow_null=True),
        "created_at": serializers.DateTimeField(),
        "lease_expires_at": serializers.DateTimeField(allow_null=True),
    },
)
DecisionRequest = inline_serializer(
    "DecisionRequest", {"output": serializers.JSONField(), "note": serializers.CharField(required=False, allow_blank=True)}
)


class ReviewerView(APIView):
    permission_classes = [HasDjangoPerm]
    required_perms = ("review.decide_reviewtask",)


def _task_action(action, request, task_id: int):
    try:
        return action(task_id=task_id, reviewer=request.user)
    except ReviewTask.DoesNotExist:
        raise exceptions.NotFound("No such task.") from None
    except TaskConflict as exc:
        raise Conflict(str(exc)) from None


class ClaimView(ReviewerView):
    @extend_schema(operation_id="review_claim", request=None,
                   responses={200: TaskSerializer, 204: OpenApiResponse(description="Nothing to review."), 403: PROBLEM})
    def post(self, request):
        task = review_task_claim_next(reviewer=request.user)
        if task is None:
            return Response(status=204)
        task = ReviewTask.objects.select_related("prediction", "predictor").get(pk=task.pk)
        return Response(task_as_dict(task))


class DecisionView(ReviewerView):
    @extend_schema(operation_id="review_decide", request=DecisionRequest,
                   responses={201: OpenApiResponse(description="Decided."), 404: PROBLEM, 409: PROBLEM, 422: PROBLEM})
    def post(self, request, task_id: int):
        body = _require_object(request.data)
        errors = [{"field": name, "message": "unknown field"} for name in body if name not in ("output", "note")]
        if "output" not in body:
            errors.append({"field": "output", "message": "this field is required"})
        note = body.get("note", "")
        if not isinstance(note, str) or len(note) > 5000:
            errors.append({"field": "note", "message": "must be a string of at most 5000 characters"})
        if errors:
            raise FieldValidationError(errors)
        try:
            decision = review_task_decide(task_id=task_id, reviewer=request.user, output=body["output"], note=note)
        except ReviewTask.DoesNotExist:
            raise exceptions.NotFound("No such task.") from None
        except TaskConflict as exc:
            raise Conflict(str(exc)) from None
        except InvalidDecision as exc:
            raise FieldValidationError([{"field": "output", "message": exc.message}]) from None
        return Response(
            {"task": task_id, "decision": decision.pk, "output": decision.output,
             "prediction": str(decision.task.prediction_id)},
            status=201,
        )


class ReleaseView(ReviewerView):
    @extend_schema(operation_id="review_release", request=None, responses={200: TaskSerializer, 404: PROBLEM, 409: PROBLEM})
    def post(self, request, task_id: int):
        task = _task_action(review_task_release, request, task_id)
        return Response(task_as_dict(task))


class ExtendView(ReviewerView):
    @extend_schema(operation_id="review_extend", request=None, responses={200: TaskSerializer, 404: PROBLEM, 409: PROBLEM})
    def post(self, request, task_id: int):
        task = _task_action(review_task_extend, request, task_id)
        return Response(task_as_dict(task))
