"""The human SLA: a pending human prediction past `human_sla_seconds` gets a provisional
answer (rule stub, else the champion model, as the routing fallback allows) or expires;
the human's decision then revises (or answers) it. The sweeper is idempotent."""
from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from gateway.models import Prediction, Predictor, WebhookDelivery
from gateway.services import prediction_create, routing_update
from gateway.sla import sla_enforce
from models_registry import serving
from models_registry.services import model_version_promote
from review.models import Label, ReviewTask, TaskKind
from review.services import review_task_claim_next, review_task_create, review_task_decide
from tests import factories

CALLBACK = "https://client.example/hooks/oz"
EMPTY = {"provisional": 0, "expired": 0}


def _policy(loan, **changes):
    routing_update(predictor=loan, changes=changes)
    loan.routing.refresh_from_db()
    return loan.routing


def _pending(loan, **overrides) -> Prediction:
    prediction, _ = prediction_create(
        predictor=loan, policy=loan.routing, client=None, clean_input=factories.loan_input(**overrides)
    )
    return prediction


def _decide(reviewer, prediction, output):
    task = review_task_claim_next(reviewer=reviewer)
    assert task is not None and task.prediction_id == prediction.pk
    return review_task_decide(task_id=task.pk, reviewer=reviewer, output=output)


def _champion(loan, n_labels: int = 80):
    """Train a small model on synthetic labels and make it the champion."""
    return model_version_promote(version=factories.trained_version(loan, seed=3, n_labels=n_labels))


@pytest.mark.django_db
def test_rule_fallback_gives_a_provisional_answer_then_the_human_revises_it(loan, client_api, reviewer):
    user, _ = reviewer
    _policy(loan, human_sla_seconds=60, fallback="rule")
    response = client_api.post(
        "/predict/loan-approval", {"input": factories.loan_input(), "callback_url": CALLBACK}, format="json"
    )
    assert response.status_code == 202, response.content
    prediction = Prediction.objects.get(pk=response.json()["id"])
    assert prediction.sla_due_at == prediction.created_at + timedelta(seconds=60)

    # Before the deadline nothing happens.
    assert sla_enforce(now=prediction.sla_due_at - timedelta(seconds=1)) == EMPTY
    prediction.refresh_from_db()
    assert prediction.status == "pending"

    after = prediction.sla_due_at + timedelta(seconds=1)
    assert sla_enforce(now=after) == {"provisional": 1, "expired": 0}
    prediction.refresh_from_db()
    assert (prediction.status, prediction.source, prediction.output) == ("answered", "rule", "approve")
    assert prediction.provisional is True and prediction.sla_due_at is None
    assert prediction.route["reason"] == "sla_expired" and prediction.route["mode"] == "human"
    body = client_api.get(f"/predictions/{prediction.pk}").json()
    assert body["provisional"] is True and body["status"] == "answered" and body["source"] == "rule"
    answered = WebhookDelivery.objects.get(prediction=prediction)
    assert (answered.event, answered.url) == ("prediction.answered", CALLBACK)
    assert answered.payload["data"]["provisional"] is True and answered.payload["data"]["source"] == "rule"

    # Idempotent: a second sweep, however late, changes nothing and sends nothing.
    assert sla_enforce(now=after + timedelta(hours=1)) == EMPTY
    assert WebhookDelivery.objects.count() == 1
    # The review task is still there; the human's answer revises the provisional one.
    assert ReviewTask.objects.get(prediction=prediction).status == "open"
    _decide(user, prediction, "refer")
    prediction.refresh_from_db()
    assert (prediction.status, prediction.source, prediction.output) == ("revised", "human", "refer")
    assert prediction.provisional is False
    revised = WebhookDelivery.objects.exclude(pk=answered.pk).get()
    assert revised.event == "prediction.revised" and revised.payload["data"]["provisional"] is False
    # The provisional answer stays in the history.
    assert prediction.history.filter(provisional=True, source="rule", output="approve").exists()
    assert Label.objects.get().target == "refer"


@pytest.mark.django_db
def test_a_human_agreeing_with_the_provisional_answer_still_makes_it_final(loan, reviewer):
    user, _ = reviewer
    _policy(loan, human_sla_seconds=30, fallback="rule")
    prediction = _pending(loan)
    sla_enforce(now=prediction.sla_due_at + timedelta(seconds=1))
    _decide(user, prediction, "approve")
    prediction.refresh_from_db()
    assert (prediction.status, prediction.source, prediction.output, prediction.provisional) == (
        "revised", "human", "approve", False,
    )


@pytest.mark.django_db
def test_no_fallback_expires_and_a_later_human_decision_answers(loan, client_api, reviewer):
    user, _ = reviewer
    _policy(loan, human_sla_seconds=30, fallback="none")
    created = client_api.post(
        "/predict/loan-approval", {"input": factories.loan_input(), "callback_url": CALLBACK}, format="json"
    ).json()
    prediction = Prediction.objects.get(pk=created["id"])
    assert sla_enforce(now=prediction.sla_due_at + timedelta(seconds=1)) == {"provisional": 0, "expired": 1}
    prediction.refresh_from_db()
    assert (prediction.status, prediction.output, prediction.source) == ("expired", None, "")
    assert prediction.route["reason"] == "sla_expired" and prediction.sla_due_at is None
    assert client_api.get(f"/predictions/{prediction.pk}").json()["status"] == "expired"
    assert sla_enforce(now=timezone.now() + timedelta(days=1)) == EMPTY  # idempotent
    assert not WebhookDelivery.objects.exists()

    _decide(user, prediction, "refer")
    prediction.refresh_from_db()
    assert (prediction.status, prediction.source, prediction.output, prediction.provisional) == (
        "answered", "human", "refer", False,
    )
    assert WebhookDelivery.objects.get().event == "prediction.answered"


@pytest.mark.django_db
def test_champion_model_gives_the_provisional_answer_when_fallback_is_human(loan, reviewer):
    user, _ = reviewer
    version = _champion(loan)
    _policy(loan, human_sla_seconds=10, fallback="human")
    prediction = _pending(loan, amount=3000, has_collateral=True)
    assert prediction.status == "pending"
    assert sla_enforce(now=prediction.sla_due_at + timedelta(seconds=1)) == {"provisional": 1, "expired": 0}
    prediction.refresh_from_db()
    assert prediction.source == "model" and prediction.provisional is True
    assert prediction.model_version == version.version and prediction.output in ("approve", "refer")
    assert 0.5 <= prediction.confidence <= 1 and set(prediction.scores) == {"approve", "refer"}
    assert prediction.route["reason"] == "sla_expired"
    model_output = prediction.output
    human_output = "refer" if model_output == "approve" else "approve"
    _decide(user, prediction, human_output)
    prediction.refresh_from_db()
    assert (prediction.status, prediction.source, prediction.output) == ("revised", "human", human_output)
    assert prediction.provisional is False and prediction.model_version is None and prediction.confidence is None


@pytest.mark.django_db
def test_without_rules_the_rule_fallback_uses_the_champion(tmp_path, reviewer):
    import yaml

    from gateway.definitions import predictors_load

    data = yaml.safe_load((factories.DEMO_PREDICTORS / "loan-approval.yaml").read_text())
    data.pop("rules")
    for block in ("training", "gates", "auto_promote"):  # this test is about the fallback, not the gates
        data.pop(block, None)
    path = tmp_path / "loan.yaml"
    path.write_text(yaml.safe_dump(data))
    predictors_load(path)
    loan = Predictor.objects.select_related("routing").get(slug="loan-approval")
    assert loan.rules == [] and loan.routing.fallback == "rule"
    _policy(loan, human_sla_seconds=10)
    no_model = _pending(loan)
    assert sla_enforce(now=no_model.sla_due_at + timedelta(seconds=1))["expired"] == 1
    _champion(loan)
    with_model = _pending(loan)
    assert sla_enforce(now=with_model.sla_due_at + timedelta(seconds=1))["provisional"] == 1
    with_model.refresh_from_db()
    assert with_model.source == "model" and with_model.provisional


@pytest.mark.django_db
def test_human_fallback_without_a_champion_or_with_a_broken_model_expires(loan, monkeypatch):
    _policy(loan, human_sla_seconds=10, fallback="human")
    first = _pending(loan)
    assert sla_enforce(now=first.sla_due_at + timedelta(seconds=1)) == {"provisional": 0, "expired": 1}
    _champion(loan)

    def broken(**kwargs):
        raise RuntimeError("model exploded")

    monkeypatch.setattr(serving, "model_answer", broken)
    second = _pending(loan)
    assert sla_enforce(now=second.sla_due_at + timedelta(seconds=1)) == {"provisional": 0, "expired": 1}
    second.refresh_from_db()
    assert second.status == "expired"


@pytest.mark.django_db
def test_only_pending_predictions_past_their_deadline_are_touched(loan, reviewer):
    user, _ = reviewer
    _policy(loan, human_sla_seconds=60, fallback="rule")
    decided = _pending(loan, amount=1)
    waiting = _pending(loan, amount=2)
    _decide(user, decided, "refer")
    decided.refresh_from_db()
    assert decided.sla_due_at is None  # answering clears the deadline
    # No SLA on the policy when this one was created: never swept.
    _policy(loan, human_sla_seconds=None)
    no_sla = _pending(loan, amount=3)
    assert no_sla.sla_due_at is None
    # A rule-answered prediction has no deadline either.
    _policy(loan, mode="rule", human_sla_seconds=60)
    assert _pending(loan, amount=4).sla_due_at is None

    assert sla_enforce(now=timezone.now() + timedelta(hours=1)) == {"provisional": 1, "expired": 0}
    for p in (decided, waiting, no_sla):
        p.refresh_from_db()
    assert (decided.status, decided.source) == ("answered", "human")
    assert (waiting.status, waiting.provisional) == ("answered", True)
    assert no_sla.status == "pending"


@pytest.mark.django_db
def test_sweeps_work_in_batches(loan):
    _policy(loan, human_sla_seconds=5, fallback="rule")
    for i in range(5):
        _pending(loan, amount=100 + i)
    later = timezone.now() + timedelta(minutes=1)
    assert sla_enforce(now=later, limit=2) == {"provisional": 2, "expired": 0}
    assert sla_enforce(now=later, limit=2) == {"provisional": 2, "expired": 0}
    assert sla_enforce(now=later, limit=2) == {"provisional": 1, "expired": 0}
    assert sla_enforce(now=later, limit=2) == EMPTY
    assert Prediction.objects.filter(provisional=True).count() == 5


@pytest.mark.django_db
def test_consensus_and_adjudication_revise_a_provisional_answer_only_once_settled(loan):
    type(loan).objects.filter(pk=loan.pk).update(reviews_required=2)
    loan.refresh_from_db()
    _policy(loan, human_sla_seconds=30, fallback="rule")
    ann, bob, cat = (factories.reviewer_with_token(n, password=None)[0] for n in ("ann", "bob", "cat"))
    prediction = _pending(loan)
    _decide(ann, prediction, "approve")
    sla_enforce(now=prediction.sla_due_at + timedelta(seconds=1))
    prediction.refresh_from_db()
    assert prediction.provisional and prediction.source == "rule"
    _decide(bob, prediction, "refer")  # a dispute: the provisional answer stands for now
    prediction.refresh_from_db()
    assert prediction.provisional and prediction.status == "answered"
    adjudication = ReviewTask.objects.get(kind=TaskKind.ADJUDICATION)
    assert review_task_claim_next(reviewer=cat) == adjudication
    review_task_decide(task_id=adjudication.pk, reviewer=cat, output="refer")
    prediction.refresh_from_db()
    assert (prediction.status, prediction.source, prediction.output, prediction.provisional) == (
        "revised", "human", "refer", False,
    )


@pytest.mark.django_db
def test_qa_sample_of_a_rule_answer_has_no_deadline(loan):
    _policy(loan, mode="rule", human_sla_seconds=5)
    prediction = _pending(loan)
    review_task_create(prediction=prediction, kind=TaskKind.QA_SAMPLE, reason="sampled")
    assert sla_enforce(now=timezone.now() + timedelta(hours=1)) == EMPTY
    prediction.refresh_from_db()
    assert (prediction.status, prediction.provisional) == ("answered", False)


@pytest.mark.django_db(transaction=True)
def test_sla_sweep_beat_task_runs_in_a_real_worker(celery_worker_thread):
    from gateway.tasks import sla_sweep

    loan = factories.loan_predictor()
    _policy(loan, human_sla_seconds=60, fallback="rule")
    due = _pending(loan)
    not_due = _pending(loan)
    Prediction.objects.filter(pk=due.pk).update(sla_due_at=timezone.now() - timedelta(seconds=1))

    sla_sweep.delay()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        due.refresh_from_db()
        if due.status != "pending":
            break
        time.sleep(0.05)
    assert (due.status, due.source, due.provisional) == ("answered", "rule", True)
    not_due.refresh_from_db()
    assert not_due.status == "pending" and not_due.sla_due_at is not None


@pytest.mark.django_db
def test_an_input_the_rules_cannot_read_does_not_stop_the_sweep(loan):
    """An input stored under an older schema (here `amount` was text) makes the current rules
    fail; that prediction falls through to the model (none: it expires) and the others still
    get their answers."""
    _policy(loan, human_sla_seconds=5, fallback="rule")
    odd = _pending(loan)
    Prediction.objects.filter(pk=odd.pk).update(input={**odd.input, "amount": "a lot"})
    fine = _pending(loan)
    assert sla_enforce(now=timezone.now() + timedelta(minutes=1)) == {"provisional": 1, "expired": 1}
    odd.refresh_from_db()
    fine.refresh_from_db()
    assert odd.status == "expired"
    assert (fine.status, fine.source, fine.provisional) == ("answered", "rule", True)


def test_beat_runs_the_sweepers_by_their_registered_names(settings):
    from config.celery_app import app

    app.loader.import_default_modules()
    scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert {"gateway.tasks.sla_sweep", "review.tasks.lease_sweep"} <= scheduled
    assert scheduled <= set(app.tasks), scheduled - set(app.tasks)
