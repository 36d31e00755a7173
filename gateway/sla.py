"""The human SLA: a pending human prediction past its deadline gets a provisional answer
(rules, else the champion model, as the routing flag's fallback allows) or expires. The
review task stays open; when the human decides, the prediction is revised (or answered, if
it had expired)."""
from __future__ import annotations

import logging

from django.db import transaction
from django.utils import timezone

from .answers import prediction_answer
from .models import AnswerSource, Prediction, PredictionStatus, RoutingFallback
from .rules import NoRuleMatched, rules_evaluate

logger = logging.getLogger(__name__)


def _provisional_answer(prediction: Prediction) -> dict | None:
    predictor = prediction.predictor
    policy = predictor.routing
    if policy.fallback == RoutingFallback.NONE:
        return None
    if policy.fallback == RoutingFallback.RULE and predictor.rules:
        try:
            output, _ = rules_evaluate(predictor.rules, prediction.input)
            return {"output": output, "source": AnswerSource.RULE}
        except NoRuleMatched:
            pass
        except Exception:  # an input the current rules cannot read (older schema) must not stop the sweep
            logger.exception("rules failed on prediction %s during an SLA fallback", prediction.pk)
    from models_registry import serving

    champion = serving.champion_get(predictor)
    if champion is None:
        return None
    try:
        result = serving.model_answer(predictor=predictor, version=champion, clean_input=prediction.input)
    except Exception:  # a broken model leaves the prediction to expire
        logger.exception("model v%s failed on an SLA fallback", champion.version)
        return None
    return {
        "output": result.output,
        "source": AnswerSource.MODEL,
        "confidence": result.confidence,
        "scores": result.scores,
        "model_version": result.version,
    }


def _sla_handle(prediction: Prediction) -> str:
    prediction.sla_due_at = None
    answer = _provisional_answer(prediction)
    prediction.route = {**prediction.route, "reason": "sla_expired"}
    if answer:
        prediction.save(update_fields=["sla_due_at", "route"])
        prediction_answer(prediction=prediction, provisional=True, **answer)
        return "provisional"
    prediction.status = PredictionStatus.EXPIRED
    prediction.save(update_fields=["sla_due_at", "route", "status"])
    return "expired"


def sla_enforce(*, now=None, limit: int = 500) -> dict:
    """Give every pending prediction past its SLA a provisional answer or expire it.
    Idempotent and safe to run on several workers: rows are locked with SKIP LOCKED and
    the deadline is cleared once handled."""
    now = now or timezone.now()
    counts = {"provisional": 0, "expired": 0}
    with transaction.atomic():
        due = list(
            Prediction.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("predictor__routing")
            .filter(sla_due_at__lte=now, status=PredictionStatus.PENDING)
            .order_by("sla_due_at")[:limit]
        )
        for prediction in due:
            try:
                with transaction.atomic():  # a savepoint: one row that cannot be saved spoils no other
                    handled = _sla_handle(prediction)
            except Exception:
                logger.exception("SLA handling failed for prediction %s; it expires", prediction.pk)
                Prediction.objects.filter(pk=prediction.pk).update(
                    sla_due_at=None, status=PredictionStatus.EXPIRED,
                    route={**prediction.route, "reason": "sla_expired"},
                )
                handled = "expired"
            counts[handled] += 1
    return counts
