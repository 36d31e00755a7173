"""Values made ready for a JSON column: numpy scalars and arrays as Python numbers and
lists, NaN and infinities as null (PostgreSQL's jsonb refuses them)."""
from __future__ import annotations

import math

import numpy as np


def json_ready(value, *, digits: int | None = None):
    """`value` with every number a finite Python number or None (rounded to `digits`
    places when given); anything that is not JSON becomes its repr."""
    if isinstance(value, dict):
        return {str(k): json_ready(v, digits=digits) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_ready(v, digits=digits) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            return None
        return float(value) if digits is None else round(float(value), digits)
    if value is None or isinstance(value, str):
        return value
    return repr(value)
