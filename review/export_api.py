"""`GET /predictors/<slug>/dataset?format=csv|jsonl[&spreadsheet_safe=true]`: the current
labels, streamed (operators)."""
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


# What a boolean query parameter is written as: OpenAPI clients (and Schemathesis) send
# true/false, people also type 1/0. Anything else is refused rather than guessed at.
_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}


def _spreadsheet_safe_param(request, fmt: str) -> bool:
    raw = request.query_params.get("spreadsheet_safe")
    if raw is None:
        return False
    safe = _BOOLEANS.get(raw)
    if safe is None:
        raise FieldValidationError([{"field": "spreadsheet_safe", "message": "must be true or false"}])
    if safe and fmt != "csv":
        # Ignoring it would hand back JSON Lines the caller believes was made safe.
        raise FieldValidationError([{"field": "spreadsheet_safe", "message": "applies to format=csv only"}])
    return safe


class DatasetView(APIView):
    permission_classes = [HasDjangoPerm]
    required_perms = ("review.view_label",)
    content_negotiation_class = FormatIsAQueryParameter

    @extend_schema(
        operation_id="predictor_dataset",
        parameters=[
            OpenApiParameter("format", OpenApiTypes.STR, enum=list(FORMATS), required=True),
            OpenApiParameter(
                "spreadsheet_safe", OpenApiTypes.BOOL, default=False,
                description="CSV only: text cells starting with = + - @, a tab or a carriage return get a "
                "leading ' so a spreadsheet does not run them as formulas (numbers are left alone). Off by "
                "default: it changes the data.",
            ),
        ],
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
        safe = _spreadsheet_safe_param(request, fmt)
        response = StreamingHttpResponse(
            label_export_pieces(predictor=predictor, fmt=fmt, spreadsheet_safe=safe), content_type=CONTENT_TYPES[fmt]
        )
        filename = label_export_filename(predictor=predictor, fmt=fmt)
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        response["Cache-Control"] = "no-store"
        return response
