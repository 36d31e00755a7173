"""Who made a change, for django-simple-history.

Services set `instance._history_user` when they know the person; otherwise the request's
user is used, but only when it is a person: API clients are not users, and what they cause
(a prediction) is attributed through the prediction's own `client` field."""
from django.contrib.auth import get_user_model
from django.db import models, router
from simple_history.manager import HistoryManager

from .rows import row_insert


def history_user(instance=None, request=None, **kwargs):
    user = getattr(instance, "_history_user", None)
    if user is not None:
        return user
    candidate = getattr(request, "user", None) if request is not None else None
    if isinstance(candidate, get_user_model()) and candidate.is_authenticated:
        return candidate
    return None


class ReusedHistoryManager(HistoryManager):
    """simple-history's manager, with its queryset-bound class made once per queryset class.

    simple-history builds `instance.history` anew on every access, through Django's
    `Manager.from_queryset`, which makes a new class (inspecting every method of the
    queryset) each time: about a millisecond, paid by every audited save (it reads the
    manager to write the history row). The classes it makes are all alike, so one is kept."""

    _made: dict = {}

    @classmethod
    def from_queryset(cls, queryset_class, class_name=None):
        key = (cls, queryset_class, class_name)
        made = cls._made.get(key)
        if made is None:
            made = cls._made[key] = super().from_queryset(queryset_class, class_name)
        return made


class InsertedOnce(models.Model):
    """Base of every history model: a new history row is one INSERT compiled once per model
    (gateway.rows.row_insert) instead of one the ORM compiles on every save. Every audited
    change writes one, on the request path of deciding and claiming. Any other save (with
    arguments, or of a row already stored) is the ORM's."""

    class Meta:
        abstract = True

    def save(self, *args, **kwargs):
        if self._state.adding and self.pk is None and not args and not kwargs.keys() - {"using"} \
                and kwargs.get("using") in (None, router.db_for_write(type(self), instance=self)):
            row_insert(self)
            return
        super().save(*args, **kwargs)


def audit_history(**options):
    """The HistoricalRecords every audited model uses: who changed it (history_user), the
    reused manager class and history rows inserted with a statement compiled once."""
    from simple_history.models import HistoricalRecords

    options.setdefault("bases", [InsertedOnce])
    return HistoricalRecords(get_user=history_user, history_manager=ReusedHistoryManager, **options)


# simple-history's history_change_reason column is varchar(100).
CHANGE_REASON_MAX_LENGTH = 100


def change_reason(text: str) -> str | None:
    """A reason that fits the history column (the full text, where longer, belongs in a
    field of the model itself)."""
    if not text:
        return None
    return text if len(text) <= CHANGE_REASON_MAX_LENGTH else text[: CHANGE_REASON_MAX_LENGTH - 1] + "…"


class HistoryFromFirstChange:
    """For rows the system writes on the request path by the thousand (predictions, review
    tasks): creating one writes no history row; the first change to it first records the
    row as it was created (history_type "+", dated at its `created_at`, no user), then the
    change as usual. So every state a person changed is still in the history, and /predict
    does one INSERT instead of two. A row never changed has no history: it is its own record.

    Put it before models.Model in the bases; the model needs `created_at` and a simple-history
    `history` manager."""

    @classmethod
    def from_db(cls, db, field_names, values):
        instance = super().from_db(db, field_names, values)
        # The row as read, for its creation record should this be its first change (saves
        # history_begin a SELECT; a claim is often a task's first change).
        instance._history_loaded = dict(zip(field_names, values, strict=True))
        return instance

    def save(self, *args, **kwargs):
        if self._state.adding:
            if hasattr(self, "skip_history_when_saving"):
                return super().save(*args, **kwargs)
            self.skip_history_when_saving = True
            try:
                return super().save(*args, **kwargs)
            finally:
                del self.skip_history_when_saving
        history_begin(self)
        return super().save(*args, **kwargs)


# Set on an instance read with it (claim-next's query annotates it): whether the row has any
# history yet, which saves history_begin its own query.
HISTORY_RECORDED = "history_recorded"


def history_recorded(model) -> dict:
    """The annotation that reads HISTORY_RECORDED with the row: `.annotate(**history_recorded(M))`."""
    from django.db.models import Exists, OuterRef

    historical = model.history.model
    return {HISTORY_RECORDED: Exists(historical.objects.filter(**{model._meta.pk.attname: OuterRef("pk")}))}


def history_begin(instance) -> None:
    """Write the creation record of `instance` if its history is empty (see
    HistoryFromFirstChange). Call before its first change; later calls cost nothing."""
    if getattr(instance, "_history_begun", False) or instance.pk is None:
        return
    model = type(instance)
    historical = model.history.model
    recorded = getattr(instance, HISTORY_RECORDED, None)
    if recorded is None:
        recorded = historical.objects.filter(**{model._meta.pk.attname: instance.pk}).exists()
    if not recorded:
        tracked = [f.attname for f in historical._meta.concrete_fields if f.attname in {c.attname for c in model._meta.concrete_fields}]
        loaded = getattr(instance, "_history_loaded", None) or {}
        if all(name in loaded for name in tracked):
            values = {name: loaded[name] for name in tracked}
        else:  # created in this process, or read with only()/defer(): read the row as it is
            values = model._base_manager.filter(pk=instance.pk).values(*tracked).first()
        if values is not None:
            # One INSERT compiled once per model (no signal listens for historical rows).
            row_insert(historical(
                history_date=values["created_at"], history_type="+", history_user=None, history_change_reason=None, **values,
            ))
    instance._history_begun = True
