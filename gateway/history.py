"""Who made a change, for django-simple-history.

Services set `instance._history_user` when they know the person; otherwise the request's
user is used, but only when it is a person: API clients are not users, and what they cause
(a prediction) is attributed through the prediction's own `client` field."""
from django.contrib.auth import get_user_model


def history_user(instance=None, request=None, **kwargs):
    user = getattr(instance, "_history_user", None)
    if user is not None:
        return user
    candidate = getattr(request, "user", None) if request is not None else None
    if isinstance(candidate, get_user_model()) and candidate.is_authenticated:
        return candidate
    return None


# simple-history's history_change_reason column is varchar(100).
CHANGE_REASON_MAX_LENGTH = 100


def change_reason(text: str) -> str | None:
    """A reason that fits the history column (the full text, where longer, belongs in a
    field of the model itself)."""
    if not text:
        return None
    return text if len(text) <= CHANGE_REASON_MAX_LENGTH else text[: CHANGE_REASON_MAX_LENGTH - 1] + "…"
