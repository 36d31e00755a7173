"""API clients' view of their webhooks: the deliveries with their attempt logs, and
redelivery of a failed one. A client sees only deliveries of its own predictions; another
client's delivery is indistinguishable from a missing one (404)."""
from __future__ import annotations

from urllib.parse import urlencode

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from .api import PROBLEM
from .errors import Conflict, FieldValidationError
from .models import WebhookDelivery
from .permissions import IsApiClient
from .serializers import ProblemSerializer
from .webhooks import RedeliveryRefused, webhook_deliveries_of, webhook_redeliver

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
MAX_CURSOR = 2**63 - 1  # ids are PostgreSQL bigints

class WebhookAttemptSerializer(serializers.Serializer):
    """Documentation of one attempt (responses are built by webhook_delivery_as_dict)."""

    number = serializers.IntegerField(help_text="1, 2, 3 … across every round of tries")
    started_at = serializers.DateTimeField()
    duration_ms = serializers.IntegerField()
    status_code = serializers.IntegerField(allow_null=True, help_text="null when no HTTP answer came back")
    error = serializers.CharField(allow_blank=True)


class WebhookDeliverySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    event = serializers.CharField(help_text="prediction.answered | prediction.revised")
    prediction = serializers.UUIDField()
    url = serializers.URLField()
    status = serializers.CharField(help_text="pending | delivered | failed")
    attempts = serializers.IntegerField(help_text="tries in the current round (redelivery starts a new one)")
    max_attempts = serializers.IntegerField()
    last_status_code = serializers.IntegerField(allow_null=True)
    last_error = serializers.CharField(allow_blank=True)
    next_attempt_at = serializers.DateTimeField(allow_null=True, help_text="null unless pending")
    created_at = serializers.DateTimeField()
    delivered_at = serializers.DateTimeField(allow_null=True)
    attempt_log = WebhookAttemptSerializer(many=True)
    links = serializers.DictField(child=serializers.CharField())


class WebhookDeliveryPageSerializer(serializers.Serializer):
    results = WebhookDeliverySerializer(many=True)
    next = serializers.CharField(allow_null=True, help_text="the next page's URL; null on the last page")


def _iso(value):
    return value.isoformat() if value else None


def webhook_delivery_as_dict(delivery: WebhookDelivery) -> dict:
    """A delivery on the wire; reads `attempt_log` through the prefetch cache when there is one."""
    path = f"/webhooks/deliveries/{delivery.pk}"
    return {
        "id": delivery.pk,
        "event": delivery.event,
        "prediction": str(delivery.prediction_id),
        "url": delivery.url,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "max_attempts": settings.OZ_WEBHOOK_MAX_ATTEMPTS,
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error,
        # The column also holds a claim's timeout while a try runs, and a stale time once
        # the delivery is settled: only a pending delivery has a next attempt.
        "next_attempt_at": _iso(delivery.next_attempt_at) if delivery.status == WebhookDelivery.Status.PENDING else None,
        "created_at": _iso(delivery.created_at),
        "delivered_at": _iso(delivery.delivered_at),
        "attempt_log": [
            {
                "number": a.number,
                "started_at": _iso(a.started_at),
                "duration_ms": a.duration_ms,
                "status_code": a.status_code,
                "error": a.error,
            }
            for a in delivery.attempt_log.all()
        ],
        "links": {"self": path, "redeliver": f"{path}/redeliver", "prediction": f"/predictions/{delivery.prediction_id}"},
    }


def _int_param(request, name: str, *, default: int | None, minimum: int, maximum: int | None = None) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:  # absent; an empty value (`?limit=`) is not a number, so it is refused below
        return default
    try:
        value = int(raw)
    except ValueError:
        raise FieldValidationError([{"field": name, "message": "must be a whole number"}]) from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise FieldValidationError([{"field": name, "message": f"must be {bound}"}])
    return value


def _own_delivery(request, delivery_id: int) -> WebhookDelivery:
    delivery = webhook_deliveries_of(client=request.user).filter(pk=delivery_id).first()
    if delivery is None:
        raise exceptions.NotFound("No such webhook delivery.")
    return delivery


class WebhookDeliveryListView(APIView):
    permission_classes = [IsApiClient]

    @extend_schema(
        operation_id="webhook_deliveries_list",
        parameters=[
            OpenApiParameter("status", OpenApiTypes.STR, enum=list(WebhookDelivery.Status.values),
                             description="Only deliveries in this state (e.g. `failed`)."),
            OpenApiParameter("limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
                             description=f"Page size, 1–{MAX_PAGE_SIZE} (default {DEFAULT_PAGE_SIZE})."),
            OpenApiParameter("cursor", {"type": "integer", "minimum": 1, "maximum": MAX_CURSOR},
                             description="From a previous page's `next` link (the id of the last delivery shown)."),
        ],
        responses={200: WebhookDeliveryPageSerializer, 401: PROBLEM, 403: PROBLEM, 422: PROBLEM},
        description="This client's webhook deliveries, newest first, each with its attempt log.",
    )
    def get(self, request):
        status = request.query_params.get("status")
        if status is not None and status not in WebhookDelivery.Status.values:
            raise FieldValidationError(
                [{"field": "status", "message": f"must be one of {', '.join(WebhookDelivery.Status.values)}"}]
            )
        limit = _int_param(request, "limit", default=DEFAULT_PAGE_SIZE, minimum=1, maximum=MAX_PAGE_SIZE)
        # The cursor is the id of the last delivery shown: keyset pagination stays fast and
        # stable while new deliveries arrive.
        cursor = _int_param(request, "cursor", default=None, minimum=1, maximum=MAX_CURSOR)
        deliveries = webhook_deliveries_of(client=request.user, status=status or None)
        if cursor is not None:
            deliveries = deliveries.filter(pk__lt=cursor)
        page = list(deliveries[: limit + 1])
        next_link = None
        if len(page) > limit:
            page = page[:limit]
            query = {k: v for k, v in (("status", status), ("limit", request.query_params.get("limit", ""))) if v}
            query["cursor"] = page[-1].pk
            next_link = f"/webhooks/deliveries?{urlencode(query)}"
        return Response({"results": [webhook_delivery_as_dict(d) for d in page], "next": next_link})


class WebhookDeliveryDetailView(APIView):
    permission_classes = [IsApiClient]

    @extend_schema(operation_id="webhook_delivery_get", responses={200: WebhookDeliverySerializer, 404: PROBLEM})
    def get(self, request, delivery_id: int):
        return Response(webhook_delivery_as_dict(_own_delivery(request, delivery_id)))


class WebhookRedeliverView(APIView):
    permission_classes = [IsApiClient]

    @extend_schema(
        operation_id="webhook_delivery_redeliver",
        request=None,
        responses={202: WebhookDeliverySerializer, 404: PROBLEM, 409: OpenApiResponse(
            ProblemSerializer, description="Not failed (pending or delivered), or its host is no longer registered.")},
        description="Ask for a new round of tries on a failed delivery: it becomes pending with a fresh "
        "budget of attempts; the attempt log is kept.",
    )
    def post(self, request, delivery_id: int):
        delivery = _own_delivery(request, delivery_id)
        try:
            webhook_redeliver(delivery=delivery, user=None)
        except RedeliveryRefused as exc:
            raise Conflict(str(exc)) from None
        return Response(webhook_delivery_as_dict(_own_delivery(request, delivery_id)), status=202)
