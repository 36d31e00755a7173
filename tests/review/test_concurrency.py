"""The queue under load and over time: many reviewers draining one queue never share a
task and never lose one; leases run out, go back to the queue (the beat sweeper), and a
decision from a reviewer whose lease ran out is refused, never silently applied."""
from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from gateway.models import Prediction
from gateway.services import prediction_create, routing_update
from gateway.sla import sla_enforce
from review.models import Decision, Label, ReviewTask, TaskKind, TaskStatus
from review.selectors import claimable_tasks, queue_counts
from review.services import (
    TaskConflict,
    review_leases_expire,
    review_task_claim_next,
    review_task_decide,
)
from tests import factories

THREADS = 16
WORK_TIMEOUT = 60  # seconds a drain may take before the test calls it stuck


def _pending(loan, **overrides) -> Prediction:
    prediction, _ = prediction_create(
        predictor=loan, policy=loan.routing, client=None, clean_input=factories.loan_input(**overrides)
    )
    return prediction


def _queue(loan, n: int) -> None:
    # Through the real service: a prediction and its task in one transaction each.
    for i in range(n):
        _pending(loan, amount=1000 + i)


def _truth(task: ReviewTask) -> str:
    return "approve" if task.prediction.input["amount"] % 2 == 0 else "refer"


def _queue_drained() -> bool:
    return not ReviewTask.objects.filter(status__in=[TaskStatus.OPEN, TaskStatus.CLAIMED]).exists()


def _drain(reviewers, answer, *, on_conflict=None, background=None):
    """Run one thread per reviewer: claim, decide, repeat until no task is open or claimed.
    Each thread has its own connection and closes it. Returns (claims, errors)."""
    claims: list[tuple[int, int]] = []
    errors: list[BaseException] = []
    stop = threading.Event()
    barrier = threading.Barrier(len(reviewers) + (1 if background else 0))

    def work(user):
        try:
            barrier.wait()
            deadline = time.monotonic() + WORK_TIMEOUT
            while time.monotonic() < deadline:
                task = review_task_claim_next(reviewer=user)
                if task is None:
                    # Another reviewer may still give a consensus task back to the queue.
                    if _queue_drained():
                        return
                    time.sleep(0.005)
                    continue
                claims.append((task.pk, user.pk))
                try:
                    review_task_decide(task_id=task.pk, reviewer=user, output=answer(task, user))
                except TaskConflict:
                    if on_conflict is None:
                        raise
                    on_conflict(task, user)
            errors.append(TimeoutError(f"{user} still working after {WORK_TIMEOUT}s"))
        except BaseException as exc:  # reported by the test
            errors.append(exc)
        finally:
            connection.close()

    def sweep():
        try:
            barrier.wait()
            while not stop.is_set():
                background()
                time.sleep(0.01)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(u,)) for u in reviewers]
    sweeper = threading.Thread(target=sweep) if background else None
    for t in threads + ([sweeper] if sweeper else []):
        t.start()
    for t in threads:
        t.join(WORK_TIMEOUT + 10)
    stop.set()
    if sweeper:
        sweeper.join(30)
    assert not any(t.is_alive() for t in threads), "a reviewer thread never finished"
    return claims, errors


def _reviewers(n=THREADS):
    return [factories.reviewer_with_token(f"r{i:02d}", password=None)[0] for i in range(n)]


@pytest.mark.django_db(transaction=True)
def test_sixteen_reviewers_drain_five_hundred_tasks_exactly_once():
    loan = factories.loan_predictor()
    reviewers = _reviewers()
    _queue(loan, 500)
    assert claimable_tasks().count() == 500

    started = time.monotonic()
    claims, errors = _drain(reviewers, lambda task, user: _truth(task))
    elapsed = time.monotonic() - started
    assert not errors, errors[:3]

    # None claimed twice: one claim per task, in the threads and in the audit history.
    per_task = Counter(pk for pk, _ in claims)
    assert len(per_task) == 500 and set(per_task.values()) == {1}
    claims_in_history = Counter(
        ReviewTask.history.filter(status=TaskStatus.CLAIMED).values_list("id", flat=True)
    )
    assert len(claims_in_history) == 500 and set(claims_in_history.values()) == {1}
    # Every task decided exactly once, by the reviewer who claimed it.
    assert Decision.objects.count() == 500
    claimed_by = dict(claims)
    for task_id, reviewer_id in Decision.objects.values_list("task_id", "reviewer_id"):
        assert claimed_by[task_id] == reviewer_id
    assert ReviewTask.objects.filter(status=TaskStatus.DECIDED).count() == 500
    # None lost: 500 labels, 500 answered predictions, each with the right answer.
    assert Label.objects.count() == 500
    assert Label.objects.values("prediction").distinct().count() == 500
    assert Prediction.objects.filter(status="answered", source="human").count() == 500
    for amount, output in Prediction.objects.values_list("input__amount", "output"):
        assert output == ("approve" if amount % 2 == 0 else "refer")
    # The work was really shared out.
    assert len({reviewer for _, reviewer in claims}) > THREADS // 2
    assert elapsed < 30, f"draining took {elapsed:.1f}s"


@pytest.mark.django_db(transaction=True)
def test_concurrent_consensus_gets_distinct_reviewers_and_adjudicates_disputes():
    loan = factories.loan_predictor()
    type(loan).objects.filter(pk=loan.pk).update(reviews_required=2)
    loan.refresh_from_db()
    reviewers = _reviewers()
    _queue(loan, 150)
    # Reviewers with an even id follow the truth; odd ones always say "refer". Disputes
    # (truth = approve, seen by an odd reviewer) go to adjudication, which anyone settles.
    claims, errors = _drain(
        reviewers,
        lambda task, user: "refer" if user.pk % 2 and task.kind == TaskKind.ROUTED else _truth(task),
    )
    assert not errors, errors[:3]

    routed = ReviewTask.objects.filter(kind=TaskKind.ROUTED)
    assert routed.count() == 150
    for task in routed.prefetch_related("decisions"):
        decisions = list(task.decisions.all())
        assert len(decisions) == 2 and decisions[0].reviewer_id != decisions[1].reviewer_id
        outputs = {d.output for d in decisions}
        follow_ups = ReviewTask.objects.filter(origin=task, kind=TaskKind.ADJUDICATION).count()
        assert follow_ups == (1 if len(outputs) == 2 else 0)
        # Agreement stands (even two odd reviewers agreeing wrongly); adjudication finds the truth.
        assert task.final_output == (outputs.pop() if len(outputs) == 1 else _truth(task))
    # Adjudications were decided once each; every prediction answered once, by humans.
    adjudications = ReviewTask.objects.filter(kind=TaskKind.ADJUDICATION)
    assert all(t.decisions.count() == 1 for t in adjudications)
    assert Decision.objects.filter(task__kind=TaskKind.ROUTED).count() == 300
    assert Label.objects.count() == 150 and Label.objects.filter(source="adjudication").count() == adjudications.count()
    assert Prediction.objects.filter(status="answered", source="human").count() == 150
    # No reviewer ever held the same consensus task twice.
    pairs = Counter(claims)
    assert max(pairs.values()) == 1


@pytest.mark.django_db(transaction=True)
def test_sweepers_racing_reviewers_lose_nothing():
    """Lease and SLA sweepers run all the time with a clock far ahead, so leases are taken
    from reviewers mid-task and every pending prediction gets a provisional rule answer.
    Refused decisions change nothing; every task is still decided exactly once and every
    prediction ends with the human's answer."""
    loan = factories.loan_predictor()
    routing_update(predictor=loan, changes={"human_sla_seconds": 1, "fallback": "rule"})
    loan.routing.refresh_from_db()
    reviewers = _reviewers()
    _queue(loan, 200)
    refused: list[tuple[int, int]] = []
    later = lambda: timezone.now() + timedelta(hours=1)  # noqa: E731

    def sweep():
        review_leases_expire(now=later())
        sla_enforce(now=later())

    claims, errors = _drain(
        reviewers, lambda task, user: _truth(task), on_conflict=lambda task, user: refused.append((task.pk, user.pk)),
        background=sweep,
    )
    assert not errors, errors[:3]
    per_task = Counter(Decision.objects.values_list("task_id", flat=True))
    assert len(per_task) == 200 and set(per_task.values()) == {1}
    assert Label.objects.count() == 200
    predictions = Prediction.objects.all()
    assert all(p.source == "human" and not p.provisional and p.sla_due_at is None for p in predictions)
    assert {p.status for p in predictions} <= {"answered", "revised"}
    for p in predictions:
        assert p.output == ("approve" if p.input["amount"] % 2 == 0 else "refer")
        if p.status == "revised":  # it had a provisional rule answer first
            assert p.history.filter(provisional=True, source="rule").exists()
    # Claims that ended in a refusal wrote nothing.
    for task_id, user_id in refused:
        decision = Decision.objects.get(task_id=task_id)
        if decision.reviewer_id == user_id:
            # The same reviewer claimed it again later and decided then.
            assert Counter(claims)[(task_id, user_id)] >= 2


# -- leases ---------------------------------------------------------------------------------

@pytest.mark.django_db
def test_lease_runs_out_another_reviewer_takes_over_and_the_old_holder_gets_409(loan, make_api, settings):
    settings.OZ_REVIEW_LEASE_SECONDS = 60
    first, first_token = factories.reviewer_with_token("ann")
    second, second_token = factories.reviewer_with_token("bob")
    first_api, second_api = make_api(f"Token {first_token}"), make_api(f"Token {second_token}")
    prediction = _pending(loan)
    t0 = timezone.now()
    task = review_task_claim_next(reviewer=first, now=t0)
    assert task.lease_expires_at == t0 + timedelta(seconds=60)
    # Within the lease nobody else gets it; once it has run out anyone may.
    assert review_task_claim_next(reviewer=second, now=t0 + timedelta(seconds=59)) is None
    ReviewTask.objects.filter(pk=task.pk).update(
        claimed_at=t0 - timedelta(seconds=61), lease_expires_at=t0 - timedelta(seconds=1)
    )
    assert second_api.post("/review/claim").json()["id"] == task.pk
    response = first_api.post(f"/review/tasks/{task.pk}/decision", {"output": "approve"}, format="json")
    assert response.status_code == 409 and response["Content-Type"] == "application/problem+json"
    assert "do not hold" in response.json()["detail"]
    assert first_api.post(f"/review/tasks/{task.pk}/extend").status_code == 409
    assert first_api.post(f"/review/tasks/{task.pk}/release").status_code == 409
    assert not Decision.objects.exists()
    response = second_api.post(f"/review/tasks/{task.pk}/decision", {"output": "refer"}, format="json")
    assert response.status_code == 201
    prediction.refresh_from_db()
    assert (prediction.output, prediction.status) == ("refer", "answered")
    assert Decision.objects.get().reviewer == second


@pytest.mark.django_db
def test_holder_whose_lease_ran_out_is_refused_even_when_nobody_took_over(loan, reviewer):
    user, _ = reviewer
    _pending(loan)
    t0 = timezone.now()
    task = review_task_claim_next(reviewer=user, now=t0)
    late = task.lease_expires_at + timedelta(seconds=1)
    with pytest.raises(TaskConflict, match="lease"):
        review_task_decide(task_id=task.pk, reviewer=user, output="approve", now=late)
    assert not Decision.objects.exists()
    # Claiming again gives them a fresh lease, and then they may decide.
    again = review_task_claim_next(reviewer=user, now=late)
    assert again == task and again.lease_expires_at > late
    decision = review_task_decide(task_id=task.pk, reviewer=user, output="approve", now=late + timedelta(seconds=5))
    assert decision.seconds_to_decide == pytest.approx(5)


@pytest.mark.django_db
def test_lease_expiry_returns_only_expired_tasks_to_the_queue(loan):
    ann, _ = factories.reviewer_with_token("ann")
    bob, _ = factories.reviewer_with_token("bob")
    expired_task = _pending(loan).review_tasks.get()
    live_task = _pending(loan).review_tasks.get()
    open_task = _pending(loan).review_tasks.get()
    now = timezone.now()
    assert review_task_claim_next(reviewer=ann, now=now) == expired_task
    assert review_task_claim_next(reviewer=bob, now=now) == live_task
    ReviewTask.objects.filter(pk=expired_task.pk).update(lease_expires_at=now - timedelta(seconds=1))
    assert [row["count"] for row in queue_counts(now=now)] == [2]  # open + expired lease

    assert review_leases_expire(now=now) == 1
    expired_task.refresh_from_db()
    live_task.refresh_from_db()
    open_task.refresh_from_db()
    assert (expired_task.status, expired_task.claimed_by, expired_task.lease_expires_at) == (TaskStatus.OPEN, None, None)
    assert (live_task.status, live_task.claimed_by) == (TaskStatus.CLAIMED, bob)
    assert open_task.status == TaskStatus.OPEN
    assert expired_task.history.first().status == TaskStatus.OPEN  # the return is audited
    # Idempotent: nothing more to return.
    assert review_leases_expire(now=now) == 0
    with pytest.raises(TaskConflict, match="do not hold"):
        review_task_decide(task_id=expired_task.pk, reviewer=ann, output="approve")
    # The live holder is untouched and can still decide.
    review_task_decide(task_id=live_task.pk, reviewer=bob, output="approve")


@pytest.mark.django_db(transaction=True)
def test_lease_sweep_beat_task_runs_in_a_real_worker(celery_worker_thread):
    from review.tasks import lease_sweep

    loan = factories.loan_predictor()
    ann, _ = factories.reviewer_with_token("ann")
    task = _pending(loan).review_tasks.get()
    live = _pending(loan).review_tasks.get()
    assert [review_task_claim_next(reviewer=ann), review_task_claim_next(reviewer=ann)] == [task, live]
    ReviewTask.objects.filter(pk=task.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))

    lease_sweep.delay()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        task.refresh_from_db()
        if task.status == TaskStatus.OPEN:
            break
        time.sleep(0.05)
    assert task.status == TaskStatus.OPEN and task.claimed_by is None
    live.refresh_from_db()
    assert live.status == TaskStatus.CLAIMED
