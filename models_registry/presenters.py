"""The JSON shapes of training runs and model versions, shared by the API and the commands."""
from __future__ import annotations

from .models import ModelVersion


def _iso(value):
    return value.isoformat().replace("+00:00", "Z") if value else None


def stage_histories(version_ids) -> dict[int, list[dict]]:
    """Each version's stage changes from django-simple-history, oldest first: the stage it
    entered, why, who and when. Records that changed something else (gate results) are
    left out. One query for any number of versions."""
    records = (
        ModelVersion.history.model.objects.filter(id__in=list(version_ids))
        .select_related("history_user")
        .order_by("id", "history_date", "history_id")
        .only("id", "stage", "stage_reason", "history_date", "history_change_reason", "history_user__username")
    )
    out: dict[int, list[dict]] = {}
    for record in records:
        entries = out.setdefault(record.id, [])
        if entries and entries[-1]["stage"] == record.stage:
            continue
        entries.append({
            "stage": record.stage,
            "reason": record.stage_reason or record.history_change_reason or "",
            "by": record.history_user.username if record.history_user_id else None,
            "at": _iso(record.history_date),
        })
    return out


def dataset_summary(dataset: dict | None) -> dict:
    """The dataset snapshot without the label id lists (long; the hash identifies the set)."""
    summary = dict(dataset or {})
    ids = summary.pop("label_ids", None)
    if ids is not None:
        summary.setdefault("n_label_ids", len(ids))
    summary.pop("holdout_label_ids", None)
    return summary


def run_as_dict(run, *, detail: bool = False, version=None, history: list[dict] | None = None) -> dict:
    """A training run. `detail` (GET /training-runs/<id>) adds the full label id list, the
    logs and the version it produced with its gate results and stage history."""
    if version is None and run.status == "succeeded":
        version = getattr(run, "model_version", None)
    data = {
        "id": run.pk,
        "predictor": run.predictor.slug,
        "status": run.status,
        "trigger": run.trigger,
        "requested_by": run.requested_by.username if run.requested_by_id else None,
        "estimator": run.estimator or None,
        "params": run.params,
        "metrics": run.metrics,
        "champion_metrics": run.champion_metrics,
        "fairness": run.fairness,
        "dataset": dict(run.dataset or {}) if detail else dataset_summary(run.dataset),
        "environment": run.environment,
        "error": run.error or None,
        "model_version": version.version if version else None,
        "gates": version.gates if version else None,
        "gates_passed": version.gates_passed if version else None,
        "created_at": _iso(run.created_at),
        "started_at": _iso(run.started_at),
        "finished_at": _iso(run.finished_at),
        "duration_seconds": run.duration_seconds,
        "peak_memory_bytes": run.peak_memory_bytes,
        "links": {"self": f"/training-runs/{run.pk}"},
    }
    if detail:
        data["logs"] = run.logs
        data["version"] = version_as_dict(version, history=history, with_run=False) if version else None
    return data


def version_as_dict(version, *, history: list[dict] | None = None, with_run: bool = True) -> dict:
    """A model version; `with_run` nests a summary of its training run (no logs, no label ids)."""
    data = {
        "version": version.version,
        "predictor": version.predictor.slug,
        "stage": version.stage,
        "stage_reason": version.stage_reason,
        "stage_history": history if history is not None else stage_histories([version.pk]).get(version.pk, []),
        "metrics": version.metrics,
        "gates": version.gates,
        "gates_passed": version.gates_passed,
        "serving_format": version.serving_format,
        "training_run": version.run_id,
        "artifact_sha256": version.artifact_sha256,
        "onnx_sha256": version.onnx_sha256 or None,
        "schema_version": version.schema_version,
        "created_at": _iso(version.created_at),
        "promoted_at": _iso(version.promoted_at),
        "links": {
            "training_run": f"/training-runs/{version.run_id}",
            "promote": f"/predictors/{version.predictor.slug}/models/{version.version}/promote",
        },
    }
    if with_run:
        run = run_as_dict(version.run, version=version)
        for duplicate in ("predictor", "model_version", "gates", "gates_passed"):
            run.pop(duplicate)
        data["run"] = run
    return data
