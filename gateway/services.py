"""Gateway writes: predictions (the /predict path), routing changes, API clients, tokens."""
from __future__ import annotations

import hashlib
import json
import logging
import uuid
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from models_registry import serving
from review.models import TaskKind
from review.services import review_task_create

from .answers import webhook_enqueue
from .appeal_tokens import appeal_token, appeal_token_sha256
from .keys import key_generate
from .models import (
    AnswerSource,
    ApiClient,
    ApiKey,
    Prediction,
    PredictionStatus,
    Predictor,
    RoutingMode,
    RoutingPolicy,
    UserToken,
)
from .routing import Route, route_decide
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


# What makes two requests "the same" for Idempotency-Key: the question asked, not how long
# the client is willing to wait for the answer or whether it wants it explained.
FINGERPRINT_FIELDS = ("input", "callback_url")


def request_fingerprint(*, predictor_slug: str, body: dict) -> str:
    asked = {k: body[k] for k in FINGERPRINT_FIELDS if k in body}
    canonical = json.dumps({"predictor": predictor_slug, "body": asked}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _replay(existing: Prediction, request_sha256: str) -> tuple[Prediction, bool]:
    if existing.request_sha256 != request_sha256:
        raise IdempotencyConflict("this Idempotency-Key was already used with a different request")
    return existing, False


def prediction_create(
    *,
    predictor: Predictor,
    policy: RoutingPolicy,
    client: ApiClient | None,
    clean_input: dict,
    callback_url: str = "",
    idempotency_key: str = "",
    request_sha256: str = "",
) -> tuple[Prediction, bool]:
    """Route one validated request and record it. Returns (prediction, created).

    Rules and models answer at once; otherwise the prediction and its review task are
    written in one transaction. A retry with the same Idempotency-Key and the same request
    returns the first prediction and creates nothing; with a different request it raises
    IdempotencyConflict. Model or rule failures divert to the human queue."""
    if idempotency_key:
        existing = Prediction.objects.filter(client=client, idempotency_key=idempotency_key).select_related("predictor").first()
        if existing is not None:
            return _replay(existing, request_sha256)

    route = route_decide(policy=policy)
    answer: dict | None = None
    if route.target == RoutingMode.RULE:
        try:
            output, _ = rules_evaluate(predictor.rules, clean_input)
            answer = {"output": output, "source": AnswerSource.RULE}
        except NoRuleMatched:
            route = route.diverted(RoutingMode.HUMAN, "rule_error")
    elif route.target == RoutingMode.MODEL:
        champion = serving.champion_get(predictor)
        if champion is None:
            route = route.diverted(RoutingMode.HUMAN, "no_model")
        else:
            try:
                result = serving.model_answer(predictor=predictor, version=champion, clean_input=clean_input)
                answer = {
                    "output": result.output,
                    "source": AnswerSource.MODEL,
                    "confidence": result.confidence,
                    "scores": result.scores,
                    "model_version": result.version,
                }
            except Exception:  # a broken model must not lose the request
                logger.exception("model v%s of %s failed; routing to reviewers", champion.version, predictor.slug)
                route = route.diverted(RoutingMode.HUMAN, "model_error")

    prediction_id = uuid.uuid4()
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
    now = timezone.now()
    prediction.created_at = now
    if answer:
        prediction.status = PredictionStatus.ANSWERED
        prediction.answered_at = now
        for field, value in answer.items():
            setattr(prediction, field, value)
    elif policy.human_sla_seconds:
        prediction.sla_due_at = now + timedelta(seconds=policy.human_sla_seconds)
    try:
        with transaction.atomic():
            prediction.save(force_insert=True)
            if answer:
                webhook_enqueue(prediction=prediction, event="prediction.answered")
            else:
                review_task_create(prediction=prediction, kind=TaskKind.ROUTED, reason=_task_reason(route))
    except IntegrityError:
        if not idempotency_key:
            raise
        # A concurrent retry with the same key won the race.
        existing = Prediction.objects.select_related("predictor").get(client=client, idempotency_key=idempotency_key)
        return _replay(existing, request_sha256)
    return prediction, True


def _task_reason(route: Route) -> str:
    return {
        "mode": "routing mode is human",
        "no_model": "model mode, but no champion model yet",
        "model_error": "the champion model failed on this input",
        "rule_error": "no rule matched",
    }.get(route.reason, route.reason)


ROUTING_FIELDS = ("mode", "fallback", "human_sla_seconds")
# The history table's change-reason column is varchar(100).
ROUTING_REASON_MAX_LENGTH = 100


def routing_check(*, predictor: Predictor, changes: dict, reason: str = "") -> None:
    """Raise RoutingInvalid if `routing_update` would refuse these changes. Writes nothing,
    so forms can show the problem next to the field before anything is saved."""
    errors = routing_errors(changes, has_rules=bool(predictor.rules))
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
