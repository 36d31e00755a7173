"""Secrets never reach a log line, even by accident: a logging filter that masks

- the token of an appeal link in a path (`/appeal/<token>` → `/appeal/[redacted]`), which
  Django's own request logger writes for error answers ("Conflict: /appeal/…",
  "Internal Server Error: /appeal/…");
- the secret part of an API key or user token (`oz_<prefix>_<secret>` → `oz_<prefix>_[redacted]`:
  the prefix is no secret, the admin shows it, and it says which key was involved);
- a credential after `Bearer`/`Token`/`Basic` (an Authorization header quoted somewhere).

`redact_logging(settings.LOGGING)` puts it on every handler and on the django.request and
django.server loggers (settings base/local/production). Standard-library records are
rewritten to their masked message; structlog events (dicts) have their string values masked.
Only lines that contain one of the patterns change; the rest pass untouched."""
from __future__ import annotations

import logging
import re

REDACTED = "[redacted]"

_PATTERNS = [
    # The appeal page and its status: the path's token (base64url HMAC, 43 characters).
    (re.compile(r"(/appeal/)[A-Za-z0-9_\-]{16,}"), r"\1" + REDACTED),
    # Authorization header values (credential-like: 16+ token characters, so prose such as
    # "the token is wrong" is left alone).
    (re.compile(r"\b(Bearer|Token|Basic)(\s+)[A-Za-z0-9._~+/=\-]{16,}", re.IGNORECASE), r"\1\2" + REDACTED),
    # oz_<12 hex>_<secret> and ozu_<12 hex>_<secret> (gateway.keys).
    (re.compile(r"\b(ozu?_[0-9a-f]{12}_)[A-Za-z0-9_\-]+"), r"\1" + REDACTED),
]
_QUICK = re.compile(r"/appeal/|oz_|ozu_|bearer|token|basic", re.IGNORECASE)


def redact(text: str) -> str:
    if not _QUICK.search(text):
        return text
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


# Values that cannot hold a secret, passed over without a call (a prediction's log event
# holds its whole input: mostly numbers).
_PLAIN = frozenset({int, float, bool, type(None)})


def _redact_value(value):
    if type(value) in _PLAIN:
        return value
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: v if type(v) in _PLAIN else _redact_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(v if type(v) in _PLAIN else _redact_value(v) for v in value)
    return value


def _strings(value, out: list) -> list:
    """Every string inside `value` (dicts, lists and tuples walked, as _redact_value walks
    them), appended to `out`."""
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, (dict, list, tuple)):
        for item in value.values() if isinstance(value, dict) else value:
            if type(item) not in _PLAIN:
                _strings(item, out)
    return out


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, dict):  # a structlog event on its way to ProcessorFormatter
            # Most events hold nothing to mask: one search over all their strings says so,
            # and only an event that may hold a secret is copied with its strings masked.
            if _QUICK.search("\n".join(_strings(record.msg, []))):
                record.msg = _redact_value(record.msg)
            return True
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is the formatter's problem, not ours
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        return True


def redact_logging(config: dict) -> dict:
    """settings.LOGGING with RedactSecrets on every handler, and on the loggers that write
    request paths (so their records are masked before any handler, a test's included)."""
    config = {**config}
    config["filters"] = {**config.get("filters", {}), "redact_secrets": {"()": "config.redaction.RedactSecrets"}}
    config["handlers"] = {
        name: {**handler, "filters": [*handler.get("filters", []), "redact_secrets"]}
        for name, handler in config.get("handlers", {}).items()
    }
    loggers = {**config.get("loggers", {})}
    for name in ("django.request", "django.server"):
        logger = {**loggers.get(name, {})}
        logger["filters"] = [*logger.get("filters", []), "redact_secrets"]
        loggers[name] = logger
    config["loggers"] = loggers
    return config
