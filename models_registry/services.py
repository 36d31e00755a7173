"""Stage changes of model versions. Every change is a history record with who and why."""
from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from gateway.history import change_reason

from .models import ModelVersion, Stage


class PromotionRefused(Exception):
    pass


def model_version_promote(*, version: ModelVersion, user=None, reason: str = "") -> ModelVersion:
    """Make `version` the champion; the current champion (if any) becomes archived.
    Atomic; the predictor's versions are locked in a fixed order (by id) so two promotions
    cannot interleave. A rejected version cannot be promoted."""
    with transaction.atomic():
        versions = list(
            ModelVersion.objects.select_for_update().filter(predictor_id=version.predictor_id).order_by("id")
        )
        target = next(v for v in versions if v.pk == version.pk)
        if target.stage == Stage.REJECTED:
            raise PromotionRefused("a rejected version cannot be promoted")
        if target.stage == Stage.CHAMPION:
            return target
        for other in versions:
            if other.stage == Stage.CHAMPION:
                other.stage = Stage.ARCHIVED
                other.stage_reason = f"replaced by v{target.version}"
                other._change_reason = change_reason(other.stage_reason)
                other._history_user = user
                other.save(update_fields=["stage", "stage_reason"])
        target.stage = Stage.CHAMPION
        target.promoted_at = timezone.now()
        target.stage_reason = reason or "promoted"
        target._change_reason = change_reason(target.stage_reason)
        target._history_user = user
        target.save(update_fields=["stage", "promoted_at", "stage_reason"])
    return target
