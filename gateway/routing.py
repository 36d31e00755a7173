"""The one function that decides who answers a request: `route_decide`.

It is pure decision logic: the caller hands it the routing flag, the request key and the
answerers (the rule stub, the champion model, the depth of the human queue) as callables,
and it returns a `Decision`: the route to record on the prediction, the answer (None: the
human queue), what kind of review task to queue, whether the answer is also sampled for QA,
and which live model versions run in shadow. Answerers are only called when the flag needs
them, so a plain `mode` route costs nothing beyond the answer itself.

Reasons recorded in `route["reason"]`:
- `mode`: the flag's mode chose the answerer and it answered (or the request was queued).
- `canary`: `mode` is human or rule, the request key falls in the canary share and the
  champion answered (`route["canary"]` is true).
- `no_model`, `model_error`, `low_confidence`: the model could not take the request (no
  champion, it raised, or its confidence is below `confidence_threshold`) and the fallback
  took over. `fallback: rule` answers with the rules (if no rule matches, humans answer);
  `fallback: human` queues it, as a `low_confidence` task showing the model's suggestion
  when there is one; `fallback: none` lets a low-confidence answer stand (recorded as such)
  while errors and a missing champion still go to humans, so no accepted request is dropped.
  A canary request the model cannot take goes back to where the mode sends it (it only
  left that route to try the model); the reason says why and `canary` stays true.
- `rule_error`: rule mode, but no rule matched; humans answer.
- `queue_full`: the mode sends the request to humans, but more than `max_queue_depth` human
  tasks are open or claimed. It goes to the fallback: `rule` tries the rules, then the
  champion; `human` (the queue that is full) lets the champion stand in, then the rules;
  `none` means nobody else answers. A model answer below the threshold is not taken here
  either. Whatever cannot be answered is still queued, never dropped.
- `sla_expired` is written later by gateway.sla.

Extra keys: `canary: true`; `qa_sample: true` when the answer also went to review; `shadow:
[versions]` for the model versions run in shadow."""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .models import RoutingFallback, RoutingMode, RoutingPolicy

logger = logging.getLogger(__name__)

BUCKETS = 10_000  # percent * 100: a share is exact to 0.01 %


def bucket(*parts: str) -> int:
    """A stable number in 0..9999 from the parts (the same everywhere, every time)."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def in_share(percent: float, *parts: str) -> bool:
    return percent > 0 and bucket(*parts) < round(percent * 100)


class NoModel(Exception):
    """There is no champion model to ask."""


@dataclass(frozen=True)
class Answer:
    output: object
    source: str  # rule | model
    confidence: float | None = None
    scores: dict | None = None
    model_version: int | None = None

    def as_fields(self) -> dict:
        """The prediction's fields for this answer."""
        fields = {"output": self.output, "source": self.source}
        if self.source == RoutingMode.MODEL:
            fields.update(confidence=self.confidence, scores=self.scores, model_version=self.model_version)
        return fields

    def as_suggestion(self) -> dict:
        """A review task's `suggestion`: what the model said, for the reviewer to weigh."""
        return {"output": self.output, "confidence": self.confidence, "scores": self.scores,
                "model_version": self.model_version}


@dataclass(frozen=True)
class Route:
    target: str  # who answers: human | rule | model
    mode: str  # the policy's mode at the time
    reason: str  # why (see the module docstring)
    policy_version: int
    extra: tuple = ()  # (key, value) pairs recorded beside the three fixed keys

    def as_dict(self) -> dict:
        return {"mode": self.mode, "reason": self.reason, "policy_version": self.policy_version, **dict(self.extra)}

    def diverted(self, target: str, reason: str) -> Route:
        return Route(target=target, mode=self.mode, reason=reason, policy_version=self.policy_version, extra=self.extra)

    def marked(self, **extra) -> Route:
        merged = {**dict(self.extra), **extra}
        return Route(self.target, self.mode, self.reason, self.policy_version, tuple(merged.items()))


@dataclass(frozen=True)
class Decision:
    route: Route
    answer: Answer | None  # None: the human queue answers
    task_kind: str | None = None  # routed | low_confidence, when queued
    suggestion: Answer | None = None  # a model answer that was not taken (below threshold)
    qa_sample: bool = False
    shadow: tuple = field(default=())  # live versions to run in shadow


# An attempt at the model: (reason it failed or None, the answer if there was one).
_Attempt = tuple[str | None, Answer | None]


def _model_attempt(ask_model: Callable[[], Answer], threshold: float | None, slug: str) -> _Attempt:
    try:
        answer = ask_model()
    except NoModel:
        return "no_model", None
    except Exception:  # a broken model must not lose the request
        logger.exception("the champion of %s failed; routing to the fallback", slug)
        return "model_error", None
    if threshold is not None and answer.confidence is not None and answer.confidence < threshold:
        return "low_confidence", answer
    return None, answer


def _queued(route: Route, suggestion: Answer | None) -> Decision:
    kind = "low_confidence" if suggestion is not None else "routed"
    return Decision(route=route.diverted(RoutingMode.HUMAN, route.reason), answer=None, task_kind=kind, suggestion=suggestion)


def route_decide(
    *,
    policy: RoutingPolicy,
    slug: str,
    request_key: str,
    prediction_key: str,
    has_champion: bool,
    ask_rule: Callable[[], Answer | None],
    ask_model: Callable[[], Answer],
    queue_depth: Callable[[], int],
    live_versions: Sequence = (),
) -> Decision:
    """Decide who answers one request, and get the answer where a machine gives it.

    `request_key` picks the canary bucket (stable per key); `prediction_key` (the new
    prediction's id) picks the QA sample, so a client reusing one routing key is still
    sampled fairly. `ask_rule` returns None when no rule matches; `ask_model` raises NoModel
    without a champion; `queue_depth` is called only when `max_queue_depth` is set and the
    request would be queued. `live_versions` (objects with `.version`) are the champion and
    challenger; with `shadow` on, those that did not answer run in shadow."""
    threshold = policy.confidence_threshold
    route = Route(target=policy.mode, mode=policy.mode, reason="mode", policy_version=policy.version)
    suggestion: Answer | None = None
    decision: Decision | None = None
    model_failed = False  # the canary already asked the model, and it could not take the request

    if policy.mode != RoutingMode.MODEL and has_champion and in_share(policy.canary_percent, "canary", slug, request_key):
        route = route.marked(canary=True)
        failure, answer = _model_attempt(ask_model, threshold, slug)
        if failure is None:
            decision = Decision(route=route.diverted(RoutingMode.MODEL, "canary"), answer=answer)
        else:  # back to where the mode sends it, saying why
            route = route.diverted(policy.mode, failure)
            suggestion = answer
            model_failed = True

    if decision is None and route.target == RoutingMode.RULE:
        answer = ask_rule()
        if answer is not None:
            decision = Decision(route=route, answer=answer)
        else:
            decision = _queued(route.diverted(RoutingMode.HUMAN, "rule_error"), suggestion)

    if decision is None and route.target == RoutingMode.MODEL:
        failure, answer = _model_attempt(ask_model, threshold, slug)
        if failure is None:
            decision = Decision(route=route, answer=answer)
        else:
            decision = _fallback(policy, route.diverted(RoutingMode.MODEL, failure), answer, ask_rule)

    if decision is None:  # the human queue, unless it is over its cap
        if policy.max_queue_depth is not None and queue_depth() > policy.max_queue_depth:
            decision = _overflow(policy, route.diverted(RoutingMode.HUMAN, "queue_full"), suggestion, slug,
                                 has_champion and not model_failed, ask_rule, ask_model)
        else:
            decision = _queued(route, suggestion)

    return _extras(policy, decision, prediction_key, live_versions)


def _fallback(policy: RoutingPolicy, route: Route, low: Answer | None, ask_rule) -> Decision:
    """The model could not take the request (route.reason says why): the fallback's turn."""
    if policy.fallback == RoutingFallback.RULE:
        answer = ask_rule()
        if answer is not None:
            return Decision(route=route.diverted(RoutingMode.RULE, route.reason), answer=answer)
    elif policy.fallback == RoutingFallback.NONE and route.reason == "low_confidence" and low is not None:
        return Decision(route=route, answer=low)  # it stands; the reason records its doubt
    return _queued(route, low)


def _overflow(policy, route: Route, suggestion, slug, has_champion, ask_rule, ask_model) -> Decision:
    if policy.fallback == RoutingFallback.NONE:
        return _queued(route, suggestion)
    order = ("rule", "model") if policy.fallback == RoutingFallback.RULE else ("model", "rule")
    for who in order:
        if who == "rule":
            answer = ask_rule()
            if answer is not None:
                return Decision(route=route.diverted(RoutingMode.RULE, "queue_full"), answer=answer)
        elif has_champion:
            failure, answer = _model_attempt(ask_model, policy.confidence_threshold, slug)
            if failure is None:
                return Decision(route=route.diverted(RoutingMode.MODEL, "queue_full"), answer=answer)
            suggestion = answer or suggestion
    return _queued(route, suggestion)


def _extras(policy: RoutingPolicy, decision: Decision, prediction_key: str, live_versions: Sequence) -> Decision:
    route = decision.route
    qa = decision.answer is not None and in_share(policy.qa_sample_percent, "qa", prediction_key)
    if qa:
        route = route.marked(qa_sample=True)
    shadow: tuple = ()
    if policy.shadow and live_versions:
        answered_by = decision.answer.model_version if decision.answer and decision.answer.source == RoutingMode.MODEL else None
        shadow = tuple(v for v in live_versions if v.version != answered_by)
        if shadow:
            route = route.marked(shadow=[v.version for v in shadow])
    if route is decision.route:
        return decision
    return Decision(route=route, answer=decision.answer, task_kind=decision.task_kind, suggestion=decision.suggestion,
                    qa_sample=qa, shadow=shadow)


__all__ = ["Answer", "Decision", "NoModel", "Route", "RoutingMode", "bucket", "in_share", "route_decide"]
