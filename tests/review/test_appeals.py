"""End-user appeals over HTTP: the public page and its form (CSRF-protected), the same
endpoint as JSON, the status endpoint, throttling per link and per address, and the
operators' appeal statistics. The whole loop runs through the real services: a reviewer
answers, the person appeals, a different reviewer upholds or overturns."""
from __future__ import annotations

import json
import re
from datetime import timedelta
from urllib.parse import urlparse

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from gateway.models import Prediction, PredictionStatus, WebhookDelivery
from gateway.services import prediction_create, routing_update
from review.models import Appeal, AppealStatus, Label, LabelSource, ReviewTask, TaskKind, TaskStatus
from review.services import review_task_claim_next, review_task_decide
from tests import factories
from tests.gateway.helpers import error_fields, post_json, problem_body

pytestmark = pytest.mark.django_db

CALLBACK = "https://client.example/hooks/oz"


# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------

@pytest.fixture
def acme(client_key):
    """The API client, allowed to name client.example in callback URLs."""
    client = client_key[0]
    client.webhook_hosts = ["client.example"]
    client.save(update_fields=["webhook_hosts"])
    return client


def _answered_by(reviewer, client_api, output="refer", decision_note="", **input_overrides) -> Prediction:
    """A prediction made through POST /predict (human routing, with a callback) and
    answered by `reviewer` through the queue."""
    response = post_json(client_api, "/predict/loan-approval",
                         {"input": factories.loan_input(**input_overrides), "callback_url": CALLBACK})
    assert response.status_code == 202, response.content
    prediction = Prediction.objects.get(pk=response.json()["id"])
    task = review_task_claim_next(reviewer=reviewer)
    assert task.prediction_id == prediction.pk
    review_task_decide(task_id=task.pk, reviewer=reviewer, output=output, note=decision_note)
    prediction.refresh_from_db()
    assert (prediction.status, prediction.output) == (PredictionStatus.ANSWERED, output)
    return prediction


def _appeal_url(client_api, prediction) -> str:
    """The link, as the client reads it from GET /predictions/<id>."""
    body = client_api.get(f"/predictions/{prediction.pk}").json()
    assert body["appeal_url"].startswith("/appeal/")
    return body["appeal_url"]


def _token(url: str) -> str:
    return urlparse(url).path.split("/")[2]


def _csrf(response) -> str:
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', response.content.decode())
    assert match, "no CSRF token in the page"
    return match.group(1)


def _html(response) -> str:
    assert response["Content-Type"].startswith("text/html"), response["Content-Type"]
    return response.content.decode()


def _json_get(url: str, **extra):
    return APIClient().get(url, HTTP_ACCEPT="application/json", **extra)


def _file_json(url: str, body, **extra):
    return post_json(APIClient(), url, body, **extra)


def _pending(loan) -> Prediction:
    prediction, _ = prediction_create(
        predictor=loan, policy=loan.routing, client=None, clean_input=factories.loan_input()
    )
    return prediction


def _rule_answered(loan, **input_overrides) -> Prediction:
    routing_update(predictor=loan, changes={"mode": "rule"})
    loan.refresh_from_db()
    prediction, _ = prediction_create(
        predictor=loan, policy=loan.routing, client=None, clean_input=factories.loan_input(**input_overrides)
    )
    assert prediction.status == PredictionStatus.ANSWERED and prediction.source == "rule"
    return prediction


def _path(prediction) -> str:
    from gateway.appeal_tokens import appeal_path

    return appeal_path(prediction.pk)


# ---------------------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------------------

def test_the_page_shows_the_decision_in_plain_words_and_an_accessible_form(loan, acme, client_api, rita):
    prediction = _answered_by(rita, client_api, "refer", amount=4321, note="Family bakery,\n12 years <b>")
    browser = Client(enforce_csrf_checks=True)

    response = browser.get(_appeal_url(client_api, prediction))

    assert response.status_code == 200
    html = _html(response)
    assert '<html lang="en">' in html
    when = timezone.localtime(prediction.answered_at)
    sentence = (f"Your application for loan-approval was answered: <strong>refer</strong>, "
                f"on {when.day} {when:%b %Y}, by a person.")
    assert sentence in html
    # The input in the schema's order, with units; text whole and escaped; absent fields said so.
    fields = re.findall(r'data-field="(\w+)">([^<]*)<', html)
    assert fields == [
        ("amount", "4,321 GBP"), ("years_trading", "4 years"), ("sector", "food"), ("has_collateral", "no"),
        ("note", "Family bakery,\n12 years &lt;b&gt;"),
    ]
    assert "Years trading" in html and "Amount requested" in html
    deadline = timezone.localtime(prediction.answered_at + timedelta(days=30))
    assert f"You can appeal until <strong>{deadline.day} {deadline:%b %Y}</strong>" in html
    # The form: CSRF token, every input labelled, radio buttons for the labels.
    _csrf(response)
    assert '<label for="id_reason">' in html and 'id="id_reason"' in html and "required" in html
    assert "<legend>What do you think the decision should be? (optional)</legend>" in html
    for i, label in enumerate(["", "approve", "refer"]):
        assert f'<label class="choice" for="id_requested_output_{i}"><input type="radio" name="requested_output" value="{label}"' in html
    # Plain HTML: no scripts, nothing loaded from elsewhere, and the link is not passed on.
    assert "<script" not in html and "src=" not in html and "http://" not in html and "https://" not in html
    assert response["Referrer-Policy"] == "same-origin"
    assert "no-store" in response["Cache-Control"]
    assert "Accept" in response["Vary"]
    assert "csrftoken" in response.cookies


def test_the_page_names_rules_and_says_when_there_is_nothing_to_appeal(loan):
    pending = _pending(loan)
    html = _html(Client().get(_path(pending)))
    assert "has not been answered yet" in html and "There is no decision to appeal yet" in html
    assert "<form" not in html

    Prediction.objects.filter(pk=pending.pk).update(status=PredictionStatus.EXPIRED)
    html = _html(Client().get(_path(pending)))
    assert "could not be answered in time" in html and "<form" not in html

    by_rule = _rule_answered(loan)
    html = _html(Client().get(_path(by_rule)))
    assert "answered: <strong>approve</strong>" in html and "by our automatic rules." in html


def test_a_number_output_gets_a_number_field(tmp_path):
    from gateway.definitions import predictors_load

    (tmp_path / "price.yaml").write_text(
        "slug: price\ninput:\n  area: {type: number, unit: m2}\n"
        "output: {type: number, minimum: 0, maximum: 1000000, unit: GBP}\nrouting: {mode: rule}\n"
        "rules:\n  - default: 250000\n"
    )
    predictors_load(tmp_path / "price.yaml")
    from gateway.models import Predictor

    predictor = Predictor.objects.select_related("routing").get(slug="price")
    prediction, _ = prediction_create(predictor=predictor, policy=predictor.routing, client=None, clean_input={"area": 80})

    browser = Client()
    html = _html(browser.get(_path(prediction)))
    assert "answered: <strong>250,000 GBP</strong>" in html
    assert '<input type="number" step="any" name="requested_output" id="requested_output" value="" min="0" max="1000000"' in html
    assert '<label for="requested_output">' in html and "in GBP" in html

    response = browser.post(_path(prediction), {"reason": "Too high", "requested_output": "-5"})
    assert response.status_code == 422
    assert 'aria-invalid="true"' in _html(response)
    response = browser.post(_path(prediction), {"reason": "Too high", "requested_output": "199999.5"})
    assert response.status_code == 303
    assert Appeal.objects.get(prediction=prediction).requested_output == 199999.5


def test_an_unknown_link_is_a_plain_404_page_for_people_and_a_problem_for_programs(loan):
    for url in ["/appeal/not-a-token", "/appeal/" + "x" * 43, "/appeal/", "/appeal/x/y/z"]:
        response = Client().get(url)
        assert response.status_code == 404, url
        assert "This appeal link does not work" in _html(response)
    problem_body(_json_get("/appeal/not-a-token"), 404)
    problem_body(_file_json("/appeal/not-a-token", {"reason": "x"}), 404)
    problem_body(_json_get("/appeal/not-a-token/status"), 404)
    # The status endpoint is JSON whatever the Accept header.
    problem_body(Client().get("/appeal/not-a-token/status"), 404)


# ---------------------------------------------------------------------------------------
# The whole loop, through the form
# ---------------------------------------------------------------------------------------

def test_an_appeal_through_the_form_is_overturned_by_another_reviewer(loan, acme, client_api, rita, sam):
    prediction = _answered_by(rita, client_api, "refer", decision_note="short trading history")
    original_task = prediction.review_tasks.get(kind=TaskKind.ROUTED)
    url = _appeal_url(client_api, prediction)
    browser = Client(enforce_csrf_checks=True)

    # Without the CSRF token the form is refused and nothing is filed.
    response = browser.post(url, {"reason": "I have traded for 12 years"})
    assert response.status_code == 403 and "This form has expired" in _html(response)
    assert not Appeal.objects.exists()

    page = browser.get(url)
    response = browser.post(url, {
        "csrfmiddlewaretoken": _csrf(page),
        "reason": "  I have traded for 12 years; the accounts are attached to my file.  ",
        "requested_output": "approve",
    })

    assert response.status_code == 303
    assert response["Location"] == f"{url}#appeal"
    appeal = Appeal.objects.get(prediction=prediction)
    assert (appeal.status, appeal.reason, appeal.requested_output) == (
        AppealStatus.OPEN, "I have traded for 12 years; the accounts are attached to my file.", "approve")
    assert (appeal.original_output, appeal.original_source) == ("refer", "human")
    task = appeal.task
    assert (task.kind, task.status, task.origin, task.excluded_reviewer) == (
        TaskKind.APPEAL, TaskStatus.OPEN, original_task, rita)
    html = _html(browser.get(url))
    assert "We have received your appeal" in html and "<form" not in html
    assert "I have traded for 12 years" in html and "You asked for" in html
    assert _json_get(f"{url}/status").json()["status"] == "open"

    # The original decider cannot take the appeal; another reviewer can.
    assert review_task_claim_next(reviewer=rita) is None
    claimed = review_task_claim_next(reviewer=sam)
    assert claimed.pk == task.pk
    review_task_decide(task_id=task.pk, reviewer=sam, output="approve",
                       note="Twelve years of accounts show steady trading.")

    prediction.refresh_from_db()
    assert (prediction.status, prediction.output, prediction.source) == (PredictionStatus.REVISED, "approve", "human")
    assert prediction.history.filter(status=PredictionStatus.ANSWERED, output="refer").exists()
    revised = WebhookDelivery.objects.get(prediction=prediction, event="prediction.revised")
    assert revised.url == CALLBACK and revised.payload["data"]["output"] == "approve"
    review_label = Label.objects.get(prediction=prediction, source=LabelSource.REVIEW)
    appeal_label = Label.objects.get(prediction=prediction, source=LabelSource.APPEAL)
    assert (review_label.target, review_label.superseded_by) == ("refer", appeal_label)
    assert (appeal_label.target, appeal_label.superseded_by, appeal_label.created_by) == ("approve", None, sam)

    status = _json_get(f"{url}/status").json()
    assert status["status"] == "overturned"
    assert status["outcome"] == "approve"
    assert status["note"] == "Twelve years of accounts show steady trading."
    assert status["decided_at"] is not None
    assert status["prediction"] == {"status": "revised", "output": "approve"}

    html = _html(browser.get(url))
    assert "Your appeal was successful" in html and "the decision was changed to <strong>approve</strong>" in html
    assert "Twelve years of accounts show steady trading." in html
    assert "answered: <strong>approve</strong>" in html and "This answer replaced an earlier one." in html


def test_an_upheld_appeal_keeps_the_answer_and_tells_the_person_why(loan, acme, client_api, rita, sam):
    prediction = _answered_by(rita, client_api, "refer")
    url = _appeal_url(client_api, prediction)
    assert _file_json(url, {"reason": "Please look again"}).status_code == 201
    task = ReviewTask.objects.get(kind=TaskKind.APPEAL)
    assert review_task_claim_next(reviewer=sam).pk == task.pk

    review_task_decide(task_id=task.pk, reviewer=sam, output="refer", note="The amount is above our limit.")

    prediction.refresh_from_db()
    assert (prediction.status, prediction.output) == (PredictionStatus.ANSWERED, "refer")
    assert not WebhookDelivery.objects.filter(prediction=prediction, event="prediction.revised").exists()
    appeal = Appeal.objects.get()
    assert (appeal.status, appeal.outcome_output, appeal.decided_by) == (AppealStatus.UPHELD, "refer", sam)
    current = Label.objects.get(prediction=prediction, superseded_by__isnull=True)
    assert (current.source, current.target) == (LabelSource.APPEAL, "refer")
    status = _json_get(f"{url}/status").json()
    assert (status["status"], status["outcome"], status["note"]) == ("upheld", "refer", "The amount is above our limit.")
    html = _html(Client().get(url))
    assert "The decision stands." in html and "The amount is above our limit." in html
    # Decided: the person may appeal again while the window is open.
    assert "Still think the decision is wrong?" in html and "<form" in html


def test_form_errors_are_shown_beside_the_fields(loan, rita, client_api, acme):
    prediction = _answered_by(rita, client_api)
    url = _appeal_url(client_api, prediction)
    browser = Client()

    response = browser.post(url, {"reason": "   ", "requested_output": "maybe"})

    assert response.status_code == 422
    html = _html(response)
    assert html.count('class="error"') == 2
    assert "Please say why you think the decision is wrong." in html
    assert "Please choose one of the answers listed." in html
    assert '<a href="#id_reason">' in html and '<a href="#requested_output">' in html
    assert 'aria-invalid="true"' in html and "<title>Error:" in html
    assert not Appeal.objects.exists()
    # NUL characters (which PostgreSQL cannot store) are a form error, not a 500.
    response = browser.post(url, {"reason": "bad\x00byte"})
    assert response.status_code == 422 and not Appeal.objects.exists()


def test_a_second_form_post_while_an_appeal_is_open_is_refused_in_words(loan, rita, client_api, acme):
    prediction = _answered_by(rita, client_api)
    url = _appeal_url(client_api, prediction)
    browser = Client()
    assert browser.post(url, {"reason": "first"}).status_code == 303

    response = browser.post(url, {"reason": "second"})

    assert response.status_code == 409
    html = _html(response)
    assert "Your appeal was not sent" in html and "An appeal of this decision is already open." in html
    assert Appeal.objects.count() == 1


# ---------------------------------------------------------------------------------------
# JSON
# ---------------------------------------------------------------------------------------

def test_json_appeals_201_then_409_while_open(loan, rita, client_api, acme):
    prediction = _answered_by(rita, client_api)
    url = _appeal_url(client_api, prediction)

    page = _json_get(url)
    assert page.status_code == 200 and page["Content-Type"] == "application/json"
    body = page.json()
    assert body["decision"] == {"status": "answered", "output": "refer", "source": "human", "provisional": False,
                                "answered_at": body["decision"]["answered_at"]}
    assert body["can_appeal"] is True and body["appeal"] is None and body["why_not"] is None
    assert body["input"] == factories.loan_input()
    assert body["links"] == {"self": url, "status": f"{url}/status"}
    # Nothing about anyone else, nor about the client or the routing.
    text = json.dumps(body)
    assert str(prediction.pk) not in text and "client.example" not in text and "route" not in text

    response = _file_json(url, {"reason": "Please look again", "requested_output": "approve"})

    assert response.status_code == 201
    appeal = response.json()
    assert appeal["status"] == "open" and appeal["reason"] == "Please look again"
    assert appeal["requested_output"] == "approve" and appeal["created_at"]
    assert appeal["id"] == Appeal.objects.get().pk
    assert appeal["status_url"] == f"{url}/status" == response["Location"]
    assert _json_get(url).json()["appeal"]["status"] == "open"
    assert _json_get(url).json()["can_appeal"] is False

    second = _file_json(url, {"reason": "And again"})
    assert "already open" in problem_body(second, 409)["detail"]
    assert Appeal.objects.count() == 1


@pytest.mark.parametrize("body, fields", [
    ({"reason": "x", "requested_output": "maybe"}, {"requested_output"}),
    ({"reason": "x", "requested_output": 1}, {"requested_output"}),
    ({"reason": ""}, {"reason"}),
    ({"reason": 5}, {"reason"}),
    ({"reason": "x" * 5001}, {"reason"}),
    ({"requested_output": "approve"}, {"reason"}),
    ({"reason": "x", "colour": "red"}, {"colour"}),
    ({"reason": "bad\x00byte"}, {"reason"}),
    (["reason"], {""}),
])
def test_invalid_json_appeals_are_422(loan, body, fields):
    prediction = _rule_answered(loan)
    response = _file_json(_path(prediction), body)
    assert error_fields(problem_body(response, 422)) == fields
    assert not Appeal.objects.exists()


def test_a_reason_that_is_not_text_is_told_so(loan):
    response = _file_json(_path(_rule_answered(loan)), {"reason": 5})
    (error,) = problem_body(response, 422)["errors"]
    assert error == {"field": "reason", "message": "must be text: why you think the decision is wrong"}


def test_malformed_json_is_400(loan):
    prediction = _rule_answered(loan)
    response = APIClient().post(_path(prediction), data="{nope", content_type="application/json")
    problem_body(response, 400)


def test_no_appeal_after_the_window_closes(loan):
    prediction = _rule_answered(loan)
    url = _path(prediction)
    Prediction.objects.filter(pk=prediction.pk).update(answered_at=timezone.now() - timedelta(days=30, minutes=1))

    problem = problem_body(_file_json(url, {"reason": "too late?"}), 409)
    assert "window closed" in problem["detail"]
    body = _json_get(url).json()
    assert body["can_appeal"] is False and body["why_not"].startswith("The time to appeal ended")
    html = _html(Client().get(url))
    assert "The time to appeal ended on" in html and "<form" not in html
    response = Client().post(url, {"reason": "too late?"})
    assert response.status_code == 409 and "The appeal window closed on" in _html(response)
    assert not Appeal.objects.exists()


def test_no_appeal_of_a_pending_prediction(loan):
    url = _path(_pending(loan))
    assert "no decision" in problem_body(_file_json(url, {"reason": "hurry up"}), 409)["detail"]
    assert _json_get(f"{url}/status").json() == {
        "status": "none", "outcome": None, "note": None, "decided_at": None, "created_at": None,
        "prediction": {"status": "pending", "output": None},
    }
    assert not Appeal.objects.exists()


def test_a_rule_answer_goes_to_any_reviewer(loan, rita):
    prediction = _rule_answered(loan)
    assert _file_json(_path(prediction), {"reason": "The rules are wrong"}).status_code == 201
    task = review_task_claim_next(reviewer=rita)
    assert task.kind == TaskKind.APPEAL and task.excluded_reviewer is None


def test_an_appeal_of_a_consensus_decision_goes_to_neither_reviewer_who_made_it(loan, rita, sam):
    loan.reviews_required = 2
    loan.save(update_fields=["reviews_required"])
    prediction = _pending(loan)
    for reviewer in (rita, sam):
        task = review_task_claim_next(reviewer=reviewer)
        review_task_decide(task_id=task.pk, reviewer=reviewer, output="refer")
    prediction.refresh_from_db()
    assert prediction.status == PredictionStatus.ANSWERED
    assert _file_json(_path(prediction), {"reason": "Both of you were wrong"}).status_code == 201

    assert review_task_claim_next(reviewer=rita) is None
    assert review_task_claim_next(reviewer=sam) is None
    tess = factories.reviewer_with_token("tess")[0]
    assert review_task_claim_next(reviewer=tess).kind == TaskKind.APPEAL


def test_a_second_appeal_goes_to_neither_the_decider_nor_who_upheld_the_first(loan, rita, sam):
    prediction = _pending(loan)
    task = review_task_claim_next(reviewer=rita)
    review_task_decide(task_id=task.pk, reviewer=rita, output="refer")
    prediction.refresh_from_db()
    assert _file_json(_path(prediction), {"reason": "I have collateral"}).status_code == 201
    assert review_task_claim_next(reviewer=rita) is None  # her decision is the one appealed
    appeal_task = review_task_claim_next(reviewer=sam)
    review_task_decide(task_id=appeal_task.pk, reviewer=sam, output="refer")  # upheld: still rita's answer
    assert _file_json(_path(prediction), {"reason": "Please look again"}).status_code == 201

    # The answer appealed is rita's and sam's now: neither may judge it.
    assert review_task_claim_next(reviewer=rita) is None
    assert review_task_claim_next(reviewer=sam) is None
    tess = factories.reviewer_with_token("tess")[0]
    assert review_task_claim_next(reviewer=tess).kind == TaskKind.APPEAL


# ---------------------------------------------------------------------------------------
# Throttling
# ---------------------------------------------------------------------------------------

def test_filing_is_throttled_per_link(loan, settings):
    settings.OZ_APPEAL_RATE_PER_TOKEN = "2/min"
    settings.OZ_APPEAL_RATE_PER_IP = "100/min"
    first, second = _rule_answered(loan), _rule_answered(loan, amount=13000)
    for _ in range(2):
        assert _file_json(_path(first), {"reason": ""}).status_code == 422  # refusals count too

    throttled = _file_json(_path(first), {"reason": "now a real one"})

    problem_body(throttled, 429)
    assert int(throttled["Retry-After"]) >= 1
    # A form post gets a page, with the same header.
    page = Client().post(_path(first), {"reason": "from the form"})
    assert page.status_code == 429 and "Too many attempts" in _html(page) and page["Retry-After"]
    # Another link from the same address is not affected; reading the page is not either.
    assert _file_json(_path(second), {"reason": "fine"}).status_code == 201
    assert Client().get(_path(first)).status_code == 200
    assert not Appeal.objects.filter(prediction=first).exists()


def test_filing_is_throttled_per_address(loan, settings):
    settings.OZ_APPEAL_RATE_PER_TOKEN = "100/min"
    settings.OZ_APPEAL_RATE_PER_IP = "3/min"
    predictions = [_rule_answered(loan, amount=1000 + i) for i in range(3)]
    for prediction in predictions[:2]:
        assert _file_json(_path(prediction), {"reason": "x"}, REMOTE_ADDR="203.0.113.7").status_code == 201
    # Guessing links costs budget too.
    problem_body(_file_json("/appeal/guess", {"reason": "x"}, REMOTE_ADDR="203.0.113.7"), 404)

    problem_body(_file_json(_path(predictions[2]), {"reason": "x"}, REMOTE_ADDR="203.0.113.7"), 429)
    assert _file_json(_path(predictions[2]), {"reason": "x"}, REMOTE_ADDR="198.51.100.2").status_code == 201


def test_a_made_up_forwarded_for_header_does_not_dodge_the_address_throttle(loan, settings):
    settings.OZ_APPEAL_RATE_PER_TOKEN = "100/min"
    settings.OZ_APPEAL_RATE_PER_IP = "2/min"
    predictions = [_rule_answered(loan, amount=2000 + i) for i in range(3)]
    for i, prediction in enumerate(predictions[:2]):
        response = _file_json(_path(prediction), {"reason": "x"}, REMOTE_ADDR="203.0.113.9", HTTP_X_FORWARDED_FOR=f"10.9.9.{i}")
        assert response.status_code == 201
    forged = _file_json(_path(predictions[2]), {"reason": "x"}, REMOTE_ADDR="203.0.113.9", HTTP_X_FORWARDED_FOR="10.9.9.77")
    problem_body(forged, 429)


# ---------------------------------------------------------------------------------------
# Operators' statistics, and the schema
# ---------------------------------------------------------------------------------------

def test_operators_see_appeal_and_overturn_rates(loan, operator_api, reviewer_api, anon_api, rita, sam):
    answered = [_rule_answered(loan, amount=1000 + i) for i in range(4)]
    for prediction in answered[:2]:
        assert _file_json(_path(prediction), {"reason": "wrong"}).status_code == 201
    task = review_task_claim_next(reviewer=sam)
    review_task_decide(task_id=task.pk, reviewer=sam, output="refer", note="changed")

    response = operator_api.get("/predictors/loan-approval/appeals")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["predictor"] == "loan-approval" and body["open"] == 1 and body["appeal_window_days"] == 30
    by_source = {(row["source"], row["model_version"]): row for row in body["rates"]}
    rule = by_source[("rule", None)]
    assert (rule["appeals"], rule["overturned"]) == (2, 1)
    assert rule["overturn_rate"] == 1.0
    problem_body(reviewer_api.get("/predictors/loan-approval/appeals"), 403)
    problem_body(anon_api.get("/predictors/loan-approval/appeals"), 401)
    problem_body(operator_api.get("/predictors/nope/appeals"), 404)


def test_the_appeal_endpoints_are_in_the_openapi_schema(anon_api):
    schema = anon_api.get("/api/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    paths = schema["paths"]
    assert {"get", "post"} <= set(paths["/appeal/{token}"])
    post = paths["/appeal/{token}"]["post"]
    assert {"201", "303", "404", "409", "422", "429"} <= set(post["responses"])
    assert {"application/json", "application/x-www-form-urlencoded"} <= set(post["requestBody"]["content"])
    assert {"text/html", "application/json"} <= set(paths["/appeal/{token}"]["get"]["responses"]["200"]["content"])
    assert "get" in paths["/appeal/{token}/status"]
    assert "get" in paths["/predictors/{slug}/appeals"]
