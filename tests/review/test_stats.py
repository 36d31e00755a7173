"""Review statistics on a hand-built history of decisions: kappa and agreement values match
hand computation and scikit-learn; throughput and timings match the clock we set."""
from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
import yaml
from django.utils import timezone
from sklearn.metrics import cohen_kappa_score

from gateway.definitions import predictors_load
from gateway.models import Predictor
from gateway.services import prediction_create
from review.models import Decision, ReviewTask, TaskKind
from review.services import review_task_claim_next, review_task_decide
from review.stats import fleiss_kappa, pairwise_agreement, review_stats, spread
from tests import factories

pytestmark = pytest.mark.django_db

NOW = timezone.now().replace(microsecond=0)
# Everything happens two days ago, from the top of an hour, so the hour buckets are known.
T0 = (NOW - timedelta(days=2)).replace(minute=0, second=0)


def at(minutes: float):
    return T0 + timedelta(minutes=minutes)


# -- the formulas ----------------------------------------------------------------------------

def test_fleiss_kappa_matches_the_textbook_example():
    # Fleiss (1971) as worked on Wikipedia: 10 subjects, 14 raters, 5 categories: κ ≈ 0.210.
    table = [
        [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
    ]
    assert fleiss_kappa(table) == pytest.approx(0.20993, abs=1e-5)


def test_fleiss_kappa_edge_cases():
    assert fleiss_kappa([[2, 0], [0, 2]]) == pytest.approx(1.0)
    assert fleiss_kappa([[1, 1], [1, 1]]) == pytest.approx(-1.0)
    assert fleiss_kappa([[3, 0], [3, 0]]) is None  # every rating the same: undefined
    assert fleiss_kappa(np.zeros((0, 2))) is None
    with pytest.raises(ValueError):
        fleiss_kappa([[2, 0], [1, 2]])
    # Two raters: Fleiss' kappa equals Scott's pi; check against a direct computation.
    pairs = [("a", "a"), ("a", "b"), ("b", "b"), ("a", "a"), ("b", "a"), ("b", "b")]
    table = [[(x == "a") + (y == "a"), (x == "b") + (y == "b")] for x, y in pairs]
    observed = sum(x == y for x, y in pairs) / len(pairs)
    p_a = sum((x == "a") + (y == "a") for x, y in pairs) / (2 * len(pairs))
    expected = p_a**2 + (1 - p_a) ** 2
    assert fleiss_kappa(table) == pytest.approx((observed - expected) / (1 - expected))


def test_pairwise_agreement_and_spread():
    assert pairwise_agreement(["a", "a", "b"]) == pytest.approx(1 / 3)
    assert pairwise_agreement([1.0, 1.0 + 1e-12]) == 1.0
    assert spread([]) == {"median": None, "p90": None}
    assert spread([10, 20, 30, 40, 50]) == {"median": 30.0, "p90": 46.0}


# -- a history of decisions -------------------------------------------------------------------

def _load(tmp_path, data: dict) -> Predictor:
    path = tmp_path / f"{data['slug']}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    predictors_load(path)
    return Predictor.objects.select_related("routing").get(slug=data["slug"])


def _review(predictor, data, created, steps, adjudication=None):
    """Queue a task for `data` created at `created`, then have each (reviewer, output,
    minute claimed, seconds taken) decide it in turn; `adjudication` is one more step
    for the adjudication task a dispute creates."""
    prediction, _ = prediction_create(predictor=predictor, policy=predictor.routing, client=None, clean_input=data)
    task = prediction.review_tasks.get()
    ReviewTask.objects.filter(pk=task.pk).update(created_at=created)
    for step in steps:
        _decide(task, *step)
    if adjudication:
        _decide(ReviewTask.objects.get(origin=task, kind=TaskKind.ADJUDICATION), *adjudication)
    task.refresh_from_db()
    return task


def _decide(task, reviewer, output, claimed_at, seconds):
    claimed = review_task_claim_next(reviewer=reviewer, now=claimed_at)
    assert claimed.pk == task.pk
    decided_at = claimed_at + timedelta(seconds=seconds)
    decision = review_task_decide(task_id=task.pk, reviewer=reviewer, output=output, now=decided_at)
    Decision.objects.filter(pk=decision.pk).update(created_at=decided_at)


@pytest.fixture
def history(tmp_path):
    loan_yaml = yaml.safe_load((factories.DEMO_PREDICTORS / "loan-approval.yaml").read_text())
    loan = _load(tmp_path, {**loan_yaml, "reviews_required": 2})
    price = _load(tmp_path, {
        "slug": "price", "input": {"area": {"type": "number"}}, "output": {"type": "number"},
        "reviews_required": 2, "routing": {"mode": "human"},
    })
    ann, bob, cat, dan = (factories.reviewer_with_token(n, password=None)[0] for n in ("ann", "bob", "cat", "dan"))
    inp = factories.loan_input
    A, R = "approve", "refer"

    # Nine days ago: outside the default window.
    old = NOW - timedelta(days=9)
    _review(loan, inp(), old, [(ann, A, old, 5), (bob, A, old, 5)])
    # Hour 0
    _review(loan, inp(), at(0), [(ann, A, at(1), 10), (bob, A, at(2), 20)])                    # t1
    _review(loan, inp(), at(5), [(ann, R, at(6), 20), (bob, R, at(7), 40)])                     # t2
    _review(loan, inp(), at(10), [(ann, A, at(11), 30), (bob, R, at(12), 60)],
            adjudication=(cat, R, at(14), 30))                                                  # t3
    # Hour 1
    _review(loan, inp(), at(60), [(ann, A, at(61), 40), (cat, A, at(62), 50)])                  # t4
    _review(loan, inp(), at(65), [(bob, R, at(66), 80), (cat, A, at(67), 70)],
            adjudication=(dan, A, at(69), 90))                                                  # t5
    _review(loan, inp(), at(75), [(ann, R, at(76), 50), (bob, R, at(77), 100)])                 # t6
    # Hour 2: one task needing three reviewers
    Predictor.objects.filter(pk=loan.pk).update(reviews_required=3)
    loan.refresh_from_db()
    _review(loan, inp(), at(120), [(ann, A, at(121), 60), (bob, A, at(122), 30), (cat, R, at(123), 40)],
            adjudication=(dan, A, at(124), 10))                                                 # t7
    # Hour 3: a number output
    _review(price, {"area": 1}, at(180), [(ann, 100, at(181), 15), (bob, 100.0, at(182), 25)])  # p1
    _review(price, {"area": 2}, at(185), [(ann, 100, at(186), 35), (bob, 150, at(187), 45)],
            adjudication=(dan, 120, at(188), 55))                                               # p2
    return {"loan": loan, "price": price, "ann": ann, "bob": bob, "cat": cat, "dan": dan}


def _by_name(stats):
    return {row["reviewer"]: row for row in stats["reviewers"]}


def test_agreement_per_predictor(history):
    stats = review_stats(now=NOW)
    loan = stats["agreement"]["loan-approval"]
    # Per task, the first two answers (approve, refer): t1 [2,0] t2 [0,2] t3 [1,1] t4 [2,0]
    # t5 [1,1] t6 [0,2] t7 [2,0]. P̄ = 5/7; p = (8/14, 6/14); P̄e = 100/196; κ = 10/24.
    assert loan == {
        "output_type": "label",
        "tasks": 7,
        "raters_per_task": 2,
        "fleiss_kappa": pytest.approx(10 / 24, abs=1e-6),
        "observed_agreement": pytest.approx(5 / 7, abs=1e-6),
        "percent_agreement": pytest.approx(400 / 7, abs=1e-4),  # t1, t2, t4, t6 unanimous
        "disputed": 3,
    }
    assert stats["agreement"]["price"] == {
        "output_type": "number", "tasks": 2, "raters_per_task": 2, "fleiss_kappa": None,
        "observed_agreement": 0.5, "percent_agreement": 50.0, "disputed": 1,
    }
    # A longer window takes in the old task too (unanimous).
    assert review_stats(now=NOW, days=10)["agreement"]["loan-approval"]["tasks"] == 8


def test_reviewer_agreement_with_the_settled_answer(history):
    reviewers = _by_name(review_stats(predictor=history["loan"], now=NOW))
    A, R = "approve", "refer"
    # ann: t1 A/A, t2 R/R, t3 A/R, t4 A/A, t6 R/R, t7 A/A -> po 5/6, pe 1/2, κ 2/3.
    ann = reviewers["ann"]
    assert (ann["compared"], ann["agreed_with_settled"]) == (6, 5)
    assert ann["percent_agreement"] == pytest.approx(500 / 6, abs=1e-4)
    assert ann["cohen_kappa"] == pytest.approx(2 / 3, abs=1e-6)
    assert ann["cohen_kappa"] == pytest.approx(cohen_kappa_score([A, R, A, A, R, A], [A, R, R, A, R, A]), abs=1e-6)
    bob = reviewers["bob"]  # t1 A/A t2 R/R t3 R/R t5 R/A t6 R/R t7 A/A
    assert (bob["compared"], bob["agreed_with_settled"]) == (6, 5)
    assert bob["cohen_kappa"] == pytest.approx(cohen_kappa_score([A, R, R, R, R, A], [A, R, R, A, R, A]), abs=1e-6)
    cat = reviewers["cat"]  # t4 A/A, t5 A/A (adjudicated), t7 R/A; the adjudication is not compared
    assert (cat["compared"], cat["agreed_with_settled"]) == (3, 2)
    assert cat["cohen_kappa"] == pytest.approx(0.0, abs=1e-9)
    dan = reviewers["dan"]  # adjudications only
    assert (dan["compared"], dan["percent_agreement"], dan["cohen_kappa"]) == (0, None, None)

    # Across predictors: number answers count towards agreement but not towards kappa.
    everyone = _by_name(review_stats(now=NOW))
    assert (everyone["ann"]["compared"], everyone["ann"]["agreed_with_settled"]) == (8, 6)
    assert everyone["ann"]["cohen_kappa"] == pytest.approx(2 / 3, abs=1e-6)
    price_only = _by_name(review_stats(predictor=history["price"], now=NOW))
    assert price_only["bob"]["cohen_kappa"] is None and price_only["bob"]["agreed_with_settled"] == 1


def test_agreement_figures_use_a_number_outputs_tolerance(tmp_path):
    price = _load(tmp_path, {
        "slug": "price", "input": {"area": {"type": "number"}}, "output": {"type": "number", "agree_within": 10},
        "reviews_required": 2, "routing": {"mode": "human"},
    })
    ann, bob, cat = (factories.reviewer_with_token(n, password=None)[0] for n in ("ann", "bob", "cat"))
    _review(price, {"area": 1}, at(0), [(ann, 100, at(1), 10), (bob, 108, at(2), 10)])  # agreed: settles on 104
    _review(price, {"area": 2}, at(5), [(ann, 100, at(6), 10), (bob, 150, at(7), 10)],
            adjudication=(cat, 149, at(8), 10))  # disputed; the adjudicator's 149
    stats = review_stats(now=NOW)
    assert stats["agreement"]["price"] == {
        "output_type": "number", "tasks": 2, "raters_per_task": 2, "fleiss_kappa": None,
        "observed_agreement": 0.5, "percent_agreement": 50.0, "disputed": 1,
    }
    reviewers = _by_name(stats)
    # Against the settled answers 104 and 149: ann (100, 100) agrees once, bob (108, 150) twice.
    assert (reviewers["ann"]["compared"], reviewers["ann"]["agreed_with_settled"]) == (2, 1)
    assert (reviewers["bob"]["compared"], reviewers["bob"]["agreed_with_settled"]) == (2, 2)
    assert pairwise_agreement([100, 108, 115], within=10) == pytest.approx(2 / 3)


def test_reviewer_throughput_and_timings(history):
    stats = review_stats(predictor=history["loan"], now=NOW)
    assert [row["reviewer"] for row in stats["reviewers"]] == ["ann", "bob", "cat", "dan"]
    reviewers = _by_name(stats)
    ann, bob, cat, dan = (reviewers[n] for n in ("ann", "bob", "cat", "dan"))
    # ann: handling 10 20 30 40 50 60 s in hours 0, 0, 0, 1, 1, 2; settled nothing.
    assert ann["decisions"] == 6 and ann["by_kind"] == {"routed": 6}
    assert ann["hours_worked"] == 3 and ann["decisions_per_hour_worked"] == 2.0
    assert ann["decisions_per_day"] == pytest.approx(6 / 7, abs=1e-6)
    assert ann["handling_seconds"] == {"median": 35.0, "p90": 55.0}
    assert ann["tasks_settled"] == 0 and ann["settle_seconds"] == {"median": None, "p90": None}
    # bob: handling 20 40 60 80 100 30; settled t1 (140 s), t2 (160 s), t6 (220 s).
    assert bob["decisions"] == 6 and bob["handling_seconds"] == {"median": 50.0, "p90": 90.0}
    assert bob["tasks_settled"] == 3 and bob["settle_seconds"] == {"median": 160.0, "p90": 208.0}
    # cat: one adjudication and three routed, in hours 0, 1, 1, 2; settled t3 (270 s), t4 (170 s).
    assert cat["by_kind"] == {"adjudication": 1, "routed": 3}
    assert cat["decisions_per_hour_worked"] == pytest.approx(4 / 3, abs=1e-6)
    assert cat["handling_seconds"] == {"median": 45.0, "p90": 64.0}
    assert cat["settle_seconds"] == {"median": 220.0, "p90": 260.0}
    # dan: adjudications of t5 (settled 330 s after t5 was created) and t7 (250 s).
    assert dan["by_kind"] == {"adjudication": 2} and dan["hours_worked"] == 2
    assert dan["handling_seconds"] == {"median": 50.0, "p90": 82.0}
    assert dan["settle_seconds"] == {"median": 290.0, "p90": 322.0}


def test_predictor_throughput_and_totals(history):
    stats = review_stats(now=NOW)
    loan = stats["throughput"]["predictors"]["loan-approval"]
    assert loan["decisions"] == 18 and loan["reviewers"] == 4
    assert loan["by_kind"] == {"adjudication": 3, "routed": 15}
    assert loan["hours_worked"] == 11  # reviewer-hours: ann 3, bob 3, cat 3, dan 2
    assert loan["decisions_per_hour_worked"] == pytest.approx(18 / 11, abs=1e-6)
    assert loan["decisions_per_day"] == pytest.approx(18 / 7, abs=1e-6)
    assert loan["handling_seconds"] == {"median": 40.0, "p90": 83.0}
    # t1..t7 settled after 140, 160, 270, 170, 330, 220, 250 s (disputes counted once, at
    # their adjudication, from the disputed task's creation).
    assert loan["tasks_settled"] == 7
    assert loan["settle_seconds"] == {"median": 220.0, "p90": 294.0}
    price = stats["throughput"]["predictors"]["price"]
    assert (price["decisions"], price["tasks_settled"]) == (5, 2)
    assert price["settle_seconds"] == {"median": 190.0, "p90": 226.0}  # 145 s and 235 s
    total = stats["throughput"]
    assert (total["decisions"], total["tasks_settled"], total["reviewers"]) == (23, 9, 4)
    assert stats["window"]["days"] == 7 and stats["predictor"] is None
    # The old task (nine days ago) counts once the window reaches it.
    wider = review_stats(now=NOW, days=10)["throughput"]
    assert (wider["decisions"], wider["tasks_settled"]) == (25, 10)


def test_empty_window(history):
    stats = review_stats(predictor=history["loan"], now=NOW + timedelta(days=30))
    assert stats["reviewers"] == []
    assert stats["agreement"]["loan-approval"]["tasks"] == 0
    assert stats["agreement"]["loan-approval"]["fleiss_kappa"] is None
    assert stats["throughput"]["decisions"] == 0
    assert stats["throughput"]["decisions_per_hour_worked"] is None


# -- over HTTP ----------------------------------------------------------------------------------

def test_stats_endpoint(history, operator_api, reviewer_api, anon_api):
    response = operator_api.get("/review/stats", {"predictor": "loan-approval", "days": 7})
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == {"window", "predictor", "agreement", "reviewers", "throughput"}
    assert body["predictor"] == "loan-approval" and list(body["agreement"]) == ["loan-approval"]
    assert body["agreement"]["loan-approval"]["tasks"] == 7
    assert {row["reviewer"] for row in body["reviewers"]} == {"ann", "bob", "cat", "dan"}
    assert list(body["throughput"]["predictors"]) == ["loan-approval"]
    everything = operator_api.get("/review/stats").json()
    assert set(everything["agreement"]) == {"loan-approval", "price"}
    assert everything["window"]["days"] == 7

    for bad in ("0", "abc", "367", "-1", "1.5"):
        response = operator_api.get("/review/stats", {"days": bad})
        assert response.status_code == 422 and response.json()["errors"][0]["field"] == "days"
    for unknown in ("nope", "loan-approval\x00", "../x"):
        assert operator_api.get("/review/stats", {"predictor": unknown}).status_code == 404
    # Operators only: reviewers do not see each other's numbers; strangers see nothing.
    assert reviewer_api.get("/review/stats").status_code == 403
    assert anon_api.get("/review/stats").status_code in (401, 403)


def test_stats_endpoint_is_in_the_openapi_schema(operator_api):
    schema = operator_api.get("/api/schema", HTTP_ACCEPT="application/json").json()
    operation = schema["paths"]["/review/stats"]["get"]
    assert operation["operationId"] == "review_stats"
    assert {p["name"] for p in operation["parameters"]} == {"predictor", "days"}
