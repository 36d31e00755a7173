"""Gateway writes: predictions (the /predict path), routing changes, API clients, tokens."""
from __future__ import annotations

import hashlib
import json
import logging
import uuid
from contextlib import nullcontext
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from models_registry import serving
from models_registry.explain import answer_explanation, explanations_follow_up
from review.models import ReviewTask, TaskKind, TaskStatus
from review.services import review_task_build

from . import serving_cache
from .answers import webhook_enqueue
from .appeal_tokens import appeal_token, appeal_token_sha256
from .keys import key_generate
from .messaging import task_send_on_commit
from .models import (
    AnswerSource,
    ApiClient,
    ApiKey,
    Prediction,
    PredictionStatus,
    Predictor,
    RoutingPolicy,
    UserToken,
)
from .routing import Answer, NoModel, Route, route_decide
from .rows import rows_insert
from .rules import NoRuleMatched, rules_evaluate
from .schema import FieldError, routing_errors

logger = logging.getLogger(__name__)


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used before with a different request."""


class RoutingInvalid(Exception):
    """The routing change is refused; `errors` says why, field by field."""

    def __init__(self, field: str, message: str, errors: list | None = None):
        self.field = field
        self.message = message
        self.errors = errors or [FieldError(field, message)]
        super().__init__(message)


# What makes two requests "the same" for Idempotency-Key: the question asked (and the key
# that picks its route), not how long the client is willing to wait for the answer or
# whether it wants it explained. A field the body leaves out adds nothing, so adding
# `routing_key` changed no earlier request's fingerprint.
FINGERPRINT_FIELDS = ("input", "callback_url", "routing_key")


def request_fingerprint(*, predictor_slug: str, body: dict) -> str:
    asked = {k: body[k] for k in FINGERPRINT_FIELDS if k in body}
    canonical = json.dumps({"predictor": predictor_slug, "body": asked}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _replay(existing: Prediction, request_sha256: str) -> tuple[Prediction, bool]:
    if existing.request_sha256 != request_sha256:
        raise IdempotencyConflict("this Idempotency-Key was already used with a different request")
    return existing, False


def human_queue_depth(predictor_id: int, *, cap: int) -> int:
    """Open and claimed review tasks of a predictor, counted up to `cap` + 1 (enough to
    tell "over the cap"): one COUNT over a bounded subquery on the predictor's index, so
    it costs the same however deep the queue is."""
    queued = ReviewTask.objects.filter(predictor_id=predictor_id, status__in=(TaskStatus.OPEN, TaskStatus.CLAIMED))
    return queued.order_by()[: cap + 1].count()


def prediction_create(
    *,
    predictor: Predictor,
    policy: RoutingPolicy,
    client: ApiClient | None,
    clean_input: dict,
    callback_url: str = "",
    idempotency_key: str = "",
    request_sha256: str = "",
    routing_key: str = "",
    live_versions: tuple | None = None,
    explain: bool = False,
) -> tuple[Prediction, bool]:
    """Route one validated request and record it. Returns (prediction, created).

    `gateway.routing.route_decide` decides who answers. Rules and models answer at once;
    otherwise the prediction and its review task are written together (one statement on
    PostgreSQL, gateway.rows.rows_insert), and so is a QA-sample task. Shadow runs are sent
    to Celery once the rows are committed. A retry with the same Idempotency-Key and the
    same request returns the first prediction and creates nothing; with a different request
    it raises IdempotencyConflict.

    The canary bucket comes from the request key: `routing_key` when the client gives one
    (its way to keep, say, one customer on one route), else the Idempotency-Key (a retry
    takes the same route), else the new prediction's id. `live_versions` is (champion,
    challenger); by default the per-process serving cache's."""
    if idempotency_key:
        existing = Prediction.objects.filter(client=client, idempotency_key=idempotency_key).select_related("predictor").first()
        if existing is not None:
            return _replay(existing, request_sha256)

    if live_versions is None:
        live_versions = serving_cache.live_versions_for(predictor)
    champion, challenger = live_versions
    prediction_id = uuid.uuid4()

    def ask_rule() -> Answer | None:
        if not predictor.rules:
            return None
        try:
            output, _ = rules_evaluate(predictor.rules, clean_input)
        except NoRuleMatched:
            return None
        return Answer(output=output, source=AnswerSource.RULE)

    def ask_model() -> Answer:
        if champion is None:
            raise NoModel
        result = serving.model_answer(predictor=predictor, version=champion, clean_input=clean_input)
        return Answer(output=result.output, source=AnswerSource.MODEL, confidence=result.confidence,
                      scores=result.scores, model_version=result.version)

    decision = route_decide(
        policy=policy,
        slug=predictor.slug,
        request_key=routing_key or idempotency_key or str(prediction_id),
        prediction_key=str(prediction_id),
        has_champion=champion is not None,
        ask_rule=ask_rule,
        ask_model=ask_model,
        queue_depth=lambda: human_queue_depth(predictor.pk, cap=policy.max_queue_depth or 0),
        live_versions=tuple(v for v in (champion, challenger) if v is not None),
    )
    route, answer = decision.route, decision.answer
    explained = None
    if explain and answer is not None and answer.source == AnswerSource.MODEL:
        # Only when the client asks (`explain: true`): otherwise no explainer is ever loaded here.
        explained = answer_explanation(predictor=predictor, version=champion, clean_input=clean_input, output=answer.output)

    prediction = Prediction(
        id=prediction_id,
        appeal_token_sha256=appeal_token_sha256(appeal_token(prediction_id)),
        predictor=predictor,
        client=client,
        schema_version=predictor.schema_version,
        input=clean_input,
        route=route.as_dict(),
        callback_url=callback_url or "",
        idempotency_key=idempotency_key or "",
        request_sha256=request_sha256,
    )
    if explained is not None:
        prediction.explanation = explained.as_list()
    now = timezone.now()
    prediction.created_at = now
    if answer:
        prediction.status = PredictionStatus.ANSWERED
        prediction.answered_at = now
        for name, value in answer.as_fields().items():
            setattr(prediction, name, value)
    elif policy.human_sla_seconds:
        prediction.sla_due_at = now + timedelta(seconds=policy.human_sla_seconds)
    # The review task of a request nothing answered at once (routed to people, or the model
    # unsure, failing or missing) and a QA-sample task go in with the prediction, in the
    # same statement.
    task = None
    rows = [prediction]
    if not answer:
        suggestion = decision.suggestion.as_suggestion() if decision.suggestion is not None else None
        task = review_task_build(prediction=prediction, kind=decision.task_kind, reason=_task_reason(route), suggestion=suggestion)
        rows.append(task)
    if decision.qa_sample:
        rows.append(review_task_build(
            prediction=prediction, kind=TaskKind.QA_SAMPLE,
            reason=f"quality sample of {answer.source} answers ({policy.qa_sample_percent:g}%)",
        ))

    def write() -> None:
        rows_insert(*rows)  # one statement on PostgreSQL, without compiling the INSERTs each time
        if answer:
            webhook_enqueue(prediction=prediction, event="prediction.answered")
        if decision.shadow:
            from .tasks import shadow_predict

            task_send_on_commit(shadow_predict, str(prediction.id), [v.pk for v in decision.shadow])
        # The kept explanation samples and the low-confidence suggestion's explanation (Celery, on commit).
        explanations_follow_up(prediction=prediction, version=champion, explanation=explained, task=task)

    # The rows are written by one statement, or atomically by rows_insert, so most requests
    # need no transaction of their own (BEGIN and COMMIT would be two more round trips on
    # the hot path); Celery tasks asked for after it are sent at once, the rows being
    # there. Anything else that writes (a webhook delivery, a kept explanation) or may race
    # on an Idempotency-Key is atomic with them.
    needs_transaction = bool(callback_url or explained is not None or idempotency_key)
    try:
        with transaction.atomic() if needs_transaction else nullcontext():
            write()
    except IntegrityError:
        if not idempotency_key:
            raise
        # A concurrent retry with the same key won the race.
        existing = Prediction.objects.select_related("predictor").get(client=client, idempotency_key=idempotency_key)
        return _replay(existing, request_sha256)
    return prediction, True


_TASK_REASONS = {
    "mode": "routing mode is human",
    "no_model": "model mode, but no champion model yet",
    "model_error": "the champion model failed on this input",
    "low_confidence": "the model's confidence is below the threshold",
    "rule_error": "no rule matched",
    "queue_full": "the human queue is over its cap, and no fallback could answer",
}


def _task_reason(route: Route) -> str:
    text = _TASK_REASONS.get(route.reason, route.reason)
    if dict(route.extra).get("canary"):
        text = f"canary request: {text}"
    return text


ROUTING_FIELDS = (
    "mode", "fallback", "human_sla_seconds", "confidence_threshold", "canary_percent", "shadow",
    "qa_sample_percent", "max_queue_depth",
)
# The history table's change-reason column is varchar(100).
ROUTING_REASON_MAX_LENGTH = 100


def routing_check(*, predictor: Predictor, changes: dict, reason: str = "") -> None:
    """Raise RoutingInvalid if `routing_update` would refuse these changes. Writes nothing,
    so forms can show the problem next to the field before anything is saved."""
    errors = routing_errors(changes, has_rules=bool(predictor.rules), is_classification=predictor.is_classification)
    if reason and len(reason) > ROUTING_REASON_MAX_LENGTH:
        errors.append(FieldError("reason", f"must be at most {ROUTING_REASON_MAX_LENGTH} characters"))
    if errors:
        raise RoutingInvalid(errors[0].field, errors[0].message, errors)


def routing_update(*, predictor: Predictor, changes: dict, user=None, reason: str = "") -> RoutingPolicy:
    """Change the routing flag. Atomic, audited (history with user and reason), and the
    policy version rises by one so every later prediction names the policy that routed it."""
    routing_check(predictor=predictor, changes=changes, reason=reason)
    with transaction.atomic():
        policy, _ = RoutingPolicy.objects.select_for_update().get_or_create(predictor=predictor)
        changed = False
        for field, value in changes.items():
            if getattr(policy, field) != value:
                setattr(policy, field, value)
                changed = True
        if changed:
            policy.version += 1
            policy._history_user = user
            policy._change_reason = reason or None
            policy.save()
    return policy


def api_client_create(
    *, name: str, predictor_slugs: list[str] | None = None, webhook_hosts: list[str] | None = None
) -> tuple[ApiClient, str]:
    """Create a client and its first key. Returns (client, plaintext key): the key is shown
    once; only its hash is kept. `webhook_hosts` are the hosts its callback_urls may name
    (see gateway.webhooks.webhook_hosts_clean; ValueError when one is malformed)."""
    import secrets

    from .webhooks import webhook_hosts_clean

    hosts = webhook_hosts_clean(webhook_hosts or [])
    with transaction.atomic():
        client = ApiClient.objects.create(
            name=name, all_predictors=not predictor_slugs, webhook_secret=secrets.token_urlsafe(32),
            webhook_hosts=hosts,
        )
        if predictor_slugs:
            predictors = list(Predictor.objects.filter(slug__in=predictor_slugs))
            missing = sorted(set(predictor_slugs) - {p.slug for p in predictors})
            if missing:
                raise Predictor.DoesNotExist(f"no such predictor: {', '.join(missing)}")
            client.predictors.set(predictors)
        plaintext = api_key_issue(client=client)
    return client, plaintext


def api_key_issue(*, client: ApiClient) -> str:
    from .auth import API_KEY_KIND

    new = key_generate(API_KEY_KIND)
    ApiKey.objects.create(client=client, prefix=new.prefix, key_hash=new.key_hash)
    return new.plaintext


def credential_revoke(*, credential: ApiKey | UserToken, by=None) -> bool:
    """Revoke an API key or user token for good. Saved through the model, so the history
    names who did it and every remembered copy in this process is dropped at once (other
    web processes stop accepting it within OZ_AUTH_CACHE_SECONDS). False when it was
    revoked already."""
    if credential.revoked_at is not None:
        return False
    credential.revoked_at = timezone.now()
    credential._history_user = by
    credential.save(update_fields=["revoked_at"])
    return True


def user_token_issue(*, user) -> str:
    from .auth import USER_TOKEN_KIND

    new = key_generate(USER_TOKEN_KIND)
    UserToken.objects.create(user=user, prefix=new.prefix, key_hash=new.key_hash)
    return new.plaintext


def person_create(*, username: str, group: str, password: str | None = None) -> tuple[object, str]:
    """Create (or update) a staff user in `group` and issue an API token. Returns (user, token)."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from .roles import roles_sync

    User = get_user_model()
    with transaction.atomic():
        roles_sync()
        user, _ = User.objects.get_or_create(username=username)
        user.is_staff = True  # the admin is the reviewers' and operators' workplace
        if password:
            user.set_password(password)
        elif not user.has_usable_password():
            user.set_unusable_password()
        user.save()
        user.groups.add(Group.objects.get(name=group))
        token = user_token_issue(user=user)
    return user, token
