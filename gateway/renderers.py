"""JSON answers rendered by orjson, and the common content negotiation decided at once.

Every API answer is JSON; /predict writes one per request, and DRF's renderer (json.dumps
with its encoder class) and its content negotiation (parsing the Accept header against each
renderer) were a visible share of a worker's CPU there. Both keep DRF's behaviour:

- `OrjsonRenderer` writes what DRF's JSONRenderer writes (compact, UTF-8, U+2028/U+2029
  escaped, dates and anything else orjson does not know through DRF's own encoder). An
  indented answer (`Accept: application/json; indent=4`) and anything orjson refuses (an
  integer beyond 64 bits) go to DRF's renderer unchanged. One difference, on purpose: a
  non-finite float is written as null, where DRF's strict renderer failed the answer.
- `JsonFirstNegotiation` answers the requests that cannot choose anything else (no Accept
  header, or exactly `*/*` or `application/json`; no `?format=`) with the first renderer when it is
  JSON, which is what DRF would pick; any other request is negotiated by DRF."""
from __future__ import annotations

import orjson
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import JSONRenderer
from rest_framework.settings import api_settings

_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


class OrjsonRenderer(JSONRenderer):
    def render(self, data, accepted_media_type=None, renderer_context=None):
        if data is None:
            return b""
        if self.get_indent(accepted_media_type, renderer_context or {}) is not None or not self.compact or self.ensure_ascii:
            return super().render(data, accepted_media_type, renderer_context)
        try:
            out = orjson.dumps(data, default=self.encoder_class().default, option=_OPTIONS)
        except TypeError:  # orjson.JSONEncodeError too: DRF's renderer decides, as it always did
            return super().render(data, accepted_media_type, renderer_context)
        if b"\xe2\x80\xa8" in out or b"\xe2\x80\xa9" in out:
            # As DRF does: JSON that is also a strict JavaScript subset.
            out = out.replace(b"\xe2\x80\xa8", b"\\u2028").replace(b"\xe2\x80\xa9", b"\\u2029")
        return out


_ANY_JSON = frozenset({None, "*/*", "application/json"})  # None: no Accept header at all


class JsonFirstNegotiation(DefaultContentNegotiation):
    def select_renderer(self, request, renderers, format_suffix=None):
        if (
            renderers
            and renderers[0].media_type == "application/json"
            and not format_suffix
            and request.META.get("HTTP_ACCEPT") in _ANY_JSON
            and api_settings.URL_FORMAT_OVERRIDE not in request.query_params
        ):
            return renderers[0], "application/json"
        return super().select_renderer(request, renderers, format_suffix)
