"""The public appeal pages: what an end user opens from a prediction's appeal link.

No account and no API key: the link's token is the only credential, so every response is
about that one prediction and names nothing else (no other records, no client, no routing
internals), and is marked private, unindexed and never sent on as a referrer. One URL
serves people and programs: an HTML page with a CSRF-protected form for browsers, JSON
when the request asks for it (`Accept: application/json`, or a JSON body). Filing goes
through review.appeals, which alone decides what may be filed; these views translate its
answers into pages and status codes."""
from __future__ import annotations

import math

from django import forms
from django.http import Http404, HttpResponseRedirect
from django.middleware.csrf import CsrfViewMiddleware
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.utils.dateformat import format as date_format
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import exceptions, serializers
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from gateway.api import PROBLEM, _require_object
from gateway.errors import Conflict, FieldValidationError
from gateway.models import AnswerSource, Prediction, PredictionStatus
from gateway.parsers import JSONParser
from gateway.throttling import AppealIpThrottle, AppealTokenThrottle, ClientRateThrottle

from .appeals import (
    REASON_MAX_LENGTH,
    AppealRefused,
    appeal_deadline,
    appeal_file,
    appeal_refusal,
    prediction_for_token,
)
from .models import AppealStatus
from .presenters import _iso, appeal_as_dict, appeal_status_as_dict, input_rows, value_display
from .selectors import appeal_latest

TEMPLATE_PAGE = "review/appeal/page.html"
TEMPLATE_ERROR = "review/appeal/error.html"
JSON_TYPES = ("application/json", "application/problem+json")
APPEAL_FIELDS = {"reason", "requested_output"}

# How the page says who answered.
SOURCE_WORDS = {
    AnswerSource.HUMAN: "by a person",
    AnswerSource.RULE: "by our automatic rules",
    AnswerSource.MODEL: "by a model",
}

# Headers on every response: the URL holds the only credential (never pass it on to
# another site as a referrer, never cache or index the page), and the body depends on
# Accept. "same-origin", not "no-referrer": under the latter browsers send `Origin: null`
# with the form, which Django's CSRF check rightly refuses.
PRIVATE_HEADERS = {
    "Referrer-Policy": "same-origin",
    "Cache-Control": "private, no-store",
    "X-Robots-Tag": "noindex, nofollow",
}


# ---------------------------------------------------------------------------------------
# Who is asking: a person (HTML) or a program (JSON)
# ---------------------------------------------------------------------------------------

def _wants_json(request) -> bool:
    """JSON for a JSON body or an Accept header preferring JSON to HTML; HTML otherwise
    (browsers, and requests with no Accept header at all)."""
    django_request = getattr(request, "_request", request)
    if django_request.method == "POST" and (django_request.content_type or "").endswith("json"):
        return True
    return django_request.get_preferred_type(["text/html", *JSON_TYPES]) in JSON_TYPES


class _HtmlOrJson(DefaultContentNegotiation):
    """HTML is written by the views themselves, so an Accept header naming only HTML must
    not be refused with 406 by DRF's negotiation: fall back to JSON's renderer."""

    def select_renderer(self, request, renderers, format_suffix=None):
        try:
            return super().select_renderer(request, renderers, format_suffix)
        except exceptions.NotAcceptable:
            return renderers[0], renderers[0].media_type


class _CsrfCheck(CsrfViewMiddleware):
    def _reject(self, request, reason):
        return reason


def _csrf_refusal(request) -> str | None:
    """Why a form post fails Django's CSRF check, or None. (DRF views are CSRF-exempt; the
    form is not, while JSON needs no check: it carries no ambient credential, and no
    cross-site form can send a JSON body.)"""
    django_request = getattr(request, "_request", request)
    check = _CsrfCheck(lambda _request: None)
    check.process_request(django_request)
    return check.process_view(django_request, None, (), {})


def _prediction_or_404(token: str) -> Prediction:
    prediction = prediction_for_token(token)
    if prediction is None:
        raise exceptions.NotFound("No decision has this appeal link.")
    return prediction


def _page_url(token: str) -> str:
    return reverse("appeal", args=[token])


def _status_url(token: str) -> str:
    return reverse("appeal-status", args=[token])


def why_no_appeal(prediction: Prediction, now=None) -> str:
    """Why the page offers no form, in the person's words ("" when it does). The rule is
    appeal_refusal's, shared with appeal_file; only the wording is the page's."""
    refusal = appeal_refusal(prediction, now=now)
    if refusal is None:
        return ""
    if refusal.code == "closed":
        deadline = appeal_deadline(prediction)
        return f"The time to appeal ended on {date_format(timezone.localtime(deadline), 'j M Y')}."
    return PAGE_WORDS[refusal.code]


PAGE_WORDS = {
    "expired": "Your application could not be answered in time, so there is no decision to appeal.",
    "unanswered": "There is no decision to appeal yet. Come back to this page once there is one.",
    "provisional": "This is a provisional answer: a person is still looking at your application. "
    "Come back to this page once they have decided; you can appeal then.",
    "open": "Your appeal is being looked at. You can appeal again once it has been decided.",
}


# ---------------------------------------------------------------------------------------
# The form and the page
# ---------------------------------------------------------------------------------------

class AppealForm(forms.Form):
    """The reason (required) and, optionally, the answer the person thinks is right: one
    radio button per label (with "not sure"), or a number within the output's bounds."""

    def __init__(self, *args, output_spec: dict, **kwargs):
        super().__init__(*args, **kwargs)
        self.output_spec = output_spec
        self.fields["reason"] = forms.CharField(
            label="Why do you think the decision is wrong?",
            help_text="In your own words. Tell us anything the decision may have missed or got wrong.",
            max_length=REASON_MAX_LENGTH,
            error_messages={
                "required": "Please say why you think the decision is wrong.",
                "max_length": f"Please keep your reason to {REASON_MAX_LENGTH:,} characters or fewer.",
            },
            widget=forms.Textarea,
        )
        question = "What do you think the decision should be? (optional)"
        if output_spec["type"] == "label":
            self.fields["requested_output"] = forms.ChoiceField(
                label=question,
                choices=[("", "I am not sure")] + [(label, label) for label in output_spec["labels"]],
                required=False,
                initial="",
                widget=forms.RadioSelect,
                error_messages={"invalid_choice": "Please choose one of the answers listed."},
            )
        else:
            self.fields["requested_output"] = forms.FloatField(
                label=question,
                required=False,
                min_value=output_spec.get("minimum"),
                max_value=output_spec.get("maximum"),
                error_messages={"invalid": "Please enter a number, or leave this empty."},
            )

    def requested_output(self):
        value = self.cleaned_data.get("requested_output")
        return None if value in (None, "") else value

    def number_hint(self) -> str:
        spec = self.output_spec
        parts = []
        if "minimum" in spec:
            parts.append(f"at least {spec['minimum']:,}")
        if "maximum" in spec:
            parts.append(f"at most {spec['maximum']:,}")
        text = "A number" + (f", {' and '.join(parts)}" if parts else "")
        if spec.get("unit"):
            text += f", in {spec['unit']}"
        return text + ". Leave it empty if you are not sure."


def _error_list(form: AppealForm | None) -> list[dict]:
    """The error summary at the top of the page: each message links to its field."""
    if form is None or not form.is_bound:
        return []
    targets = {"reason": "id_reason", "requested_output": "requested_output"}
    return [
        {"target": targets.get(name, "appeal-form"), "message": message}
        for name, messages in form.errors.items()
        for message in messages
    ]


def _page(request, prediction: Prediction, token: str, *, form: AppealForm | None = None,
          problem: str = "", status: int = 200):
    predictor = prediction.predictor
    output_spec = predictor.output_spec
    latest = appeal_latest(prediction=prediction)
    blocker = why_no_appeal(prediction)
    if not blocker and form is None:
        form = AppealForm(output_spec=output_spec)
    elif blocker:
        form = None
    deadline = appeal_deadline(prediction)
    context = {
        "predictor": predictor,
        "prediction": prediction,
        "answered": prediction.status in (PredictionStatus.ANSWERED, PredictionStatus.REVISED),
        "output_text": value_display(output_spec, prediction.output),
        "source_words": SOURCE_WORDS.get(prediction.source, ""),
        "rows": input_rows(predictor.schema, prediction.input or {}),
        "deadline": deadline,
        "window_open": deadline is not None and timezone.now() <= deadline,
        "appeal": latest,
        "requested_text": value_display(output_spec, latest.requested_output)
        if latest and latest.requested_output is not None else "",
        "outcome_text": value_display(output_spec, latest.outcome_output) if latest else "",
        "blocker": blocker,
        "form": form,
        "is_label": output_spec["type"] == "label",
        "error_list": _error_list(form),
        "problem": problem,
        "page_url": _page_url(token),
        "status_url": _status_url(token),
    }
    return render(getattr(request, "_request", request), TEMPLATE_PAGE, context, status=status)


def _error_page(request, status: int, title: str, message: str, headers: dict | None = None):
    response = render(getattr(request, "_request", request), TEMPLATE_ERROR,
                      {"title": title, "message": message}, status=status)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def _not_found_page(request):
    return _error_page(
        request, 404, "This appeal link does not work",
        "Check that you copied the whole link from the message you were sent. If it still does not "
        "work, contact the organisation that made the decision.",
    )


def _html_error(request, exc):
    """A plain page for a person, for what would be a problem+json for a program."""
    if isinstance(exc, (exceptions.NotFound, Http404)):
        return _not_found_page(request)
    if isinstance(exc, exceptions.Throttled):
        seconds = max(1, math.ceil(exc.wait or 60))
        minutes = max(1, math.ceil(seconds / 60))
        return _error_page(
            request, 429, "Too many attempts",
            f"Please wait about {minutes} minute{'s' if minutes != 1 else ''} and try again.",
            headers={"Retry-After": str(seconds)},
        )
    if isinstance(exc, exceptions.PermissionDenied):
        return _error_page(
            request, 403, "This form has expired",
            "Please go back, reload the page and send your appeal again.",
        )
    if isinstance(exc, exceptions.APIException):
        return _error_page(
            request, exc.status_code, "Something is wrong with this request",
            "Please go back, reload the page and try again.",
        )
    return None


class _PublicAppealView(APIView):
    """Shared by the appeal endpoints: no authentication (the token is the credential),
    problem+json for programs, plain pages for people, private headers on everything."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    renderer_classes = [JSONRenderer]
    content_negotiation_class = _HtmlOrJson
    html_error_pages = True  # the OpenAPI schema lists text/html for each error (gateway.schema_extensions)

    def handle_exception(self, exc):
        if not _wants_json(self.request):
            response = _html_error(self.request, exc)
            if response is not None:
                return response
        return super().handle_exception(exc)

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        for name, value in PRIVATE_HEADERS.items():
            response[name] = value
        patch_vary_headers(response, ["Accept"])
        return response


# ---------------------------------------------------------------------------------------
# OpenAPI shapes
# ---------------------------------------------------------------------------------------

AppealRequest = inline_serializer("NewAppeal", {
    "reason": serializers.CharField(max_length=REASON_MAX_LENGTH, help_text="Why the decision is wrong."),
    "requested_output": serializers.JSONField(
        required=False, allow_null=True, help_text="The answer the person thinks is right (a label or a number)."
    ),
})
AppealSerializer = inline_serializer("Appeal", {
    "id": serializers.IntegerField(),
    "status": serializers.ChoiceField(choices=AppealStatus.values),
    "reason": serializers.CharField(),
    "requested_output": serializers.JSONField(allow_null=True),
    "created_at": serializers.DateTimeField(),
    "outcome": serializers.JSONField(allow_null=True),
    "note": serializers.CharField(allow_null=True, help_text="The reviewer's note, once decided."),
    "decided_at": serializers.DateTimeField(allow_null=True),
    "status_url": serializers.CharField(),
})
AppealDecisionSerializer = inline_serializer("AppealDecision", {
    "status": serializers.ChoiceField(choices=PredictionStatus.values),
    "output": serializers.JSONField(allow_null=True),
    "source": serializers.ChoiceField(choices=AnswerSource.values, allow_null=True),
    "provisional": serializers.BooleanField(),
    "answered_at": serializers.DateTimeField(allow_null=True),
})
AppealPageSerializer = inline_serializer("AppealPage", {
    "predictor": serializers.CharField(),
    "description": serializers.CharField(),
    "decision": AppealDecisionSerializer,
    "input": serializers.JSONField(help_text="The input the decision was based on."),
    "input_schema": serializers.JSONField(),
    "output_spec": serializers.JSONField(),
    "appeal_deadline": serializers.DateTimeField(allow_null=True),
    "can_appeal": serializers.BooleanField(),
    "why_not": serializers.CharField(allow_null=True, help_text="Why no appeal can be filed now."),
    "appeal": AppealSerializer,
    "links": serializers.DictField(child=serializers.CharField()),
})
AppealStatusSerializer = inline_serializer("AppealStatus", {
    "status": serializers.CharField(help_text="`none` (no appeal yet), `open`, `upheld` or `overturned`."),
    "outcome": serializers.JSONField(allow_null=True),
    "note": serializers.CharField(allow_null=True),
    "decided_at": serializers.DateTimeField(allow_null=True),
    "created_at": serializers.DateTimeField(allow_null=True),
    "prediction": inline_serializer("AppealPredictionState", {
        "status": serializers.ChoiceField(choices=PredictionStatus.values),
        "output": serializers.JSONField(allow_null=True),
    }),
})
HTML_PAGE = OpenApiResponse(OpenApiTypes.STR, description="The page, for a browser (text/html).")


def appeal_page_as_dict(prediction: Prediction, token: str) -> dict:
    latest = appeal_latest(prediction=prediction)
    why_not = why_no_appeal(prediction)
    return {
        "predictor": prediction.predictor.slug,
        "description": prediction.predictor.description,
        "decision": {
            "status": prediction.status,
            "output": prediction.output,
            "source": prediction.source or None,
            "provisional": prediction.provisional,
            "answered_at": _iso(prediction.answered_at),
        },
        "input": prediction.input,
        "input_schema": prediction.predictor.schema,
        "output_spec": prediction.predictor.output_spec,
        "appeal_deadline": _iso(appeal_deadline(prediction)),
        "can_appeal": not why_not,
        "why_not": why_not or None,
        "appeal": appeal_as_dict(latest, status_url=_status_url(token)) if latest else None,
        "links": {"self": _page_url(token), "status": _status_url(token)},
    }


# ---------------------------------------------------------------------------------------
# Views
# ---------------------------------------------------------------------------------------

class AppealView(_PublicAppealView):
    """GET /appeal/<token> shows the decision and the form; POST files an appeal."""

    parser_classes = [JSONParser, FormParser, MultiPartParser]

    def get_throttles(self):
        # Filing is limited per link and per address; reading costs the anonymous budget.
        if self.request.method == "POST":
            return [AppealTokenThrottle(), AppealIpThrottle()]
        return [ClientRateThrottle()]

    @extend_schema(
        operation_id="appeal_page",
        responses={
            (200, "text/html"): HTML_PAGE,
            (200, "application/json"): AppealPageSerializer,
            404: OpenApiResponse(PROBLEM.response, description="No decision has this link (an HTML page for browsers)."),
            429: PROBLEM,
        },
        description="The decision in plain words, the input it was based on, the appeal deadline and "
        "the latest appeal. An HTML page with the appeal form for browsers; JSON with "
        "`Accept: application/json`. No account: the link's token is the credential.",
    )
    def get(self, request, token: str):
        prediction = _prediction_or_404(token)
        if _wants_json(request):
            return Response(appeal_page_as_dict(prediction, token))
        return _page(request, prediction, token)

    @extend_schema(
        operation_id="appeal_file",
        request={"application/json": AppealRequest, "application/x-www-form-urlencoded": AppealRequest},
        responses={
            201: AppealSerializer,
            303: OpenApiResponse(description="Form posts: filed; see the page (which now shows it)."),
            403: OpenApiResponse(PROBLEM.response, description="A form post whose CSRF check failed."),
            404: PROBLEM,
            409: OpenApiResponse(PROBLEM.response, description="An appeal is already open, there is no "
                                 "answer yet, or the appeal window has closed."),
            422: PROBLEM,
            429: PROBLEM,
        },
        examples=[OpenApiExample("appeal", value={"reason": "My bakery has traded for 12 years.",
                                                  "requested_output": "approve"}, request_only=True)],
        description="File an appeal against the decision. One open appeal per decision; throttled per "
        "link and per address. A form post (CSRF-protected) is answered with 303 to the page, or the "
        "page again with its errors; a JSON post with 201 and the appeal.",
    )
    def post(self, request, token: str):
        if _wants_json(request):
            return self._file_json(request, token)
        return self._file_form(request, token)

    def _file_json(self, request, token: str):
        prediction = _prediction_or_404(token)
        body = _require_object(request.data)
        errors = [{"field": name, "message": "unknown field"} for name in body if name not in APPEAL_FIELDS]
        if "reason" not in body:
            errors.append({"field": "reason", "message": "this field is required"})
        if errors:
            raise FieldValidationError(errors)
        try:
            appeal = appeal_file(prediction=prediction, reason=body["reason"],
                                 requested_output=body.get("requested_output"))
        except AppealRefused as exc:
            if exc.status == 409:
                raise Conflict(exc.message) from None
            raise FieldValidationError([{"field": exc.field, "message": exc.message}]) from None
        status_url = _status_url(token)
        return Response(appeal_as_dict(appeal, status_url=status_url), status=201, headers={"Location": status_url})

    def _file_form(self, request, token: str):
        refusal = _csrf_refusal(request)
        if refusal:
            raise exceptions.PermissionDenied(f"CSRF check failed: {refusal}")
        prediction = _prediction_or_404(token)
        form = AppealForm(request.data, output_spec=prediction.predictor.output_spec)
        if not form.is_valid():
            return _page(request, prediction, token, form=form, status=422)
        try:
            appeal_file(prediction=prediction, reason=form.cleaned_data["reason"],
                        requested_output=form.requested_output())
        except AppealRefused as exc:
            if exc.status == 409:
                return _page(request, prediction, token, problem=_sentence(exc.message), status=409)
            form.add_error(exc.field if exc.field in form.fields else None, _sentence(exc.message))
            return _page(request, prediction, token, form=form, status=422)
        return HttpResponseRedirect(f"{_page_url(token)}#appeal", status=303)


def _sentence(message: str) -> str:
    message = message.strip()
    return (message[:1].upper() + message[1:]).rstrip(".") + "."


class AppealStatusView(_PublicAppealView):
    """GET /appeal/<token>/status: where the latest appeal stands, as JSON."""

    html_error_pages = False  # JSON only, errors included

    @extend_schema(
        operation_id="appeal_status",
        responses={200: AppealStatusSerializer, 404: PROBLEM, 429: PROBLEM},
        description="`none` before any appeal, then `open`, `upheld` or `overturned`; the outcome and "
        "the reviewer's note once decided, and the prediction's current status and output.",
    )
    def get(self, request, token: str):
        prediction = _prediction_or_404(token)
        return Response(appeal_status_as_dict(prediction, appeal_latest(prediction=prediction)))

    def handle_exception(self, exc):
        # A JSON endpoint: problem+json whatever the Accept header says.
        return APIView.handle_exception(self, exc)


def appeal_not_found(request, rest: str = ""):
    """Any other URL under /appeal/: the same plain page as an unknown link."""
    if _wants_json(request):
        from gateway.errors import handler404

        return handler404(request)
    response = _not_found_page(request)
    for name, value in PRIVATE_HEADERS.items():
        response[name] = value
    return response
