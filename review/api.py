"""Reviewer HTTP API: claim, decide, release, extend (same services as the admin pages); and
the operators' appeal and review (agreement, throughput) statistics."""
from __future__ import annotations

from django.core.validators import slug_re
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import exceptions, serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from gateway.api import PROBLEM, _predictor_or_404, _require_object
from gateway.errors import Conflict, FieldValidationError
from gateway.permissions import HasDjangoPerm
from gateway.serializers import AnswerJSONField

from .appeals import appeal_rates
from .models import ReviewTask
from .presenters import task_as_dict
from .selectors import appeals_open_count
from .services import (
    InvalidDecision,
    TaskConflict,
    review_task_claim_next,
    review_task_decide,
    review_task_extend,
    review_task_release,
)
from .stats import DEFAULT_WINDOW_DAYS, review_stats

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
        "suggestion": serializers.JSONField(
            allow_null=True,
            help_text="What a machine says: {output, source, confidence, scores, model_version}. Low-confidence tasks "
            "carry the model's answer that fell below the threshold; QA samples the rule's or model's answer.",
        ),
        "created_at": serializers.DateTimeField(),
        "lease_expires_at": serializers.DateTimeField(allow_null=True),
        "appeal": serializers.JSONField(
            allow_null=True, help_text="Appeal tasks: reason, requested_output, original_output, original_source."
        ),
        "earlier_decisions": serializers.JSONField(
            help_text="Adjudications and appeals: the earlier task's decisions (reviewer, output, note)."
        ),
    },
)
DecisionRequest = inline_serializer(
    "DecisionRequest", {
        "output": AnswerJSONField(help_text="A label of the predictor's output, or a number within its bounds."),
        "note": serializers.CharField(required=False, allow_blank=True, max_length=5000),
    },
)
DecisionSerializer = inline_serializer("Decision", {
    "task": serializers.IntegerField(), "decision": serializers.IntegerField(),
    "output": serializers.JSONField(), "prediction": serializers.UUIDField(),
})


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
                   responses={201: OpenApiResponse(DecisionSerializer, description="Decided."), 404: PROBLEM, 409: PROBLEM,
                              422: PROBLEM})
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


AppealStatsSerializer = inline_serializer("AppealStats", {
    "predictor": serializers.CharField(),
    "appeal_window_days": serializers.IntegerField(),
    "open": serializers.IntegerField(help_text="Appeals waiting for a reviewer."),
    "rates": inline_serializer("AppealRate", {
        "source": serializers.CharField(allow_null=True, help_text="Who gave the answers appealed against."),
        "model_version": serializers.IntegerField(allow_null=True),
        "answers": serializers.IntegerField(),
        "appeals": serializers.IntegerField(),
        "overturned": serializers.IntegerField(),
        "appeal_rate": serializers.FloatField(allow_null=True, help_text="appeals / answers"),
        "overturn_rate": serializers.FloatField(allow_null=True, help_text="overturned / decided appeals"),
    }, many=True),
})


class AppealStatsView(APIView):
    """Appeal and overturn rates of a predictor, by answer source and model version."""

    permission_classes = [HasDjangoPerm]
    required_perms = ("review.view_appeal",)

    @extend_schema(operation_id="predictor_appeals", responses={200: AppealStatsSerializer, 403: PROBLEM, 404: PROBLEM})
    def get(self, request, slug: str):
        predictor = _predictor_or_404(slug)
        return Response({
            "predictor": predictor.slug,
            "appeal_window_days": predictor.appeal_window_days,
            "open": appeals_open_count(predictor=predictor),
            "rates": appeal_rates(predictor=predictor),
        })


MAX_STATS_DAYS = 366

_Spread = inline_serializer("SecondsSpread", {
    "median": serializers.FloatField(allow_null=True),
    "p90": serializers.FloatField(allow_null=True),
})
_THROUGHPUT_FIELDS = {
    "decisions": serializers.IntegerField(),
    "by_kind": serializers.DictField(child=serializers.IntegerField(), help_text="decisions by task kind"),
    "decisions_per_day": serializers.FloatField(allow_null=True),
    "hours_worked": serializers.IntegerField(
        help_text="clock hours with at least one decision (for a predictor or the total: reviewer-hours)"),
    "decisions_per_hour_worked": serializers.FloatField(allow_null=True),
    "handling_seconds": _Spread,
    "tasks_settled": serializers.IntegerField(),
    "settle_seconds": _Spread,
}
ReviewStatsSerializer = inline_serializer("ReviewStats", {
    "window": inline_serializer("StatsWindow", {
        "days": serializers.FloatField(), "since": serializers.DateTimeField(), "until": serializers.DateTimeField(),
    }),
    "predictor": serializers.CharField(allow_null=True),
    "agreement": serializers.DictField(
        help_text="per predictor slug",
        child=inline_serializer("PredictorAgreement", {
            "output_type": serializers.CharField(),
            "tasks": serializers.IntegerField(help_text="consensus tasks with 2 or more decisions"),
            "raters_per_task": serializers.IntegerField(allow_null=True),
            "fleiss_kappa": serializers.FloatField(allow_null=True, help_text="null for number outputs"),
            "observed_agreement": serializers.FloatField(allow_null=True),
            "percent_agreement": serializers.FloatField(allow_null=True, help_text="tasks all reviewers agreed on, %"),
            "disputed": serializers.IntegerField(),
        }),
    ),
    "reviewers": inline_serializer("ReviewerStats", {
        "reviewer": serializers.CharField(),
        "reviewer_id": serializers.IntegerField(),
        **_THROUGHPUT_FIELDS,
        "compared": serializers.IntegerField(help_text="decisions on settled multi-reviewed tasks"),
        "agreed_with_settled": serializers.IntegerField(),
        "percent_agreement": serializers.FloatField(allow_null=True),
        "cohen_kappa": serializers.FloatField(allow_null=True, help_text="label outputs only"),
    }, many=True),
    "throughput": inline_serializer("Throughput", {
        **_THROUGHPUT_FIELDS,
        "reviewers": serializers.IntegerField(),
        "predictors": serializers.DictField(child=inline_serializer("PredictorThroughput", {
            **_THROUGHPUT_FIELDS, "reviewers": serializers.IntegerField(),
        })),
    }),
})


def _days_param(request) -> int:
    raw = request.query_params.get("days")
    if raw is None:  # absent; an empty value (`?days=`) is not a number, so it is refused below
        return DEFAULT_WINDOW_DAYS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_STATS_DAYS:
        raise FieldValidationError([{"field": "days", "message": f"must be a whole number from 1 to {MAX_STATS_DAYS}"}])
    return value


class ReviewStatsView(APIView):
    """Reviewer agreement and queue throughput over the last `days` days."""

    permission_classes = [HasDjangoPerm]
    required_perms = ("review.view_decision",)

    @extend_schema(
        operation_id="review_stats",
        parameters=[
            OpenApiParameter("predictor", str, description="Only this predictor (slug); all when absent."),
            OpenApiParameter("days", {"type": "integer", "minimum": 1, "maximum": MAX_STATS_DAYS},
                             description=f"Window in days, 1 to {MAX_STATS_DAYS} (default {DEFAULT_WINDOW_DAYS})."),
        ],
        responses={200: ReviewStatsSerializer, 403: PROBLEM, 404: PROBLEM, 422: PROBLEM},
    )
    def get(self, request):
        days = _days_param(request)
        slug = request.query_params.get("predictor")
        if slug and not slug_re.fullmatch(slug):  # not a slug (NUL bytes included): no such predictor
            raise exceptions.NotFound(f"No predictor named {slug!r}.")
        predictor = _predictor_or_404(slug) if slug else None
        return Response(review_stats(predictor=predictor, days=days))
