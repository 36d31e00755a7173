"""Teach drf-spectacular our two authentication schemes and our error contract."""
import copy

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "gateway.auth.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "API client key: `Authorization: Bearer oz_…`"}


class UserTokenScheme(OpenApiAuthenticationExtension):
    target_class = "gateway.auth.UserTokenAuthentication"
    name = "UserToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "Reviewer or operator token: `Authorization: Token ozu_…`",
        }


# ---------------------------------------------------------------------------------------
# Error responses: every one is problem+json, and every operation documents the errors
# that any request to it can meet, not only those its view raises itself.
# ---------------------------------------------------------------------------------------

PROBLEM_MEDIA_TYPE = "application/problem+json"
_BODY_METHODS = ("POST", "PUT", "PATCH")

_IMPLICIT_ERRORS = {
    "400": "The body is not valid JSON (or nests too deep, or holds unpaired surrogates).",
    "401": "Missing or invalid credentials (`WWW-Authenticate` names the scheme).",
    "403": "Authenticated, but not allowed to do this.",
    "404": "Nothing at this path (an unknown id or slug, or one the caller may not see).",
    "413": "The body is larger than 1 MiB.",
    "415": "The body is not in a media type this operation reads.",
    "429": "Throttled; `Retry-After` says when to try again.",
    "503": "A dependency (the database, Redis) is unavailable; `Retry-After` says when to try again.",
}


class OzAutoSchema(AutoSchema):
    """drf-spectacular's AutoSchema, with Oz's error contract (gateway/errors.py) documented:

    - every 4xx/5xx response is `application/problem+json` (the Problem shape), never
      `application/json`;
    - each operation also lists the errors its view never raises itself but its request can
      meet on the way: 401/403 when it needs credentials, 429 when it is throttled, 404 when
      its path has parameters, 400/413/415 when it reads a body, and 503 (a dependency
      down) for every one;
    - a view with `html_error_pages = True` (pages for people) answers errors as text/html
      to browsers, so each of its errors lists that media type too."""

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        for code, response in responses.items():
            content = response.get("content") if isinstance(response, dict) else None
            if _is_error(code) and content and "application/json" in content:
                content.setdefault(PROBLEM_MEDIA_TYPE, content.pop("application/json"))
        implicit = self._implicit_error_codes()
        if implicit:
            from .serializers import ProblemSerializer

            problem = self.resolve_serializer(ProblemSerializer, "response").ref
            for code in implicit:
                responses.setdefault(code, {
                    "description": _IMPLICIT_ERRORS[code],
                    "content": {PROBLEM_MEDIA_TYPE: {"schema": problem}},
                })
        if getattr(self.view, "html_error_pages", False):
            # Pages for people (the appeal links): a browser gets its errors as a page too.
            for code, response in responses.items():
                if _is_error(code) and response.get("content"):
                    response["content"].setdefault("text/html", {"schema": {"type": "string"}})
        return dict(sorted(responses.items()))

    def _implicit_error_codes(self) -> list[str]:
        from rest_framework.permissions import AllowAny

        view, codes = self.view, []
        if not all(isinstance(permission, AllowAny) for permission in view.get_permissions()):
            codes += ["401", "403"]
        if view.get_throttles():
            codes.append("429")
        if "{" in self.path:
            codes.append("404")
        if self.method in _BODY_METHODS and self.get_request_serializer() is not None:
            codes += ["400", "413", "415"]
        codes.append("503")  # gateway.middleware: any request, when a dependency is down
        return codes

    def _map_basic_serializer(self, serializer, direction):
        schema = super()._map_basic_serializer(serializer, direction)
        if direction == "request":
            # Oz refuses unknown fields in every request body (a typo must never pass as a
            # missing value); the schema says so.
            schema["additionalProperties"] = False
            # And NUL in any string (gateway.parsers: PostgreSQL cannot store it).
            for name, prop in list(schema.get("properties", {}).items()):
                schema["properties"][name] = without_nul(prop)
            # Rules across fields that no field states (e.g. "forcing needs a reason").
            schema.update(copy.deepcopy(getattr(serializer, "openapi_request_extra", {})))
        return schema


# A string without NUL characters, which gateway.parsers refuses in every JSON string (422).
NO_NUL = r"^[^\x00]*$"


def without_nul(schema: dict) -> dict:
    """`schema` (a copy) with NO_NUL as the pattern of each free string in it."""
    if not isinstance(schema, dict) or "$ref" in schema:
        return schema
    schema = dict(schema)
    if schema.get("type") == "string" and not {"enum", "format", "pattern"} & schema.keys():
        schema["pattern"] = NO_NUL
    for key in ("oneOf", "anyOf", "allOf"):
        if key in schema:
            schema[key] = [without_nul(item) for item in schema[key]]
    if "items" in schema:
        schema["items"] = without_nul(schema["items"])
    if isinstance(schema.get("properties"), dict):
        schema["properties"] = {name: without_nul(prop) for name, prop in schema["properties"].items()}
    return schema


def _is_error(code) -> bool:
    try:
        return int(code) >= 400
    except (TypeError, ValueError):
        return str(code)[:1] in ("4", "5")


# ---------------------------------------------------------------------------------------
# One typed `POST /predict/<slug>` per loaded predictor (a postprocessing hook)
# ---------------------------------------------------------------------------------------

def input_json_schema(input_schema: dict) -> dict:
    """The JSON Schema of a predictor's `input`, as gateway.schema.input_validate checks it."""
    from .schema import DEFAULT_TEXT_MAX_LENGTH, NUMBER_LIMIT

    properties, required = {}, []
    for name, spec in input_schema.items():
        kind = spec["type"]
        if kind in ("number", "integer"):
            prop = {
                "type": kind,
                "minimum": spec.get("minimum", -NUMBER_LIMIT),
                "maximum": spec.get("maximum", NUMBER_LIMIT),
            }
        elif kind == "boolean":
            prop = {"type": "boolean"}
        elif kind == "category":
            prop = {"type": "string", "enum": list(spec["choices"])}
        else:
            prop = {"type": "string", "maxLength": spec.get("max_length", DEFAULT_TEXT_MAX_LENGTH), "pattern": NO_NUL}
        if spec.get("description"):
            prop["description"] = spec["description"]
        if spec.get("required"):
            required.append(name)
        else:
            prop["nullable"] = True  # an explicit null is the same as leaving the field out
            if "enum" in prop:
                prop["enum"].append(None)  # OpenAPI 3.0: `nullable` does not widen an enum
        properties[name] = prop
    schema = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = required
    return schema


GENERIC_PREDICT_PATH = "/predict/{slug}"


def predict_path_per_predictor(result, generator, request, public):
    """drf-spectacular postprocessing hook: next to the generic `POST /predict/{slug}`, one
    `POST /predict/<slug>` for each loaded predictor whose `input` is that predictor's own
    schema (field types, bounds, choices, required fields), so a client, or a fuzzer, knows
    exactly which bodies are valid. The schema follows `load_predictors`: it is built from
    the database on every request for it."""
    from django.db import DatabaseError

    from .models import Predictor

    paths = result.get("paths", {})
    generic = paths.get(GENERIC_PREDICT_PATH, {}).get("post")
    if generic is None:
        return result
    try:
        predictors = [(p.slug, p.schema) for p in Predictor.objects.order_by("slug")]
    except DatabaseError:  # offline generation (`manage.py spectacular`) without a database
        return result
    body_ref = generic["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    body = result["components"]["schemas"][body_ref.rsplit("/", 1)[-1]]
    specific = {}
    for slug, input_schema in predictors:
        operation = copy.deepcopy(generic)
        operation["operationId"] = f"predict_{slug.replace('-', '_')}"
        operation["parameters"] = [p for p in operation.get("parameters", []) if p.get("in") != "path"]
        operation["description"] = f"Ask `{slug}`: {generic.get('description', '')}"
        typed = copy.deepcopy(body)
        typed["properties"]["input"] = input_json_schema(input_schema)
        operation["requestBody"] = {
            "content": {"application/json": {"schema": typed}},
            "required": generic["requestBody"].get("required", True),
        }
        specific[f"/predict/{slug}"] = {"post": operation}
    ordered = {}
    for path, item in paths.items():
        if path in specific:
            continue
        ordered[path] = item
        if path == GENERIC_PREDICT_PATH:
            ordered.update(specific)
    result["paths"] = ordered
    return result
