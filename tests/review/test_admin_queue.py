"""The reviewer's queue in the admin: counts, claim next, the decision page, deciding through
it (with CSRF), lost leases, release and extend, and what a reviewer may see."""
from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from gateway.definitions import predictors_load
from gateway.models import AnswerSource, Prediction, PredictionStatus
from gateway.services import prediction_create
from review.models import Decision, Label, LabelSource, ReviewTask, TaskKind, TaskStatus
from review.services import review_task_claim_next, review_task_create, review_task_decide
from tests import factories

pytestmark = pytest.mark.django_db

QUEUE = "admin:review_reviewtask_queue"
CLAIM = "admin:review_reviewtask_claim"


def _url(name: str, task=None) -> str:
    if task is None:
        return reverse(name)
    return reverse(f"admin:review_reviewtask_{name}", args=[task.pk])


def _pending(predictor, **input_overrides) -> Prediction:
    prediction, _ = prediction_create(
        predictor=predictor, policy=predictor.routing, client=None, clean_input=factories.loan_input(**input_overrides)
    )
    return prediction


def _task(prediction) -> ReviewTask:
    return prediction.review_tasks.get(kind=TaskKind.ROUTED)


def _csrf(response) -> str:
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', response.content.decode())
    assert match, "no CSRF token in the page"
    return match.group(1)


def test_queue_page_shows_claimable_counts_by_kind(loan, rita_client):
    predictions = [_pending(loan) for _ in range(3)]
    for prediction in predictions[:2]:
        review_task_create(prediction=prediction, kind=TaskKind.LOW_CONFIDENCE, reason="unsure")
    sam, _ = factories.reviewer_with_token("sam")
    held_by_sam = review_task_claim_next(reviewer=sam)  # a live lease: not claimable
    assert held_by_sam.kind == TaskKind.LOW_CONFIDENCE

    response = rita_client.get(_url(QUEUE))

    assert response.status_code == 200
    counts = [(row["kind"], row["priority"], row["count"]) for row in response.context["counts"]]
    assert counts == [("low_confidence", 30, 1), ("routed", 20, 3)]
    assert response.context["total"] == 4
    html = response.content.decode()
    assert 'data-kind="low_confidence"' in html and 'id="oz-total">4<' in html
    assert "Claim next" in html and "You hold no tasks" in html


def test_queue_pages_need_the_decide_permission(loan, client, operator):
    task = _task(_pending(loan))
    plain_staff = get_user_model().objects.create_user("pat", password="pw-pat-123", is_staff=True)
    for user in (operator[0], plain_staff):  # operators may view tasks, not decide them
        client.force_login(user)
        assert client.get(_url(QUEUE)).status_code == 403
        assert client.post(_url(CLAIM)).status_code == 403
        assert client.get(_url("decide", task)).status_code == 403
        assert client.post(_url("release", task)).status_code == 403
    client.logout()
    response = client.get(_url(QUEUE))
    assert response.status_code == 302 and reverse("admin:login") in response["Location"]
    task.refresh_from_db()
    assert task.status == TaskStatus.OPEN


def test_a_refused_queue_page_says_why_inside_the_admin(loan, client, operator):
    client.force_login(operator[0])
    response = client.get(_url(QUEUE))
    assert response.status_code == 403
    html = response.content.decode()
    assert "The review queue is for reviewers" in html
    assert 'id="site-name"' in html and reverse("admin:index") in html  # the admin's header and a way back
    assert reverse("admin:logout") in html  # and the user's tools, to sign in as someone else


def test_claim_next_opens_the_oldest_highest_priority_task(loan, rita_client, rita):
    _pending(loan)
    _pending(loan)
    low_confidence = review_task_create(prediction=_pending(loan), kind=TaskKind.LOW_CONFIDENCE, reason="unsure")

    response = rita_client.post(_url(CLAIM))

    assert response.status_code == 302
    assert response["Location"] == _url("decide", low_confidence)
    low_confidence.refresh_from_db()
    assert (low_confidence.status, low_confidence.claimed_by) == (TaskStatus.CLAIMED, rita)
    # Pressing it again resumes the held task instead of taking a second lease.
    assert rita_client.post(_url(CLAIM))["Location"] == _url("decide", low_confidence)
    assert ReviewTask.objects.filter(claimed_by=rita).count() == 1
    queue = rita_client.get(_url(QUEUE))
    assert [item["task"] for item in queue.context["held"]] == [low_confidence]
    assert _url("decide", low_confidence) in queue.content.decode()


def test_claim_next_on_an_empty_queue_says_so(rita_client):
    response = rita_client.post(_url(CLAIM), follow=True)
    assert response.redirect_chain == [(_url(QUEUE), 302)]
    assert "Nothing to review" in response.content.decode()


def test_decision_page_shows_the_input_and_the_answer_choices(loan, rita_client, rita):
    task = _task(_pending(loan, amount=12000, sector="food", years_trading=4))
    review_task_claim_next(reviewer=rita)

    response = rita_client.get(_url("decide", task))

    assert response.status_code == 200
    html = response.content.decode()
    rows = {row.name: row for row in response.context["rows"]}
    assert rows["amount"].value == "12,000 GBP"
    assert rows["years_trading"].value == "4 years"
    assert rows["sector"].value == "food"
    assert rows["has_collateral"].value == "no"
    assert rows["note"].missing and rows["note"].value == "—"
    assert 'data-field="amount">12,000 GBP</dd>' in html
    assert 'data-field="sector">food</dd>' in html
    assert re.search(r'<input type="radio" name="output" value="approve"[^>]*>\s*<kbd>1</kbd> approve', html)
    assert re.search(r'<input type="radio" name="output" value="refer"[^>]*>\s*<kbd>2</kbd> refer', html)
    assert "routing mode is human" in html  # the task's reason
    assert 'id="oz-release-form"' in html and 'id="oz-extend-form"' in html
    assert "You hold this task" in html


def test_text_inputs_are_shown_whole_and_escaped(loan, rita_client, rita):
    note = "We bake <bread> & cakes.\n" + "x" * 1500
    task = _task(_pending(loan, note=note))
    review_task_claim_next(reviewer=rita)
    html = rita_client.get(_url("decide", task)).content.decode()
    assert "We bake &lt;bread&gt; &amp; cakes.\n" + "x" * 1500 in html
    assert "<bread>" not in html


def test_deciding_through_the_page_completes_the_prediction_and_opens_the_next_task(loan, rita):
    first, second = _pending(loan), _pending(loan, amount=30000)
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(rita)

    queue = browser.get(_url(QUEUE))
    assert browser.post(_url(CLAIM)).status_code == 403  # no CSRF token, no claim
    claimed = browser.post(_url(CLAIM), {"csrfmiddlewaretoken": _csrf(queue)})
    assert claimed["Location"] == _url("decide", _task(first))
    page = browser.get(claimed["Location"])
    decided = browser.post(
        claimed["Location"], {"csrfmiddlewaretoken": _csrf(page), "output": "refer", "note": "too early to tell"}
    )

    # The next task opens at once, already claimed for the same reviewer.
    assert decided.status_code == 302
    assert decided["Location"] == _url("decide", _task(second))
    next_task = _task(second)
    assert (next_task.status, next_task.claimed_by) == (TaskStatus.CLAIMED, rita)

    first.refresh_from_db()
    assert (first.status, first.source, first.output) == (PredictionStatus.ANSWERED, AnswerSource.HUMAN, "refer")
    task = _task(first)
    assert task.status == TaskStatus.DECIDED
    decision = Decision.objects.get(task=task)
    assert (decision.reviewer, decision.output, decision.note) == (rita, "refer", "too early to tell")
    assert decision.history.get().history_user == rita
    label = Label.objects.get(prediction=first)
    assert (label.source, label.target, label.created_by, label.task) == (LabelSource.REVIEW, "refer", rita, task)

    next_page = browser.get(decided["Location"])
    assert f"Task #{task.pk}: answered refer." in next_page.content.decode()
    assert 'data-field="amount">30,000 GBP</dd>' in next_page.content.decode()


def test_the_last_decision_returns_to_the_queue(loan, rita_client, rita):
    task = _task(_pending(loan))
    review_task_claim_next(reviewer=rita)
    response = rita_client.post(_url("decide", task), {"output": "approve"}, follow=True)
    assert response.redirect_chain == [(_url(QUEUE), 302)]
    assert "the queue is empty" in response.content.decode()


def test_a_decision_after_the_lease_expired_changes_nothing(loan, rita_client, rita):
    prediction = _pending(loan)
    task = review_task_claim_next(reviewer=rita)
    ReviewTask.objects.filter(pk=task.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    history_before = task.history.count()

    response = rita_client.post(_url("decide", task), {"output": "approve"}, follow=True)

    assert response.redirect_chain == [(_url(QUEUE), 302)]
    assert "your lease on this task expired" in response.content.decode()
    prediction.refresh_from_db()
    assert (prediction.status, prediction.output) == (PredictionStatus.PENDING, None)
    assert not Decision.objects.exists() and not Label.objects.exists()
    task.refresh_from_db()
    assert task.status == TaskStatus.CLAIMED and task.history.count() == history_before
    # The page itself no longer offers the form.
    page = rita_client.get(_url("decide", task)).content.decode()
    assert 'name="output"' not in page and "Your lease on this task expired" in page


def test_an_answer_outside_the_labels_is_a_form_error(loan, rita_client, rita):
    task = _task(_pending(loan))
    review_task_claim_next(reviewer=rita)
    response = rita_client.post(_url("decide", task), {"output": "maybe"})
    assert response.status_code == 200
    assert response.context["form"].errors["output"]
    assert not Decision.objects.exists()
    task.refresh_from_db()
    assert task.status == TaskStatus.CLAIMED


def test_release_gives_the_task_back_and_extend_renews_the_lease(loan, rita_client, rita, settings):
    task = _task(_pending(loan))
    review_task_claim_next(reviewer=rita)
    ReviewTask.objects.filter(pk=task.pk).update(lease_expires_at=timezone.now() + timedelta(seconds=5))

    response = rita_client.post(_url("extend", task))
    assert response["Location"] == _url("decide", task)
    task.refresh_from_db()
    assert task.lease_expires_at > timezone.now() + timedelta(seconds=settings.OZ_REVIEW_LEASE_SECONDS - 60)

    response = rita_client.post(_url("release", task), follow=True)
    assert response.redirect_chain == [(_url(QUEUE), 302)]
    assert "went back to the queue" in response.content.decode()
    task.refresh_from_db()
    assert (task.status, task.claimed_by, task.lease_expires_at) == (TaskStatus.OPEN, None, None)
    assert rita_client.get(_url("extend", task)).status_code == 405  # POST only


def test_other_reviewers_see_a_held_task_read_only(loan, client, rita):
    task = _task(_pending(loan))
    review_task_claim_next(reviewer=rita)
    sam, _ = factories.reviewer_with_token("sam")
    client.force_login(sam)

    page = client.get(_url("decide", task))
    assert page.status_code == 200
    html = page.content.decode()
    assert 'name="output"' not in html and 'id="oz-release-form"' not in html
    assert "Held by rita" in html

    response = client.post(_url("decide", task), {"output": "approve"}, follow=True)
    assert "you do not hold this task" in response.content.decode()
    task.refresh_from_db()
    assert (task.status, task.claimed_by) == (TaskStatus.CLAIMED, rita)
    assert client.post(_url("release", task)).status_code == 302
    task.refresh_from_db()
    assert task.claimed_by == rita


def test_number_outputs_get_a_bounded_number_input(rita_client, rita, tmp_path):
    (tmp_path / "price.yaml").write_text(
        "slug: price\n"
        "input:\n  area: {type: number, unit: m2, required: true}\n"
        "output: {type: number, minimum: 0, maximum: 5000000, unit: GBP}\n"
    )
    predictors_load(tmp_path / "price.yaml")
    from gateway.models import Predictor

    predictor = Predictor.objects.select_related("routing").get(slug="price")
    prediction, _ = prediction_create(predictor=predictor, policy=predictor.routing, client=None, clean_input={"area": 72.5})
    task = review_task_claim_next(reviewer=rita)

    html = rita_client.get(_url("decide", task)).content.decode()
    assert 'data-field="area">72.5 m2</dd>' in html
    assert re.search(r'<input type="number" name="output"[^>]*min="0"[^>]*max="5000000"', html) or re.search(
        r'<input type="number" name="output"[^>]*max="5000000"[^>]*min="0"', html
    )
    assert "<kbd>1</kbd>" not in html

    response = rita_client.post(_url("decide", task), {"output": "-5"})
    assert response.status_code == 200 and response.context["form"].errors["output"]
    rita_client.post(_url("decide", task), {"output": "350000.5"})
    prediction.refresh_from_db()
    assert prediction.output == 350000.5 and prediction.source == AnswerSource.HUMAN


def test_a_reviewer_sees_the_queue_and_their_tasks_but_nothing_else(loan, rita_client):
    index = rita_client.get(reverse("admin:index"))
    assert index.status_code == 200
    models = {(app["app_label"], model["object_name"]) for app in index.context["app_list"] for model in app["models"]}
    assert models == {("gateway", "Predictor"), ("review", "ReviewTask")}
    assert f'href="{_url(QUEUE)}"' in index.content.decode()
    assert "View site" not in index.content.decode()  # there is no site at / to view

    changelist = rita_client.get(reverse("admin:review_reviewtask_changelist"))
    assert changelist.status_code == 200 and "Open the review queue" in changelist.content.decode()
    for name in (
        "gateway_apiclient", "gateway_apikey", "gateway_usertoken", "gateway_webhookdelivery", "gateway_prediction",
        "gateway_routingpolicy", "review_decision", "review_label", "models_registry_trainingrun",
        "models_registry_modelversion", "auth_user",
    ):
        assert rita_client.get(reverse(f"admin:{name}_changelist")).status_code == 403, name


def test_a_reviewers_task_list_holds_only_the_tasks_they_hold_or_answered(loan, rita_client, rita, client, operator):
    answered, others, held = _pending(loan), _pending(loan), _pending(loan)  # claimed in this order
    sam = factories.reviewer_with_token("sam-list", password=None)[0]
    for prediction, reviewer in ((answered, rita), (others, sam)):
        task = review_task_claim_next(reviewer=reviewer)
        assert task.prediction_id == prediction.pk
        review_task_decide(task_id=task.pk, reviewer=reviewer, output="approve")
    mine = review_task_claim_next(reviewer=rita)
    assert mine.prediction_id == held.pk

    listed = rita_client.get(reverse("admin:review_reviewtask_changelist")).context["cl"].result_list
    assert {t.prediction_id for t in listed} == {held.pk, answered.pk}
    # Another reviewer's task is not there to open either; the operator sees every task.
    other_task = others.review_tasks.get()
    assert rita_client.get(reverse("admin:review_reviewtask_change", args=[other_task.pk])).status_code == 302
    # Nor its history, which would show the answers (simple-history serves it apart from the list).
    history = reverse("admin:review_reviewtask_history", args=[other_task.pk])
    assert rita_client.get(history).status_code == 403
    record = other_task.history.first()
    assert rita_client.get(reverse("admin:review_reviewtask_simple_history", args=[other_task.pk, record.pk])).status_code == 403
    assert rita_client.get(reverse("admin:review_reviewtask_history", args=[answered.review_tasks.get().pk])).status_code == 200
    # The decision page of a task that is not hers says which it is without linking to a page she cannot open.
    page = rita_client.get(_url("decide", other_task)).content.decode()
    assert reverse("admin:review_reviewtask_change", args=[other_task.pk]) not in page and f"#{other_task.pk}" in page
    client.force_login(operator[0])
    assert len(client.get(reverse("admin:review_reviewtask_changelist")).context["cl"].result_list) == 3


def test_operators_do_not_get_the_queue_box_on_the_index(client, operator):
    client.force_login(operator[0])
    html = client.get(reverse("admin:index")).content.decode()
    assert "Open the review queue" not in html


def test_the_model_suggestion_is_shown_beside_the_input(loan, rita_client, rita):
    prediction = _pending(loan)
    Prediction.objects.filter(pk=prediction.pk).update(
        status=PredictionStatus.ANSWERED, source=AnswerSource.MODEL, output="approve", confidence=0.55,
        scores={"approve": 0.55, "refer": 0.45}, model_version=3, provisional=True,
    )
    task = review_task_claim_next(reviewer=rita)
    html = rita_client.get(_url("decide", task)).content.decode()
    suggestion = html[html.index('id="oz-suggestion"'):]
    assert "Suggestion from the model, provisional" in suggestion
    assert "<strong>approve</strong>" in suggestion and "55%" in suggestion and "version 3" in suggestion
    assert "approve 0.550, refer 0.450" in suggestion
