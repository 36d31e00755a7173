"""Stage changes of model versions: promote, challenge, reject, roll back. Every change is a
history record with who and why. All of them lock the predictor's versions in one fixed
order (by id), so two changes for one predictor cannot interleave."""
from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from gateway.history import change_reason
from gateway.models import Predictor

from .models import ModelVersion, Stage

STAGE_REASON_MAX_LENGTH = 1000


class PromotionRefused(Exception):
    pass


class RollbackRefused(Exception):
    pass


def gates_blocking(version: ModelVersion) -> list[dict]:
    """The stored gate results that stop a promotion: failed ones, and pending ones (a
    shadow-agreement gate still waiting for enough shadowed requests)."""
    return [g for g in version.gates or [] if g.get("passed") is not True and not g.get("informational")]


def _gates_blocking_now(version: ModelVersion) -> list[dict]:
    """What stops a promotion, judged on the evidence now: the predictor's gates evaluated
    afresh (a version whose gates were never applied — its worker died in between — or
    whose stored results predate a config change is not let through on stale results);
    the stored results when the predictor declares no gates."""
    if not version.predictor.gates:
        return gates_blocking(version)
    from .gates import gates_evaluate  # gates imports this module

    return [g for g in gates_evaluate(version=version) if g.get("passed") is not True and not g.get("informational")]


def _locked_versions(predictor_id: int) -> list[ModelVersion]:
    return list(ModelVersion.objects.select_for_update().filter(predictor_id=predictor_id).order_by("id"))


def _stage_set(version: ModelVersion, stage: str, reason: str, user) -> None:
    version.stage = stage
    version.stage_reason = reason[:STAGE_REASON_MAX_LENGTH]
    version._change_reason = change_reason(reason)
    version._history_user = user
    fields = ["stage", "stage_reason"]
    if stage == Stage.CHAMPION:
        version.promoted_at = timezone.now()
        fields.append("promoted_at")
    version.save(update_fields=fields)


def _schema_left_behind(version: ModelVersion) -> str:
    """Why `version` cannot answer for its predictor's current schema, or "" (it can)."""
    current = Predictor.objects.values_list("schema_version", flat=True).get(pk=version.predictor_id)
    if version.schema_version == current:
        return ""
    return f"was trained on schema version {version.schema_version} and the predictor is at {current}"


def model_version_promote(
    *, version: ModelVersion, user=None, reason: str = "", force: bool = False
) -> ModelVersion:
    """Make `version` the champion; the current champion (if any) becomes archived.

    Refused for a rejected version, and while a gate has failed or is still pending —
    unless `force`, which needs a written reason (kept in the history). Always refused when
    the file the version would be served from is missing or not the one recorded (sha256),
    or when it was trained on another schema version than the predictor's: no process could
    answer with it, and every request would go to the fallback."""
    from .serving import artifact_check

    reason = (reason or "").strip()
    if force and not reason:
        raise PromotionRefused("forcing a promotion past its gates needs a written reason")
    # Read and hashed before any row is locked (the file may be large, or remote); refused
    # below, after the gates, so a version that fails both is told about its gates first.
    problem, detail = artifact_check(version)
    with transaction.atomic():
        versions = _locked_versions(version.predictor_id)
        target = next(v for v in versions if v.pk == version.pk)
        if target.stage == Stage.CHAMPION:
            return target
        blocking = _gates_blocking_now(target)
        names = ", ".join(f"{g['gate']} ({'pending' if g.get('passed') is None else 'failed'})" for g in blocking)
        if target.stage == Stage.REJECTED and not force:
            # Why it was rejected is what its stage change said (a failed gate, a rollback, an
            # operator), not what its gates say now: a pending gate rejects nothing.
            why = f" ({target.stage_reason})" if target.stage_reason else ""
            gates_now = f"; its gates now: {names}" if blocking else ""
            raise PromotionRefused(f"this version was rejected{why}{gates_now}; to promote it anyway, force it with a written reason")
        if blocking and not force:
            raise PromotionRefused(f"gates not passed: {names}; force it with a written reason")
        if problem is not None:
            raise PromotionRefused(
                f"v{target.version} cannot be served: its model file is {problem} ({detail}); retrain or restore the file"
            )
        stale = _schema_left_behind(target)
        if stale:
            raise PromotionRefused(f"v{target.version} cannot be served: it {stale}, so every request would go to the fallback; "
                                   "retrain on the current schema")
        for other in versions:
            if other.stage == Stage.CHAMPION:
                _stage_set(other, Stage.ARCHIVED, f"replaced by v{target.version}", user)
        if blocking:
            reason = f"forced past {', '.join(g['gate'] for g in blocking)}: {reason}"
        _stage_set(target, Stage.CHAMPION, reason or "promoted", user)
    return target


def model_version_challenge(*, version: ModelVersion, user=None, reason: str = "") -> ModelVersion:
    """Make `version` the challenger: it gets shadow traffic so its agreement with the
    humans can be measured. A previous challenger is archived (one per predictor)."""
    with transaction.atomic():
        versions = _locked_versions(version.predictor_id)
        target = next(v for v in versions if v.pk == version.pk)
        if target.stage not in (Stage.CANDIDATE, Stage.ARCHIVED):
            raise PromotionRefused(f"a {target.stage} version cannot become the challenger")
        for other in versions:
            if other.stage == Stage.CHALLENGER:
                _stage_set(other, Stage.ARCHIVED, f"challenger replaced by v{target.version}", user)
        _stage_set(target, Stage.CHALLENGER, reason or "challenger: measured on shadow traffic", user)
    return target


def model_version_reject(*, version: ModelVersion, user=None, reason: str) -> ModelVersion:
    """Mark a version rejected (a failed gate, or an operator's judgement). A champion is
    not rejected this way: roll it back."""
    with transaction.atomic():
        target = next(v for v in _locked_versions(version.predictor_id) if v.pk == version.pk)
        if target.stage == Stage.CHAMPION:
            raise PromotionRefused("the champion cannot be rejected; roll it back instead")
        _stage_set(target, Stage.REJECTED, reason, user)
    return target


def rollback_target(versions) -> ModelVersion | None:
    """The version a rollback would restore: the archived one most recently promoted."""
    earlier = [v for v in versions if v.stage == Stage.ARCHIVED and v.promoted_at]
    return max(earlier, key=lambda v: v.promoted_at) if earlier else None


def model_version_rollback(
    *, predictor: Predictor, user=None, reason: str = "", expected_champion: ModelVersion | None = None
) -> ModelVersion:
    """Make the previous champion current again in one step. The champion being rolled back
    is rejected (so a second rollback goes further back, never forth); the previous one is
    the archived version most recently promoted. With `expected_champion` (a confirmation
    page's), refused when the champion has changed since. Takes effect on every web worker
    within the serving cache's lifetime (OZ_SERVING_CACHE_SECONDS)."""
    reason = (reason or "").strip() or "rolled back"
    with transaction.atomic():
        versions = _locked_versions(predictor.pk)
        current = next((v for v in versions if v.stage == Stage.CHAMPION), None)
        if current is None:
            raise RollbackRefused("there is no champion to roll back")
        if expected_champion is not None and current.pk != expected_champion.pk:
            raise RollbackRefused(f"v{expected_champion.version} is no longer the champion (v{current.version} is)")
        previous = rollback_target(v for v in versions if v.pk != current.pk)
        if previous is None:
            raise RollbackRefused(f"v{current.version} is the only version that has been champion")
        stale = _schema_left_behind(previous)
        if stale:  # as promotion refuses it: restored, it would send every request to the fallback
            raise RollbackRefused(f"v{previous.version} {stale}, so it could not answer; promote another version or retrain instead")
        _stage_set(current, Stage.REJECTED, f"rolled back to v{previous.version}: {reason}", user)
        _stage_set(previous, Stage.CHAMPION, f"restored by rollback of v{current.version}: {reason}", user)
    return previous
