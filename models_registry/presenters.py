from __future__ import annotations


def _iso(value):
    return value.isoformat().replace("+00:00", "Z") if value else None


def run_as_dict(run) -> dict:
    version = getattr(run, "model_version", None) if run.status == "succeeded" else None
    dataset = dict(run.dataset or {})
    dataset.pop("label_ids", None)  # can be long; the hash identifies the set
    return {
        "id": run.pk,
        "predictor": run.predictor.slug,
        "status": run.status,
        "trigger": run.trigger,
        "estimator": run.estimator or None,
        "params": run.params,
        "metrics": run.metrics,
        "dataset": dataset,
        "environment": run.environment,
        "error": run.error or None,
        "model_version": version.version if version else None,
        "created_at": _iso(run.created_at),
        "started_at": _iso(run.started_at),
        "finished_at": _iso(run.finished_at),
        "duration_seconds": run.duration_seconds,
        "links": {"self": f"/training-runs/{run.pk}"},
    }


def version_as_dict(version) -> dict:
    return {
        "version": version.version,
        "predictor": version.predictor.slug,
        "stage": version.stage,
        "stage_reason": version.stage_reason,
        "metrics": version.metrics,
        "training_run": version.run_id,
        "artifact_sha256": version.artifact_sha256,
        "schema_version": version.schema_version,
        "created_at": _iso(version.created_at),
        "promoted_at": _iso(version.promoted_at),
    }
