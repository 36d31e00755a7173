"""End-user appeals: filing one through a prediction's appeal link, and settling it when a
reviewer other than the original decider has looked again."""
from __future__ import annotations

from datetime import timedelta
from typing import NamedTuple

from django.db import IntegrityError, transaction
from django.db.models import Count, Q
from django.utils import timezone

from gateway.answers import prediction_answer
from gateway.appeal_tokens import appeal_token_sha256
from gateway.models import AnswerSource, Prediction, PredictionStatus, Predictor
from gateway.schema import output_error

from .models import Appeal, AppealStatus, Decision, LabelSource, ReviewTask, TaskKind

REASON_MAX_LENGTH = 5000


class AppealRefused(Exception):
    """The appeal cannot be filed; `field` names the input at fault ("" for the whole)."""

    def __init__(self, message: str, *, field: str = "", status: int = 422):
        self.message = message
        self.field = field
        self.status = status
        super().__init__(message)


def prediction_for_token(token: str) -> Prediction | None:
    if not token or len(token) > 100:
        return None
    return (
        Prediction.objects.select_related("predictor")
        .filter(appeal_token_sha256=appeal_token_sha256(token))
        .first()
    )


def appeal_deadline(prediction: Prediction):
    if prediction.answered_at is None:
        return None
    return prediction.answered_at + timedelta(days=prediction.predictor.appeal_window_days)


class Refusal(NamedTuple):
    code: str  # expired, unanswered, provisional, open, closed
    message: str


def appeal_refusal(prediction: Prediction, *, now=None) -> Refusal | None:
    """Why this prediction's decision cannot be appealed now (None when it can). The one
    rule behind both the appeal page (which shows no form) and appeal_file (which refuses).
    A provisional answer is not appealable: a reviewer is still deciding, and their answer
    would otherwise land on top of the appeal's outcome."""
    now = now or timezone.now()
    if prediction.status == PredictionStatus.EXPIRED:
        return Refusal("expired", "the prediction could not be answered in time, so there is no decision to appeal")
    if prediction.status not in (PredictionStatus.ANSWERED, PredictionStatus.REVISED):
        return Refusal("unanswered", "there is no decision to appeal yet")
    if prediction.provisional:
        return Refusal("provisional", "this answer is provisional: a reviewer is still deciding; appeal once they have")
    if Appeal.objects.filter(prediction=prediction, status=AppealStatus.OPEN).exists():
        return Refusal("open", "an appeal of this decision is already open")
    deadline = appeal_deadline(prediction)
    if deadline is not None and now > deadline:
        return Refusal("closed", f"the appeal window closed on {deadline:%Y-%m-%d}")
    return None


def appeal_settled_after(prediction: Prediction, moment) -> bool:
    """Has an appeal of this prediction been decided since `moment`? An appeal outcome is
    the last word: settling an older task (a late QA sample or adjudication) must not
    override it."""
    return Appeal.objects.filter(prediction=prediction, decided_at__gt=moment).exists()


def appeal_file(*, prediction: Prediction, reason, requested_output=None, now=None) -> Appeal:
    """File an appeal. Refused (AppealRefused) when the prediction has no answer yet, the
    window has closed, an appeal is already open, or the input is invalid. Atomic: the
    appeal and its review task exist together. The task goes to a reviewer other than the
    one whose decision is appealed."""
    now = now or timezone.now()
    if reason is not None and not isinstance(reason, str):
        raise AppealRefused("must be text: why you think the decision is wrong", field="reason")
    if not reason or not reason.strip():
        raise AppealRefused("please say why you think the decision is wrong", field="reason")
    if len(reason) > REASON_MAX_LENGTH:
        raise AppealRefused(f"must be at most {REASON_MAX_LENGTH} characters", field="reason")
    if requested_output is not None and requested_output != "":
        problem = output_error(prediction.predictor.output_spec, requested_output)
        if problem:
            raise AppealRefused(problem, field="requested_output")
    else:
        requested_output = None
    refusal = appeal_refusal(prediction, now=now)
    if refusal:
        raise AppealRefused(refusal.message, status=409)

    last_decision = (
        Decision.objects.filter(task__prediction=prediction).select_related("task").order_by("-created_at").first()
    )
    try:
        with transaction.atomic():
            appeal = Appeal.objects.create(
                prediction=prediction,
                reason=reason.strip(),
                requested_output=requested_output,
                original_output=prediction.output,
                original_source=prediction.source,
                original_model_version=prediction.model_version,
            )
            from .services import review_task_create

            appeal.task = review_task_create(
                prediction=prediction,
                kind=TaskKind.APPEAL,
                reason=f"appeal: {reason.strip()}",
                origin=last_decision.task if last_decision else None,
                excluded_reviewer=last_decision.reviewer if last_decision else None,
            )
            appeal.save(update_fields=["task"])
    except IntegrityError:
        raise AppealRefused("an appeal of this decision is already open", status=409) from None
    return appeal


def appeal_resolve(*, task: ReviewTask, prediction: Prediction, output, reviewer, note: str) -> Appeal:
    """Settle the appeal behind `task` (called by review_task_decide, inside its
    transaction). The same answer upholds it; another overturns it: the prediction is
    revised (old answer kept in history, `prediction.revised` webhook) and the appeal's
    label supersedes the earlier ones. Either way the reviewer's note is what the person
    who appealed reads."""
    from .services import _same_answer, label_record

    appeal = Appeal.objects.select_for_update().get(task=task)
    overturned = not _same_answer(output, appeal.original_output)
    appeal.status = AppealStatus.OVERTURNED if overturned else AppealStatus.UPHELD
    appeal.outcome_output = output
    appeal.outcome_note = note
    appeal.decided_by = reviewer
    appeal.decided_at = timezone.now()
    appeal._history_user = reviewer
    appeal.save()
    label_record(
        prediction=prediction, target=output, source=LabelSource.APPEAL, created_by=reviewer, task=task, supersede=True
    )
    # Compared with the current answer, not the original: an older task may have changed
    # it while the appeal was open, and the appeal's outcome is what must stand.
    if not _same_answer(prediction.output, output) or prediction.provisional:
        prediction._history_user = reviewer
        prediction_answer(prediction=prediction, output=output, source=AnswerSource.HUMAN)
    return appeal


def appeal_rates(*, predictor: Predictor) -> list[dict]:
    """Appeal and overturn rates of a predictor's answers, by the source of the answer
    appealed against and the model version that gave it."""
    answered = (
        Prediction.objects.filter(predictor=predictor, answered_at__isnull=False)
        .values("source", "model_version")
        .annotate(answers=Count("id"))
    )
    appeals = (
        Appeal.objects.filter(prediction__predictor=predictor)
        .values("original_source", "original_model_version")
        .annotate(
            appeals=Count("id"),
            overturned=Count("id", filter=Q(status=AppealStatus.OVERTURNED)),
            open=Count("id", filter=Q(status=AppealStatus.OPEN)),
        )
    )
    by_key = {(a["original_source"], a["original_model_version"]): a for a in appeals}
    rows = []
    for row in answered:
        # An answer's source may have changed since (revised); appeals count against the
        # source they were filed against, answers against their current source.
        a = by_key.pop((row["source"], row["model_version"]), {})
        rows.append(_rate_row(row["source"], row["model_version"], row["answers"], a))
    for (source, version), a in by_key.items():
        rows.append(_rate_row(source, version, 0, a))
    return sorted(rows, key=lambda r: (r["source"] or "", r["model_version"] or 0))


def _rate_row(source, model_version, answers: int, a: dict) -> dict:
    appeals = a.get("appeals", 0)
    overturned = a.get("overturned", 0)
    decided = appeals - a.get("open", 0)
    return {
        "source": source,
        "model_version": model_version,
        "answers": answers,
        "appeals": appeals,
        "overturned": overturned,
        "appeal_rate": appeals / answers if answers else None,
        "overturn_rate": overturned / decided if decided else None,
    }
