"""How review objects look to the people who read them: input rows for the reviewer's page
and the appeal page, and review tasks on the wire."""
from __future__ import annotations

from dataclasses import dataclass

from gateway.admin_readonly import EMPTY

from .models import Appeal, ReviewTask, TaskKind


@dataclass(frozen=True)
class InputRow:
    name: str
    value: str
    description: str = ""
    missing: bool = False
    is_text: bool = False

    @property
    def label(self) -> str:
        """The field's name in words ("years_trading" -> "Years trading")."""
        return self.name.replace("_", " ").strip().capitalize()


def value_display(spec: dict, value) -> str:
    """One value as a person reads it: numbers with their unit, yes/no, text whole."""
    if value is None:
        return EMPTY
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        text = f"{value:,}"
        unit = spec.get("unit")
        return f"{text} {unit}" if unit else text
    return str(value)


def input_rows(schema: dict, data: dict) -> list[InputRow]:
    """The input as (field, value) rows in schema order; fields the schema declares but the
    input lacks show as "—"; fields of an older schema version still show, after the rest."""
    rows = [
        InputRow(
            name=name,
            value=value_display(spec, data.get(name)),
            description=spec.get("description", ""),
            missing=data.get(name) is None,
            is_text=spec.get("type") == "text",
        )
        for name, spec in schema.items()
    ]
    rows += [InputRow(name=name, value=value_display({}, value), description="not in the current schema")
             for name, value in data.items() if name not in schema]
    return rows


def _iso(value):
    return value.isoformat().replace("+00:00", "Z") if value else None


def earlier_decisions(task: ReviewTask) -> list:
    """The decisions a reviewer of `task` should see from before it: the disputed task's
    for an adjudication (that is what it settles), the appealed task's for an appeal.
    Nothing for the other kinds: a consensus reviewer must not anchor on the others."""
    if task.kind not in (TaskKind.ADJUDICATION, TaskKind.APPEAL) or not task.origin_id:
        return []
    return list(task.origin.decisions.select_related("reviewer").order_by("created_at"))


def _decision_as_dict(decision) -> dict:
    return {"reviewer": decision.reviewer.get_username(), "output": decision.output, "note": decision.note,
            "created_at": _iso(decision.created_at)}


def _appeal_for_reviewer(task: ReviewTask) -> dict | None:
    if task.kind != TaskKind.APPEAL:
        return None
    appeal = Appeal.objects.filter(task=task).first()
    if appeal is None:
        return None
    return {
        "reason": appeal.reason,
        "requested_output": appeal.requested_output,
        "original_output": appeal.original_output,
        "original_source": appeal.original_source or None,
        "original_model_version": appeal.original_model_version,
        "created_at": _iso(appeal.created_at),
    }


def task_suggestion(task: ReviewTask) -> dict | None:
    """What a machine says about the task's input, for the reviewer to weigh: the model's
    answer stored on the task when it was not confident enough to stand (low-confidence
    tasks), else the rule's or model's answer the prediction carries (QA samples,
    provisional answers). None when no machine has answered.

    `explanation` is the model's per-field contributions ([{"feature", "contribution"}],
    strongest first, as on /predict): a low-confidence suggestion gets it from a Celery task
    sent when the task is queued (models_registry.explain), so the key appears a moment
    after the task; a model's answer carries the one its client asked for (else null)."""
    if task.suggestion:
        return {"source": "model", **task.suggestion}
    prediction = task.prediction
    if prediction.output is not None and prediction.source in ("model", "rule"):
        return {
            "output": prediction.output,
            "source": prediction.source,
            "confidence": prediction.confidence,
            "scores": prediction.scores,
            "model_version": prediction.model_version,
            "explanation": prediction.explanation if prediction.source == "model" else None,
        }
    return None


def task_as_dict(task: ReviewTask) -> dict:
    prediction = task.prediction
    suggestion = task_suggestion(task)
    return {
        "id": task.pk,
        "kind": task.kind,
        "priority": task.priority,
        "reason": task.reason,
        "status": task.status,
        "predictor": task.predictor.slug,
        "prediction": str(prediction.id),
        "input": prediction.input,
        "input_schema": task.predictor.schema,
        "output_spec": task.predictor.output_spec,
        "suggestion": suggestion,
        "created_at": _iso(task.created_at),
        "lease_expires_at": _iso(task.lease_expires_at),
        # Appeal tasks: what the person said; adjudications and appeals: what came before.
        "appeal": _appeal_for_reviewer(task),
        "earlier_decisions": [_decision_as_dict(d) for d in earlier_decisions(task)],
    }


# ---------------------------------------------------------------------------------------
# Appeals, as the person who appealed sees them (no ids of anything but their appeal)
# ---------------------------------------------------------------------------------------

def appeal_as_dict(appeal, *, status_url: str) -> dict:
    decided = appeal.status != "open"
    return {
        "id": appeal.pk,
        "status": appeal.status,
        "reason": appeal.reason,
        "requested_output": appeal.requested_output,
        "created_at": _iso(appeal.created_at),
        "outcome": appeal.outcome_output if decided else None,
        "note": (appeal.outcome_note or None) if decided else None,
        "decided_at": _iso(appeal.decided_at),
        "status_url": status_url,
    }


def appeal_status_as_dict(prediction, appeal) -> dict:
    """GET /appeal/<token>/status: the latest appeal's state ("none" before any), its
    outcome and the reviewer's note once decided, and where the prediction stands now."""
    decided = appeal is not None and appeal.status != "open"
    return {
        "status": appeal.status if appeal is not None else "none",
        "outcome": appeal.outcome_output if decided else None,
        "note": (appeal.outcome_note or None) if decided else None,
        "decided_at": _iso(appeal.decided_at) if decided else None,
        "created_at": _iso(appeal.created_at) if appeal is not None else None,
        "prediction": {"status": prediction.status, "output": prediction.output},
    }
