"""Promotion gates: a predictor's `gates:` block (see models_registry/config.py) evaluated
against one model version, the results stored on the version, and the stage moved to match.

Each result is {"gate", "passed", "value", "threshold", "detail"}; `passed` is None while
the gate is pending (only `min_shadow_agreement` can be: it waits for enough shadowed
requests that a human has since decided). Entries another step added with
`"informational": true` (such as `onnx_parity`) are kept and never block."""
from __future__ import annotations

import logging

from django.db import transaction

from .models import ModelVersion, Stage
from .services import (
    PromotionRefused,
    _locked_versions,
    model_version_challenge,
    model_version_promote,
    model_version_reject,
)
from .shadow import shadow_agreement

logger = logging.getLogger(__name__)

# Metrics where a smaller value is better; every other metric is higher-is-better.
LOWER_IS_BETTER = frozenset({"log_loss", "brier", "rmse", "mae"})
SHADOW_GATE = "min_shadow_agreement"
AUTO_PROMOTE_REASON = "auto-promoted: every gate passed"


def metric_lower_is_better(name: str) -> bool:
    return name in LOWER_IS_BETTER


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _result(gate: str, passed: bool | None, value, threshold, detail: str) -> dict:
    return {"gate": gate, "passed": passed, "value": value, "threshold": threshold, "detail": detail}


def _metric(metrics: dict, name: str):
    """A metric by name, also found inside a nested block (e.g. `calibration.brier`)."""
    value = (metrics or {}).get(name)
    if value is None:
        for block in (metrics or {}).values():
            if isinstance(block, dict) and _number(block.get(name)):
                return block[name]
    return value


def _fairness_gap(fairness: dict, name: str):
    fairness = fairness or {}
    value = fairness.get(name)
    if value is None and isinstance(fairness.get("gaps"), dict):
        value = fairness["gaps"].get(name)
    return value


def _threshold_gate(gate: str, value, threshold, *, higher_is_better: bool) -> dict:
    if not _number(value):
        return _result(gate, False, None, threshold, "not measured on the holdout")
    passed = value >= threshold if higher_is_better else value <= threshold
    relation = "at least" if higher_is_better else "at most"
    return _result(gate, passed, value, threshold, f"{value:.4g}; needs {relation} {threshold}")


def _beat_champion(run, block: dict) -> dict:
    name, margin = block["metric"], block.get("margin", 0.0) or 0.0
    gate = "beat_champion"
    value = _metric(run.metrics, name)
    champion = run.champion_metrics or {}
    if not champion:
        return _result(gate, True, value, None, "no champion to beat")
    champion_value = _metric(champion, name)
    if not _number(value):
        return _result(gate, False, None, None, f"{name} not measured for this version")
    if not _number(champion_value):
        return _result(gate, True, value, None, f"the champion's {name} could not be measured on this holdout")
    if metric_lower_is_better(name):
        threshold = champion_value - margin
        passed = value <= threshold
        relation = "at most"
    else:
        threshold = champion_value + margin
        passed = value >= threshold
        relation = "at least"
    detail = f"{name} {value:.4g}; needs {relation} {threshold:.4g} (champion {champion_value:.4g}, margin {margin})"
    return _result(gate, passed, value, threshold, detail)


def _shadow_gate(version: ModelVersion, block: dict) -> dict:
    rate, needed = block["rate"], block["min_requests"]
    agreement = shadow_agreement(version=version, tolerance=block.get("tolerance"))
    n = agreement["n"]
    if n < needed:
        return _result(
            SHADOW_GATE, None, agreement["rate"], rate,
            f"pending: {n} of {needed} shadowed requests decided by a human",
        )
    passed = agreement["rate"] >= rate
    detail = f"{agreement['agreeing']} of {n} agree with the human ({agreement['rate']:.1%}; needs {rate:.1%})"
    return _result(SHADOW_GATE, passed, agreement["rate"], rate, detail)


def gates_evaluate(*, version: ModelVersion) -> list[dict]:
    """The result of every gate the predictor declares, in the order of GATE_KEYS. Reads
    only; the shadow gate costs one query."""
    gates = version.predictor.gates or {}
    run = version.run
    results: list[dict] = []
    if "min_labels" in gates:
        n = (run.dataset or {}).get("n_labels")
        results.append(_threshold_gate("min_labels", n, gates["min_labels"], higher_is_better=True))
    for name, threshold in (gates.get("min_metrics") or {}).items():
        results.append(_threshold_gate(f"min_metrics.{name}", _metric(run.metrics, name), threshold, higher_is_better=True))
    for name, threshold in (gates.get("max_metrics") or {}).items():
        results.append(_threshold_gate(f"max_metrics.{name}", _metric(run.metrics, name), threshold, higher_is_better=False))
    if gates.get("beat_champion"):
        results.append(_beat_champion(run, gates["beat_champion"]))
    for name, threshold in (gates.get("max_fairness_gaps") or {}).items():
        gate = f"max_fairness_gaps.{name}"
        value = _fairness_gap(run.fairness, name)
        if not _number(value):
            results.append(_result(gate, False, None, threshold, "not measured (no fairness result for the sensitive attribute)"))
        else:
            results.append(_threshold_gate(gate, value, threshold, higher_is_better=False))
    if gates.get(SHADOW_GATE):
        results.append(_shadow_gate(version, gates[SHADOW_GATE]))
    return results


def gates_summary(results: list[dict]) -> bool | None:
    """True when every blocking gate passed (also when there are none), False when any
    failed, None when none failed and one is pending."""
    blocking = [g for g in results if not g.get("informational")]
    if any(g.get("passed") is False for g in blocking):
        return False
    if any(g.get("passed") is None for g in blocking):
        return None
    return True


def version_gates_apply(*, version: ModelVersion) -> ModelVersion:
    """Evaluate the predictor's gates for `version`, store the results and move the stage:

    - any gate failed: rejected (the reason names the failed gates);
    - only the shadow-agreement gate pending: challenger, so it gets shadow traffic;
    - every gate passed: champion when the predictor has `auto_promote`, else it stays
      where it is (candidate or challenger) for an operator to promote.

    Only candidates and challengers move; the gates of any other stage are stored only.
    Idempotent: the same evidence gives the same results, no new history row and no stage
    change. Atomic, under the same per-predictor lock as every stage change."""
    version = ModelVersion.objects.select_related("predictor", "run").get(pk=version.pk)
    with transaction.atomic():
        versions = _locked_versions(version.predictor_id)
        # Evaluated under the lock: a slower evaluation on older evidence can never
        # overwrite a newer one (or the stage change that followed it).
        evaluated = gates_evaluate(version=version)
        names = {g["gate"] for g in evaluated}
        target = next(v for v in versions if v.pk == version.pk)
        kept = [g for g in target.gates or [] if g.get("informational") and g.get("gate") not in names]
        results = evaluated + kept
        passed = gates_summary(results)
        if results != (target.gates or []) or passed != target.gates_passed:
            target.gates, target.gates_passed = results, passed
            # Not a history record of its own: the history is of stage changes, and each
            # stage change snapshots the gate results it followed.
            target.skip_history_when_saving = True
            try:
                target.save(update_fields=["gates", "gates_passed"])
            finally:
                del target.skip_history_when_saving
        if target.stage in (Stage.CANDIDATE, Stage.CHALLENGER):
            _stage_follow_gates(target, results, passed, auto_promote=version.predictor.auto_promote)
    target.refresh_from_db()
    return target


def _stage_follow_gates(target: ModelVersion, results: list[dict], passed: bool | None, *, auto_promote: bool) -> None:
    if passed is False:
        failed = [g["gate"] for g in results if g.get("passed") is False and not g.get("informational")]
        model_version_reject(version=target, reason=f"gates failed: {', '.join(failed)}")
    elif passed is None:
        pending = [g["gate"] for g in results if g.get("passed") is None and not g.get("informational")]
        if pending == [SHADOW_GATE] and target.stage == Stage.CANDIDATE:
            model_version_challenge(
                version=target, reason="challenger: the shadow-agreement gate is waiting for shadow traffic"
            )
    elif auto_promote:
        try:
            model_version_promote(version=target, reason=AUTO_PROMOTE_REASON)
        except PromotionRefused as exc:  # every gate passed, but it cannot be served (its file, its schema): never fail the caller
            logger.warning("auto-promotion of %s refused: %s", target, exc)


def shadow_gates_after_label(*, prediction_id) -> int:
    """A human decided a request some waiting versions answered in shadow: weigh their
    shadow gates now. Returns how many versions were evaluated (usually none or one)."""
    waiting = ModelVersion.objects.filter(
        shadow_predictions__prediction_id=prediction_id,
        stage__in=[Stage.CANDIDATE, Stage.CHALLENGER],
        gates_passed__isnull=True,
    ).only("pk")
    evaluated = 0
    for version in list(waiting):
        version_gates_apply(version=version)
        evaluated += 1
    return evaluated


def shadow_gates_sweep() -> dict:
    """Re-evaluate every candidate and challenger whose shadow-agreement gate is pending
    (beat runs this): enough agreement promotes (auto_promote) or leaves it for an operator,
    too little rejects it. Safe to run concurrently and repeatedly."""
    # Few rows (candidates and challengers still pending), read at once: each is then
    # applied in its own transaction.
    waiting = list(
        ModelVersion.objects.filter(stage__in=[Stage.CANDIDATE, Stage.CHALLENGER], gates_passed__isnull=True)
        .only("pk", "gates")
        .order_by("pk")
    )
    counts = {"evaluated": 0, "promoted": 0, "rejected": 0, "pending": 0}
    for version in waiting:
        if not any(g.get("gate") == SHADOW_GATE and g.get("passed") is None for g in version.gates or []):
            continue
        version = version_gates_apply(version=version)
        counts["evaluated"] += 1
        if version.stage == Stage.CHAMPION:
            counts["promoted"] += 1
        elif version.stage == Stage.REJECTED:
            counts["rejected"] += 1
        elif version.gates_passed is None:
            counts["pending"] += 1
    return counts
