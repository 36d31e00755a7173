"""The operators' admin: routing changes through the service, actions that call services and
check permissions, read-only records, secrets never shown, and no admin page that fails."""
from __future__ import annotations

import html
import re

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import RequestFactory
from django.urls import reverse
from simple_history.admin import SimpleHistoryAdmin

from gateway.answers import prediction_answer
from gateway.history import HistoryFromFirstChange
from gateway.models import AnswerSource, ApiClient, ApiKey, Prediction, RoutingPolicy, UserToken, WebhookDelivery
from gateway.services import prediction_create, routing_update
from models_registry.models import ModelVersion, Stage, TrainingRun
from models_registry.training import training_run_execute
from review.services import review_task_claim_next, review_task_decide
from tests import factories

pytestmark = pytest.mark.django_db


def _admin_url(model, view: str, *args) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def _messages(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


@pytest.fixture
def otto(operator):
    return operator[0]


@pytest.fixture
def otto_client(client, otto):
    client.force_login(otto)
    return client


@pytest.fixture
def superuser(db):
    return get_user_model().objects.create_superuser("root", "root@example.com", "pw-root-123")


def _pending(loan, **overrides) -> Prediction:
    prediction, _ = prediction_create(predictor=loan, policy=loan.routing, client=None, clean_input=factories.loan_input(**overrides))
    return prediction


def _trained_version(loan, settings) -> ModelVersion:
    """A real candidate: labels from loan inputs, one training run executed in-process."""
    from review.models import Label

    settings.OZ_MIN_TRAINING_LABELS = 8
    for i in range(12):
        approve = i % 2 == 0
        Label.objects.create(
            predictor=loan, schema_version=loan.schema_version, source="import",
            input=factories.loan_input(amount=5000 + 1000 * i, years_trading=8 if approve else 1, has_collateral=approve),
            target="approve" if approve else "refer",
        )
    run = TrainingRun.objects.create(predictor=loan)
    run = training_run_execute(run_id=run.pk)
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    return run.model_version


# --- routing --------------------------------------------------------------------------------

def test_operator_changes_routing_through_the_service(loan, otto_client, otto):
    policy = loan.routing
    url = _admin_url(RoutingPolicy, "change", policy.pk)
    page = otto_client.get(url)
    assert page.status_code == 200
    html = page.content.decode()
    assert 'name="mode"' in html and 'name="reason"' in html and 'name="version"' not in html

    form = {"fallback": "rule", "human_sla_seconds": "", "mode": "rule", "reason": "rules match the reviewers now", "_save": "Save"}
    response = otto_client.post(url, form)

    assert response.status_code == 302
    policy.refresh_from_db()
    assert (policy.mode, policy.version) == ("rule", 2)
    record = policy.history.latest("history_date")
    assert (record.mode, record.version, record.history_user, record.history_change_reason) == (
        "rule", 2, otto, "rules match the reviewers now",
    )
    # Saving without a change bumps nothing.
    otto_client.post(url, {"fallback": "rule", "human_sla_seconds": "", "mode": "rule", "reason": "", "_save": "Save"})
    policy.refresh_from_db()
    assert policy.version == 2 and policy.history.count() == 2


def test_routing_form_shows_the_service_refusal_as_a_field_error(loan, otto_client):
    url = _admin_url(RoutingPolicy, "change", loan.routing.pk)
    response = otto_client.post(url, {"fallback": "rule", "human_sla_seconds": "", "mode": "model", "reason": "x" * 101, "_save": "Save"})
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["reason"]
    loan.routing.refresh_from_db()
    assert (loan.routing.mode, loan.routing.version) == ("human", 1)


def test_history_revert_goes_through_the_service(loan, otto_client, otto):
    routing_update(predictor=loan, changes={"mode": "model", "fallback": "rule"}, user=otto, reason="try the model")
    record = loan.routing.history.get(version=1)
    url = reverse("admin:gateway_routingpolicy_simple_history", args=[loan.routing.pk, record.history_id])
    page = otto_client.get(url)
    assert page.status_code == 200
    assert page.context["adminform"].form.instance.mode == "human"  # the form shows v1's values
    # Reverting saves v1's values as a new version, through routing_update: audited, never a rewrite.
    form = {"fallback": "rule", "human_sla_seconds": "", "mode": "human", "canary_percent": "", "qa_sample_percent": "",
            "confidence_threshold": "", "max_queue_depth": "", "reason": "", "_save": "Save"}
    assert otto_client.post(url, form).status_code == 302
    loan.routing.refresh_from_db()
    assert (loan.routing.mode, loan.routing.version) == ("human", 3)
    latest = loan.routing.history.latest("history_date")
    assert (latest.history_user, latest.history_change_reason) == (otto, "reverted to v1")


def test_history_revert_needs_the_change_permission(loan, client):
    viewer = get_user_model().objects.create_user("vic", password="pw-vic-123", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_routingpolicy"))
    client.force_login(viewer)
    record = loan.routing.history.earliest("history_date")
    url = reverse("admin:gateway_routingpolicy_simple_history", args=[loan.routing.pk, record.history_id])
    assert client.post(url, {"fallback": "rule", "human_sla_seconds": "", "mode": "model"}).status_code == 403
    loan.routing.refresh_from_db()
    assert (loan.routing.mode, loan.routing.version) == ("human", 1)


def test_kill_switch_sends_everything_to_humans_and_is_audited(loan, otto_client, otto):
    routing_update(predictor=loan, changes={"mode": "rule", "canary_percent": 30.0}, user=otto, reason="canary")
    response = otto_client.post(
        _admin_url(RoutingPolicy, "changelist"), {"action": "kill_switch_human", "_selected_action": [loan.routing.pk]}, follow=True
    )
    loan.routing.refresh_from_db()
    assert (loan.routing.mode, loan.routing.canary_percent, loan.routing.fallback, loan.routing.version) == (
        "human", 0.0, "none", 3,
    )
    latest = loan.routing.history.latest("history_date")
    assert (latest.history_user, latest.history_change_reason) == (otto, "kill switch: human reviewers")
    assert any("no model answers" in m for m in _messages(response))
    # Every request now goes to the queue: none is answered by the (canary) model or the rules.
    prediction, _ = prediction_create(predictor=loan, policy=loan.routing, client=None, clean_input=factories.loan_input(amount=3000))
    assert prediction.status == "pending" and prediction.route["mode"] == "human"


def test_kill_switch_needs_the_change_permission(loan, client):
    viewer = get_user_model().objects.create_user("vic", password="pw-vic-123", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_routingpolicy"))
    client.force_login(viewer)
    routing_update(predictor=loan, changes={"mode": "rule"})
    client.post(_admin_url(RoutingPolicy, "changelist"), {"action": "kill_switch_human", "_selected_action": [loan.routing.pk]})
    loan.routing.refresh_from_db()
    assert loan.routing.mode == "rule"


# --- model versions and training runs ---------------------------------------------------------

def test_promote_action_makes_the_version_champion(loan, otto_client, otto, settings):
    version = _trained_version(loan, settings)
    assert version.stage == Stage.CANDIDATE
    changelist = _admin_url(ModelVersion, "changelist")

    response = otto_client.post(changelist, {"action": "promote_to_champion", "_selected_action": [version.pk]}, follow=True)

    version.refresh_from_db()
    assert version.stage == Stage.CHAMPION
    assert version.history.latest("history_date").history_user == otto
    assert f"Version {version.version} of loan-approval is now the champion." in _messages(response)


def test_promote_action_reports_a_refusal(loan, otto_client, settings):
    version = _trained_version(loan, settings)
    ModelVersion.objects.filter(pk=version.pk).update(stage=Stage.REJECTED)
    response = otto_client.post(
        _admin_url(ModelVersion, "changelist"), {"action": "promote_to_champion", "_selected_action": [version.pk]}, follow=True
    )
    version.refresh_from_db()
    assert version.stage == Stage.REJECTED
    assert any("was rejected" in m and "force it with a written reason" in m for m in _messages(response))


def test_promote_action_needs_the_promote_permission(loan, client, settings):
    version = _trained_version(loan, settings)
    viewer = get_user_model().objects.create_user("vic", password="pw-vic-123", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_modelversion"))
    client.force_login(viewer)
    changelist = _admin_url(ModelVersion, "changelist")
    assert "promote_to_champion" not in client.get(changelist).content.decode()
    client.post(changelist, {"action": "promote_to_champion", "_selected_action": [version.pk]})
    version.refresh_from_db()
    assert version.stage == Stage.CANDIDATE


def test_train_again_requests_a_run_and_reports_an_active_one(loan, otto_client, otto):
    finished = TrainingRun.objects.create(predictor=loan, status=TrainingRun.Status.FAILED, error="not enough labels")
    changelist = _admin_url(TrainingRun, "changelist")
    data = {"action": "train_again", "_selected_action": [finished.pk]}

    first = otto_client.post(changelist, data, follow=True)
    queued = TrainingRun.objects.exclude(pk=finished.pk).get()
    assert (queued.status, queued.requested_by, queued.predictor) == (TrainingRun.Status.QUEUED, otto, loan)
    assert any(f"Training run #{queued.pk} for loan-approval requested" in m for m in _messages(first))

    second = otto_client.post(changelist, data, follow=True)
    assert TrainingRun.objects.count() == 2
    assert any("already queued or running" in m for m in _messages(second))


def test_predictor_train_action_needs_the_train_permission(loan, client, reviewer):
    client.force_login(reviewer[0])  # reviewers may view predictors, not train
    changelist = _admin_url(type(loan), "changelist")
    assert "train_model" not in client.get(changelist).content.decode()
    client.post(changelist, {"action": "train_model", "_selected_action": [loan.pk]})
    assert not TrainingRun.objects.exists()


# --- read-only records and secrets ----------------------------------------------------------

def test_read_only_records_refuse_writes_even_for_a_superuser(loan, client, superuser):
    client.force_login(superuser)
    prediction = _pending(loan)
    change = _admin_url(Prediction, "change", prediction.pk)
    page = client.get(change)
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    assert client.post(change, {"status": "answered"}).status_code == 403
    assert client.get(_admin_url(Prediction, "add")).status_code == 403
    assert client.post(_admin_url(Prediction, "delete", prediction.pk), {"post": "yes"}).status_code == 403
    assert Prediction.objects.filter(pk=prediction.pk, status="pending").exists()


def test_keys_show_their_prefix_and_never_a_hash_or_secret(loan, client, superuser, client_key, reviewer):
    api_client, _ = client_key
    key = ApiKey.objects.get(client=api_client)
    token = UserToken.objects.get(user=reviewer[0])
    client.force_login(superuser)
    pages = [
        _admin_url(ApiKey, "changelist"), _admin_url(ApiKey, "change", key.pk), _admin_url(ApiKey, "history", key.pk),
        _admin_url(ApiClient, "changelist"), _admin_url(ApiClient, "change", api_client.pk),
        _admin_url(ApiClient, "history", api_client.pk), _admin_url(UserToken, "change", token.pk),
        _admin_url(UserToken, "history", token.pk),
        reverse("admin:gateway_apikey_simple_history", args=[key.pk, key.history.get().history_id]),
        reverse("admin:gateway_apiclient_simple_history", args=[api_client.pk, api_client.history.first().history_id]),
    ]
    for url in pages:
        html = client.get(url).content.decode()
        assert key.key_hash not in html and token.key_hash not in html and api_client.webhook_secret not in html, url
    assert f"{key.prefix}…" in client.get(_admin_url(ApiKey, "changelist")).content.decode()


def test_prediction_search_takes_a_full_id_and_ignores_anything_else(loan, otto_client):
    wanted, other = _pending(loan), _pending(loan)
    changelist = _admin_url(Prediction, "changelist")
    found = otto_client.get(changelist, {"q": str(wanted.pk)})
    assert list(found.context["cl"].result_list) == [wanted]
    assert other.pk not in [p.pk for p in found.context["cl"].result_list]
    assert list(otto_client.get(changelist, {"q": "not-a-uuid"}).context["cl"].result_list) == []


# --- every page renders ----------------------------------------------------------------------

def _one_of_everything(loan):
    """At least one row of every registered model, made through the services."""
    api_client, _ = factories.api_client_with_key()
    reviewer, _ = factories.reviewer_with_token()
    factories.operator_with_token()
    prediction, _ = prediction_create(
        predictor=loan, policy=loan.routing, client=api_client, clean_input=factories.loan_input(note="hello"),
        callback_url="https://client.example.com/hook",
    )
    task = review_task_claim_next(reviewer=reviewer)
    review_task_decide(task_id=task.pk, reviewer=reviewer, output="approve", note="fine")
    if not WebhookDelivery.objects.exists():
        prediction_answer(prediction=prediction, output="approve", source=AnswerSource.HUMAN)
    _pending(loan)
    run = TrainingRun.objects.create(predictor=loan, status=TrainingRun.Status.SUCCEEDED, metrics={"accuracy": 0.9})
    ModelVersion.objects.create(
        predictor=loan, version=1, run=run, schema_version=1, **factories.stored_artifact("models/loan-approval/v1.skops"),
        metrics={"accuracy": 0.9},
    )
    TrainingRun.objects.create(predictor=loan, status=TrainingRun.Status.FAILED, error="Traceback <boom>")


def test_every_admin_page_renders_for_a_superuser(loan, client, superuser):
    _one_of_everything(loan)
    client.force_login(superuser)
    request = RequestFactory().get("/admin/")
    request.user = superuser
    assert client.get(reverse("admin:index")).status_code == 200
    checked = filter_pages = 0
    for model, model_admin in admin.site._registry.items():
        name = model._meta.label
        page = client.get(_admin_url(model, "changelist"))
        assert page.status_code == 200, name
        assert client.get(_admin_url(model, "changelist"), {"q": "abc"}).status_code == 200, name
        # Every choice the filter sidebar offers.
        sidebar = re.search(r'<nav id="changelist-filter".*?</nav>', page.content.decode(), re.S)
        for query in set(re.findall(r'href="(\?[^"]+)"', sidebar.group(0) if sidebar else "")):
            response = client.get(_admin_url(model, "changelist") + html.unescape(query))
            assert response.status_code == 200, (name, query)
            filter_pages += 1
        if model_admin.has_add_permission(request):
            assert client.get(_admin_url(model, "add")).status_code == 200, name
        obj = model._default_manager.order_by("pk").last()
        assert obj is not None, f"no {name} row to render"
        assert client.get(_admin_url(model, "change", obj.pk)).status_code == 200, name
        assert client.get(_admin_url(model, "history", obj.pk)).status_code == 200, name
        if isinstance(model_admin, SimpleHistoryAdmin):
            record = model.history.filter(**{model._meta.pk.attname: obj.pk}).first()
            if record is None:  # rows written on the request path: history begins at the first change
                assert issubclass(model, HistoryFromFirstChange), f"{name} has no history"
                obj.save()
                record = model.history.filter(**{model._meta.pk.attname: obj.pk}).first()
            url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_simple_history", args=[obj.pk, record.history_id])
            assert client.get(url).status_code == 200, name
        checked += 1
    assert checked == len(admin.site._registry) >= 12
    assert filter_pages > 20  # the sidebar links were followed


def test_an_operator_revokes_a_key_from_the_admin(loan, client, client_key, make_api):
    from gateway.models import ApiKey
    from tests.gateway.helpers import problem_body

    def predict_loan(api):
        return api.post("/predict/loan-approval", {"input": factories.loan_input()}, format="json")

    user, _ = factories.operator_with_token("olive")
    client.force_login(user)
    api = make_api(f"Bearer {client_key[1]}")
    assert predict_loan(api).status_code == 202
    key = ApiKey.objects.get(client=client_key[0])
    response = client.post(reverse("admin:gateway_apikey_changelist"), {"action": "revoke", "_selected_action": [key.pk]})
    assert response.status_code == 302
    key.refresh_from_db()
    assert key.revoked_at is not None and key.history.first().history_user == user
    problem_body(predict_loan(api), 401)


def test_a_reviewer_cannot_revoke_keys(loan, client, client_key):
    from gateway.models import ApiKey

    user, _ = factories.reviewer_with_token("rhea")
    user.is_staff = True
    user.save()
    client.force_login(user)
    key = ApiKey.objects.get(client=client_key[0])
    client.post(reverse("admin:gateway_apikey_changelist"), {"action": "revoke", "_selected_action": [key.pk]})
    key.refresh_from_db()
    assert key.revoked_at is None
