"""The reviewer's workplace in the admin: the queue page (counts, "Claim next", my tasks) and
the decision page (the input, the suggestion, the answer form, release and extend).

Thin views over review.services and review.selectors: every state change is a service call
made as the logged-in reviewer, and every refusal (lease lost, task not theirs) comes from
the service, so the admin and the HTTP API behave the same. Mixed into ReviewTaskAdmin,
which supplies the admin site, the URLs' names and the page chrome."""
from __future__ import annotations

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.dateformat import format as date_format
from django.views.decorators.http import require_POST

from gateway.admin_readonly import EMPTY
from gateway.models import AnswerSource

from .models import Appeal, ReviewTask, TaskKind, TaskStatus
from .presenters import earlier_decisions, input_rows
from .selectors import queue_counts, task_listed_for, tasks_held_by
from .services import (
    InvalidDecision,
    TaskConflict,
    review_task_claim_next,
    review_task_decide,
    review_task_extend,
    review_task_release,
)

DECIDE_PERMISSION = "review.decide_reviewtask"
NOTE_MAX_LENGTH = 5000  # as the HTTP API


def _when(moment) -> str:
    return date_format(timezone.localtime(moment), "Y-m-d H:i:s")


# ---------------------------------------------------------------------------------------
# What the decision page shows
# ---------------------------------------------------------------------------------------

def answer_display(prediction) -> dict | None:
    """The prediction's current answer: a model's or rule's suggestion, or (for appeals) the
    answer under review. None while nobody has answered."""
    if prediction.output is None:
        return None
    scores = sorted((prediction.scores or {}).items(), key=lambda item: -item[1]) if isinstance(prediction.scores, dict) else []
    return {
        "is_suggestion": prediction.source in (AnswerSource.MODEL, AnswerSource.RULE),
        "output": prediction.output,
        "source": prediction.source,
        "provisional": prediction.provisional,
        "confidence": prediction.confidence,
        "scores": scores,
        "model_version": prediction.model_version,
    }


SOURCE_WORDS = {AnswerSource.HUMAN: "a reviewer", AnswerSource.RULE: "the rule stub", AnswerSource.MODEL: "the model"}


def source_display(source: str, model_version=None) -> str:
    words = SOURCE_WORDS.get(source, source or EMPTY)
    return f"{words} (version {model_version})" if source == AnswerSource.MODEL and model_version else words


def explanation_rows(explanation) -> list[dict]:
    """A model's explanation (`[{"feature", "contribution"}, …]`, as API.md shapes it) as
    rows, strongest first. Empty when there is none or it has another shape."""
    if not isinstance(explanation, list):
        return []
    rows = [
        {"feature": str(item["feature"]), "contribution": item["contribution"]}
        for item in explanation
        if isinstance(item, dict) and "feature" in item and isinstance(item.get("contribution"), (int, float))
    ]
    return sorted(rows, key=lambda row: -abs(row["contribution"]))


def decisions_shown(task: ReviewTask, reviewer) -> tuple[list, list]:
    """(this task's decisions, the earlier task's decisions) that `reviewer` may see.

    While a consensus task is still open, other reviewers' answers stay hidden so that
    nobody anchors on them; a reviewer sees only their own. An adjudication shows the
    disputed task's decisions (that is what it settles), and an appeal those of the
    decision appealed against."""
    own_task = list(task.decisions.select_related("reviewer").order_by("created_at"))
    if task.status not in (TaskStatus.DECIDED, TaskStatus.CANCELLED):
        own_task = [d for d in own_task if d.reviewer_id == reviewer.pk]
    return own_task, earlier_decisions(task)


class DecisionForm(forms.Form):
    """The answer field fits the predictor's output spec: one radio button per label, or a
    number input with the spec's bounds. The service checks the answer again. For an
    appeal the note is required: it is what the person who appealed reads."""

    def __init__(self, *args, output_spec: dict, note_for_appellant: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        if output_spec["type"] == "label":
            self.fields["output"] = forms.ChoiceField(
                label="Answer", choices=[(label, label) for label in output_spec["labels"]], widget=forms.RadioSelect
            )
        else:
            bounds = [f"{word} {output_spec[key]}" for word, key in (("at least", "minimum"), ("at most", "maximum")) if key in output_spec]
            self.fields["output"] = forms.FloatField(
                label="Answer",
                min_value=output_spec.get("minimum"),
                max_value=output_spec.get("maximum"),
                help_text=", ".join(bounds),
                widget=forms.NumberInput(attrs={"step": "any", "autofocus": True}),
            )
        self.fields["note"] = forms.CharField(
            label="Note to the person who appealed" if note_for_appellant else "Note (optional)",
            required=note_for_appellant,
            max_length=NOTE_MAX_LENGTH,
            help_text="They will read it on their appeal page: say why, in plain words." if note_for_appellant else "",
            error_messages={"required": "Write a note for the person who appealed."},
            widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        )


# ---------------------------------------------------------------------------------------
# Views
# ---------------------------------------------------------------------------------------

class ReviewQueueAdminMixin:
    """Adds /queue/, /queue/claim/ and /<id>/decide|release|extend/ to a ReviewTask admin."""

    def get_urls(self):
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        view = self.admin_site.admin_view  # staff login, never cached, CSRF protected
        queue_urls = [
            path("queue/", view(self.queue_view), name=f"{prefix}_queue"),
            path("queue/claim/", view(require_POST(self.claim_view)), name=f"{prefix}_claim"),
            path("<int:task_id>/decide/", view(self.decide_view), name=f"{prefix}_decide"),
            path("<int:task_id>/release/", view(require_POST(self.release_view)), name=f"{prefix}_release"),
            path("<int:task_id>/extend/", view(require_POST(self.extend_view)), name=f"{prefix}_extend"),
        ]
        # Before the model admin's own URLs, whose "<object_id>/" would swallow "queue/".
        return queue_urls + super().get_urls()

    # --- helpers --------------------------------------------------------------------------

    def _require_reviewer(self, request):
        if not request.user.has_perm(DECIDE_PERMISSION):
            raise PermissionDenied("The review queue is for reviewers: your account may not claim or decide tasks.")

    def _url(self, name: str, *args) -> str:
        return reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_{name}", args=args,
                       current_app=self.admin_site.name)

    def _redirect_to_queue(self):
        return HttpResponseRedirect(self._url("queue"))

    def _next_task(self, reviewer, now=None) -> ReviewTask | None:
        """The reviewer's next task: one they already hold (soonest lease end first), so no
        lease sits idle, else a newly claimed one. None when there is nothing to review."""
        held = tasks_held_by(reviewer=reviewer, now=now).first()
        return held or review_task_claim_next(reviewer=reviewer, now=now)

    def _go_to_next(self, request):
        task = self._next_task(request.user)
        if task is None:
            messages.info(request, "Nothing to review: the queue is empty.")
            return self._redirect_to_queue()
        return HttpResponseRedirect(self._url("decide", task.pk))

    def _render(self, request, template: str, title: str, context: dict):
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": title,
            "queue_url": self._url("queue"),
            **context,
        }
        return TemplateResponse(request, template, context)

    # --- pages ----------------------------------------------------------------------------

    def queue_view(self, request):
        self._require_reviewer(request)
        now = timezone.now()
        counts = [
            {**row, "label": TaskKind(row["kind"]).label if row["kind"] in TaskKind.values else row["kind"]}
            for row in queue_counts(now=now, reviewer=request.user)
        ]
        held = [
            {"task": task, "url": self._url("decide", task.pk)}
            for task in tasks_held_by(reviewer=request.user, now=now)
        ]
        return self._render(request, "admin/review/reviewtask/queue.html", "Review queue", {
            "counts": counts,
            "total": sum(row["count"] for row in counts),
            "held": held,
            "claim_url": self._url("claim"),
        })

    def claim_view(self, request):
        self._require_reviewer(request)
        return self._go_to_next(request)

    def decide_view(self, request, task_id: int):
        self._require_reviewer(request)
        task = get_object_or_404(
            ReviewTask.objects.select_related("prediction", "predictor", "claimed_by", "origin"), pk=task_id
        )
        output_spec = task.predictor.output_spec
        appeal = Appeal.objects.filter(task=task).first() if task.kind == TaskKind.APPEAL else None
        form = DecisionForm(
            request.POST if request.method == "POST" else None,
            output_spec=output_spec,
            note_for_appellant=appeal is not None,
        )
        if request.method == "POST":
            if form.is_valid():
                try:
                    decision = review_task_decide(
                        task_id=task.pk, reviewer=request.user,
                        output=form.cleaned_data["output"], note=form.cleaned_data["note"],
                    )
                except TaskConflict as exc:
                    messages.error(request, f"Task #{task.pk} was not decided: {exc}. Nothing was saved.")
                    return self._redirect_to_queue()
                except InvalidDecision as exc:
                    form.add_error("output", exc.message)
                else:
                    messages.success(request, f"Task #{task.pk}: answered {decision.output}.")
                    return self._go_to_next(request)
        elif request.method not in ("GET", "HEAD"):
            return HttpResponseRedirect(request.path)

        now = timezone.now()
        decisions, earlier = decisions_shown(task, request.user)
        answer = answer_display(task.prediction)
        if appeal is not None and answer is not None and not answer["is_suggestion"]:
            answer = None  # a person's answer: the appeal block shows it, with who gave it
        holds = (
            task.status == TaskStatus.CLAIMED
            and task.claimed_by_id == request.user.pk
            and task.lease_expires_at is not None
            and task.lease_expires_at >= now
        )
        return self._render(request, "admin/review/reviewtask/decide.html", f"Review task #{task.pk}", {
            "task": task,
            "prediction": task.prediction,
            "predictor": task.predictor,
            "rows": input_rows(task.predictor.schema, task.prediction.input or {}),
            "answer": answer,
            "holds": holds,
            "state": self._state(task, request.user, now),
            "form": form if holds else None,
            "is_label": output_spec["type"] == "label",
            "output_unit": output_spec.get("unit", ""),
            "decisions": decisions,
            "earlier_decisions": earlier,
            "appeal": appeal,
            "appeal_source": source_display(appeal.original_source, appeal.original_model_version) if appeal else "",
            # No prediction stores an explanation yet; the slot shows one as soon as it does.
            "explanation": explanation_rows(getattr(task.prediction, "explanation", None)),
            "schema_changed": task.prediction.schema_version != task.predictor.schema_version,
            "decide_url": self._url("decide", task.pk),
            "release_url": self._url("release", task.pk),
            "extend_url": self._url("extend", task.pk),
            # The task's admin page, when it is in this user's list (review/admin.py).
            "task_admin_url": self._url("change", task.pk) if task_listed_for(request.user, task) else "",
        })

    @staticmethod
    def _state(task: ReviewTask, user, now) -> str:
        """Why the form is (not) shown, in words."""
        if task.status == TaskStatus.DECIDED:
            return f"Decided at {_when(task.decided_at)}." if task.decided_at else "Decided."
        if task.status == TaskStatus.CANCELLED:
            return "Cancelled: nothing to decide."
        lease_live = task.lease_expires_at is not None and task.lease_expires_at >= now
        if task.status == TaskStatus.CLAIMED and lease_live:
            if task.claimed_by_id == user.pk:
                return "You hold this task."
            return f"Held by {task.claimed_by} until {_when(task.lease_expires_at)}."
        if task.status == TaskStatus.CLAIMED and task.claimed_by_id == user.pk:
            return "Your lease on this task expired; claim again from the queue."
        return "Waiting in the queue: use “Claim next” on the queue page."

    def release_view(self, request, task_id: int):
        self._require_reviewer(request)
        try:
            review_task_release(task_id=task_id, reviewer=request.user)
        except ReviewTask.DoesNotExist:
            raise Http404("No such task.") from None
        except TaskConflict as exc:
            messages.error(request, f"Task #{task_id}: {exc}.")
        else:
            messages.info(request, f"Task #{task_id} went back to the queue.")
        return self._redirect_to_queue()

    def extend_view(self, request, task_id: int):
        self._require_reviewer(request)
        try:
            task = review_task_extend(task_id=task_id, reviewer=request.user)
        except ReviewTask.DoesNotExist:
            raise Http404("No such task.") from None
        except TaskConflict as exc:
            messages.error(request, f"Task #{task_id}: {exc}.")
            return self._redirect_to_queue()
        messages.success(request, f"Lease extended until {_when(task.lease_expires_at)}.")
        return HttpResponseRedirect(self._url("decide", task_id))
