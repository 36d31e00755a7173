"""What the registry's commands share: who is acting, named with --user."""
from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError


def acting_person(username: str | None):
    """The active user named `username`, recorded in the history as who did it; None when
    no name is given (the change is then recorded without a person)."""
    if not username:
        return None
    person = get_user_model().objects.filter(username=username, is_active=True).first()
    if person is None:
        raise CommandError(f"no active user named {username!r}")
    return person
