"""The JSON request parser: DRF's, made safe against documents Python's json accepts but
nothing after it can handle.

- Nesting: json recurses once per level, so a body of a few thousand `[` raises
  RecursionError (a 500) instead of a parse error, and a document parsed just below the
  limit can still overflow the stack when a later step re-serialises it. No Oz request
  needs more than a few levels, so anything deeper than MAX_DEPTH is a 400.
- Unpaired surrogates (`"\\ud800"`): json decodes them into strings that cannot be encoded
  as UTF-8, so storing them (PostgreSQL) or echoing them in an error fails. They are not
  text, so they are a 400 too.
- NUL characters: valid JSON, but PostgreSQL's text and jsonb cannot store them, in any
  field of any endpoint (a decision note as much as an input value): 422, field by field."""
from __future__ import annotations

from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError
from rest_framework.utils import json

from .errors import FieldValidationError

MAX_DEPTH = 64


def _is_text(value: str) -> bool:
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def document_problem(data, max_depth: int = MAX_DEPTH) -> str | None:
    """Why a parsed JSON document cannot be read at all, or None. Iterative: no recursion."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            if not _is_text(value):
                return "strings must not contain unpaired surrogates (\\ud800-\\udfff)"
        elif isinstance(value, (dict, list)):
            if depth > max_depth:
                return f"nested deeper than {max_depth} levels"
            if isinstance(value, dict):
                stack.extend((key, depth) for key in value)
                stack.extend((child, depth + 1) for child in value.values())
            else:
                stack.extend((child, depth + 1) for child in value)
    return None


def nul_fields(data) -> list[dict]:
    """Field errors for every string value holding a NUL character, by path (`input.note`)."""
    errors = []
    stack = [(data, "")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                errors.append({"field": path, "message": "must not contain NUL characters"})
        elif isinstance(value, dict):
            for key, child in value.items():
                if "\x00" in key:
                    errors.append({"field": path or "(body)", "message": "keys must not contain NUL characters"})
                stack.append((child, f"{path}.{key}" if path else key))
        elif isinstance(value, list):
            stack.extend((child, f"{path}[{i}]") for i, child in enumerate(value))
    return sorted(errors, key=lambda e: e["field"])


def _surely_plain(raw: bytes) -> bool:
    """True when the body cannot hold what the walks look for: NULs and unpaired surrogates
    reach a JSON string only as `\\u` escapes (strict JSON has no raw control characters), and
    a document is no deeper than its count of brackets. Most requests take this path."""
    return b"\\u" not in raw and raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        parser_context = parser_context or {}
        encoding = parser_context.get("encoding", settings.DEFAULT_CHARSET)
        raw = stream.read() if stream is not None else b""
        try:
            data = json.loads(raw.decode(encoding), parse_constant=json.strict_constant if self.strict else None)
        except RecursionError:
            raise ParseError(f"JSON parse error - nested deeper than {MAX_DEPTH} levels") from None
        except ValueError as exc:  # also UnicodeDecodeError
            if "integer string conversion" in str(exc):  # Python's advice to its programmer, not to a client
                raise ParseError("JSON parse error - a number has more than 4300 digits") from None
            raise ParseError(f"JSON parse error - {exc}") from None
        if _surely_plain(raw):
            return data
        problem = document_problem(data)
        if problem:
            raise ParseError(f"JSON parse error - {problem}")
        errors = nul_fields(data)
        if errors:
            raise FieldValidationError(errors)
        return data
