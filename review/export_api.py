"""`GET /predictors/<slug>/dataset?format=csv|jsonl`: the current labels, streamed (operators)."""
from __future__ import annotations

from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.views import APIView

from gateway.api import PROBLEM, _predictor_or_404
from gateway.errors import FieldValidationError
from gateway.permissions import HasDjangoPerm

from .export import CONTENT_TYPES, FORMATS, label_export_filename, label_export_pieces


class FormatIsAQueryParameter(DefaultContentNegotiation):
    """Here `?format=` names the export format; DRF would otherwise read it as a renderer
    override and answer 404 for csv. Errors are problem+json whatever is asked."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class DatasetView(APIView):
    permission_classes = [HasDjangoPerm]
    required_perms = ("review.view_label",)
    content_negotiation_class = FormatIsAQueryParameter

    @extend_schema(
        operation_id="predictor_dataset",
        parameters=[OpenApiParameter("format", OpenApiTypes.STR, enum=list(FORMATS), required=True)],
        responses={
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="One row per current label."),
            (200, "application/x-ndjson"): OpenApiResponse(OpenApiTypes.STR, description="One JSON object per line."),
            401: PROBLEM, 403: PROBLEM, 404: PROBLEM, 422: PROBLEM,
        },
        description="The predictor's current (non-superseded) labels, streamed in id order with "
        "constant memory: label_id, prediction_id, created_at, source, created_by, schema_version, "
        "the input (CSV: one column per schema field in declared order), target.",
    )
    def get(self, request, slug: str):
        predictor = _predictor_or_404(slug)
        fmt = request.query_params.get("format", "")
        if fmt not in FORMATS:
            raise FieldValidationError([{"field": "format", "message": f"must be one of {', '.join(FORMATS)}"}])
        response = StreamingHttpResponse(
            label_export_pieces(predictor=predictor, fmt=fmt), content_type=CONTENT_TYPES[fmt]
        )
        filename = label_export_filename(predictor=predictor, fmt=fmt)
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        response["Cache-Control"] = "no-store"
        return response
