"""JSON written by orjson where it can, by the standard library where it cannot.

orjson is several times faster on the hot path's largest values (a prediction's input in
its row and its log line), but refuses integers beyond 64 bits, which a valid input may
hold: those values are written by json.dumps instead, so nothing that wrote before fails
now. Keys that are not strings are written as strings, as json.dumps does."""
from __future__ import annotations

import json

import orjson


def dumps(value, *, default=None, option: int = 0) -> bytes:
    """`value` as JSON bytes; `default` as in both libraries, `option` orjson's extra options."""
    try:
        return orjson.dumps(value, default=default, option=orjson.OPT_NON_STR_KEYS | option)
    except TypeError:  # orjson.JSONEncodeError is one
        return json.dumps(value, default=default).encode()
