"""Pieces the three apps' admins share.

The admin is a window onto rows that services write. These classes close the admin's
generic write paths (add, change, delete, and django-simple-history's "revert to this
version", which would save an old row straight back to the table, skipping the service and
its audit), so the only writes left are the ones an admin class makes on purpose, through a
service."""
from __future__ import annotations

import json
import uuid

from django.contrib.admin.utils import flatten_fieldsets
from django.core.exceptions import PermissionDenied
from django.utils.html import format_html
from simple_history.admin import SimpleHistoryAdmin

EMPTY = "—"


def json_block(value) -> str:
    """A JSON value pretty-printed for a read-only admin field."""
    if value is None:
        return EMPTY
    text = json.dumps(value, indent=2, ensure_ascii=False)
    return format_html('<pre style="margin:0;white-space:pre-wrap">{}</pre>', text)


def json_inline(value, limit: int = 80) -> str:
    """A JSON value on one line, shortened, for change lists."""
    if value is None:
        return EMPTY
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def search_by_uuid(queryset, search_term: str, field: str):
    """Admin search on a UUID: an exact match on a whole id (an index lookup), nothing for
    other text, so a search never scans a big table or fails on a malformed id."""
    try:
        value = uuid.UUID(search_term.strip())
    except ValueError:
        return queryset.none()
    return queryset.filter(**{field: value})



class HistoryAdmin(SimpleHistoryAdmin):
    """SimpleHistoryAdmin for reading history only.

    Reverting is off: simple_history's revert form saves the old version directly (and lets
    anyone with view permission do so), bypassing the services that own each write.
    `history_hidden_fields` never appear in the history's list of changes (secrets, hashes);
    leave them out of `fields` too."""

    history_hidden_fields: tuple[str, ...] = ()

    def revert_disabled(self, request, obj=None):
        return True

    def history_form_view(self, request, object_id, version_id, extra_context=None):
        if request.method not in ("GET", "HEAD"):
            raise PermissionDenied
        return super().history_form_view(request, object_id, version_id, extra_context)

    def set_history_delta_changes(self, request, historical_records, foreign_keys_are_objs=True):
        # As SimpleHistoryAdmin's, but leaving out the hidden fields.
        previous = None
        for current in historical_records:
            if previous is not None:
                delta = previous.diff_against(
                    current,
                    excluded_fields=list(self.history_hidden_fields),
                    foreign_keys_are_objs=foreign_keys_are_objs,
                )
                helper = self.get_historical_record_context_helper(request, previous)
                previous.history_delta_changes = helper.context_for_delta_changes(delta)
            previous = current


class ReadOnlyAdminMixin:
    """No add, change or delete through the admin's generic forms (for anyone, superusers
    included); users with view permission see the rows read-only. Declare `fields` or
    `fieldsets`: they are all shown read-only, on the history's version pages too."""

    def get_readonly_fields(self, request, obj=None):
        declared = list(super().get_readonly_fields(request, obj))
        if self.fieldsets:
            shown = flatten_fieldsets(self.fieldsets)
        else:
            shown = flatten_fieldsets([(None, {"fields": self.fields or ()})])
        return declared + [name for name in shown if name not in declared]

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
