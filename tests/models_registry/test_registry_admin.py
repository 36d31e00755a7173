"""The registry admin: the champion's "Roll back" button (confirmation page, CSRF, a reason,
who and why in the history), promoting past gates only with a written reason, runs compared
side by side, and metric charts drawn on the server — for 0, 1 and several runs."""
from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from models_registry.gates import version_gates_apply
from models_registry.models import ModelVersion, Stage, TrainingRun
from models_registry.services import model_version_promote

from .test_gates import _gates, _version

pytestmark = pytest.mark.django_db


def _url(name: str, *args) -> str:
    return reverse(f"admin:models_registry_{name}", args=args)


def _messages(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


def _csrf(page) -> str:
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode()).group(1)


@pytest.fixture
def otto(operator):
    return operator[0]


@pytest.fixture
def otto_client(otto):
    client = Client(enforce_csrf_checks=True)
    client.force_login(otto)
    return client


def _champions(loan, n: int = 3) -> list[ModelVersion]:
    versions = [_version(loan, number) for number in range(1, n + 1)]
    for version in versions:
        model_version_promote(version=version, reason=f"ship v{version.version}")
    return [ModelVersion.objects.get(pk=v.pk) for v in versions]


# --- roll back ------------------------------------------------------------------------------

def test_the_champion_has_a_roll_back_button_that_confirms_asks_why_and_records_it(loan, otto_client, otto):
    v1, v2, v3 = _champions(loan)
    change = otto_client.get(_url("modelversion_change", v3.pk)).content.decode()
    assert f'href="{_url("modelversion_rollback", v3.pk)}"' in change and "Roll back" in change
    listing = otto_client.get(_url("modelversion_changelist")).content.decode()
    assert listing.count(">Roll back<") == 1

    page = otto_client.get(_url("modelversion_rollback", v3.pk))
    assert page.status_code == 200
    html = page.content.decode()
    assert 'method="post"' in html and "csrfmiddlewaretoken" in html and "v2" in html and 'name="reason"' in html
    assert ModelVersion.objects.get(pk=v3.pk).stage == Stage.CHAMPION  # a GET changes nothing

    # No CSRF token: refused. No reason: asked again. Nothing changes either way.
    assert otto_client.post(_url("modelversion_rollback", v3.pk), {"reason": "x"}).status_code == 403
    again = otto_client.post(_url("modelversion_rollback", v3.pk), {"reason": "  ", "csrfmiddlewaretoken": _csrf(page)})
    assert again.status_code == 200 and again.context["form"].errors["reason"]
    assert ModelVersion.objects.get(pk=v3.pk).stage == Stage.CHAMPION

    response = otto_client.post(
        _url("modelversion_rollback", v3.pk), {"reason": "v3 refers everyone", "csrfmiddlewaretoken": _csrf(page)}, follow=True
    )
    assert "Rolled back loan-approval: v2 is the champion again; v3 is rejected." in _messages(response)
    assert response.redirect_chain[-1][0] == _url("modelversion_change", v2.pk)
    restored = ModelVersion.objects.get(pk=v2.pk).history.latest("history_date")
    rolled = ModelVersion.objects.get(pk=v3.pk).history.latest("history_date")
    assert (restored.stage, restored.history_user, restored.stage_reason) == (
        "champion", otto, "restored by rollback of v3: v3 refers everyone",
    )
    assert (rolled.stage, rolled.history_user, rolled.stage_reason) == ("rejected", otto, "rolled back to v2: v3 refers everyone")
    history = otto_client.get(_url("modelversion_history", v2.pk)).content.decode()
    assert otto.username in history
    # The list says why each version is where it is.
    listing = otto_client.get(_url("modelversion_changelist")).content.decode()
    assert "rolled back to v2: v3 refers everyone" in listing and "restored by rollback of v3" in listing

    # The button again: further back.
    page = otto_client.get(_url("modelversion_rollback", v2.pk))
    otto_client.post(_url("modelversion_rollback", v2.pk), {"reason": "v2 too", "csrfmiddlewaretoken": _csrf(page)})
    assert [ModelVersion.objects.get(pk=v.pk).stage for v in (v1, v2, v3)] == ["champion", "rejected", "rejected"]

    # Only champion left that was ever champion: the page says so and offers no form.
    page = otto_client.get(_url("modelversion_rollback", v1.pk)).content.decode()
    assert 'id="oz-nothing"' in page and 'id="oz-rollback-form"' not in page


def test_a_stale_confirmation_page_rolls_nothing_back(loan, otto_client):
    v1, _, v3 = _champions(loan)
    page = otto_client.get(_url("modelversion_rollback", v3.pk))
    model_version_promote(version=v1, reason="someone else acted first")  # v3 archived, v1 champion
    response = otto_client.post(
        _url("modelversion_rollback", v3.pk), {"reason": "late", "csrfmiddlewaretoken": _csrf(page)}, follow=True
    )
    assert any("not the champion" in m for m in _messages(response))
    assert ModelVersion.objects.get(pk=v1.pk).stage == Stage.CHAMPION


def test_roll_back_and_promote_pages_need_the_promote_permission(loan, client):
    _, _, v3 = _champions(loan)
    viewer = get_user_model().objects.create_user("vic", password="pw-vic-123", is_staff=True)
    viewer.user_permissions.add(*Permission.objects.filter(codename__in=["view_modelversion", "view_trainingrun"]))
    client.force_login(viewer)
    assert ">Roll back<" not in client.get(_url("modelversion_change", v3.pk)).content.decode()
    assert client.get(_url("modelversion_rollback", v3.pk)).status_code == 403
    assert client.post(_url("modelversion_rollback", v3.pk), {"reason": "x"}).status_code == 403
    assert client.get(_url("modelversion_promote", v3.pk)).status_code == 403
    assert ModelVersion.objects.get(pk=v3.pk).stage == Stage.CHAMPION


def test_reviewers_see_none_of_the_registry_pages(loan, client, reviewer):
    _, _, v3 = _champions(loan)
    client.force_login(reviewer[0])
    for url in (_url("modelversion_rollback", v3.pk), _url("trainingrun_compare") + f"?ids={v3.run_id}",
                _url("trainingrun_chart", "loan-approval"), _url("trainingrun_charts")):
        assert client.get(url).status_code == 403, url


# --- promote past gates ----------------------------------------------------------------------

def test_promote_action_shows_the_gates_and_forcing_needs_a_written_reason(loan, otto_client, otto):
    _gates(loan, {"min_metrics": {"accuracy": 0.95}, "max_metrics": {"log_loss": 0.5}})
    version = version_gates_apply(version=_version(loan, 1))
    listing = otto_client.get(_url("modelversion_changelist"))
    response = otto_client.post(_url("modelversion_changelist"), {
        "action": "promote_to_champion", "_selected_action": [version.pk], "csrfmiddlewaretoken": _csrf(listing),
    })
    assert response.status_code == 302 and response["Location"] == _url("modelversion_promote", version.pk)

    page = otto_client.get(response["Location"])
    html = page.content.decode()
    assert "min_metrics.accuracy" in html and "FAILED" in html and "max_metrics.log_loss" in html and "passed" in html
    assert 'name="force"' in html and 'name="reason"' in html

    refused = otto_client.post(response["Location"], {"force": "on", "reason": " ", "csrfmiddlewaretoken": _csrf(page)})
    assert refused.status_code == 200 and refused.context["form"].errors["reason"]
    refused = otto_client.post(response["Location"], {"reason": "why not", "csrfmiddlewaretoken": _csrf(page)})
    assert refused.context["form"].errors["force"]
    assert ModelVersion.objects.get(pk=version.pk).stage == Stage.REJECTED

    done = otto_client.post(
        response["Location"], {"force": "on", "reason": "tiny holdout", "csrfmiddlewaretoken": _csrf(page)}, follow=True
    )
    assert "Version 1 of loan-approval is now the champion." in _messages(done)
    record = ModelVersion.objects.get(pk=version.pk).history.latest("history_date")
    assert (record.stage, record.history_user) == ("champion", otto)
    assert record.stage_reason == "forced past min_metrics.accuracy: tiny holdout"


def test_promote_page_without_blocking_gates_needs_no_force(loan, otto_client, otto):
    _gates(loan, {"min_metrics": {"accuracy": 0.8}})
    version = version_gates_apply(version=_version(loan, 1))
    page = otto_client.get(_url("modelversion_promote", version.pk))
    assert 'name="force"' not in page.content.decode() and "passed" in page.content.decode()
    otto_client.post(_url("modelversion_promote", version.pk), {"reason": "", "csrfmiddlewaretoken": _csrf(page)})
    assert ModelVersion.objects.get(pk=version.pk).stage == Stage.CHAMPION


# --- compare ---------------------------------------------------------------------------------------

def test_compare_action_needs_two_runs_and_the_page_highlights_the_best(loan, otto_client):
    a = _version(loan, 1, metrics={"accuracy": 0.8, "log_loss": 0.5, "calibration": {"brier": 0.2}, "n_train": 90})
    b = _version(loan, 2, metrics={"accuracy": 0.9, "log_loss": 0.6, "calibration": {"brier": 0.1}, "n_train": 90},
                 fairness={"demographic_parity_difference": 0.05, "by_group": {"food": {"accuracy": 0.7}}})
    c = _version(loan, 3, metrics={"accuracy": 0.85, "log_loss": 0.4, "n_train": 120},
                 fairness={"demographic_parity_difference": 0.09, "by_group": {"food": {"accuracy": 0.9}}})
    TrainingRun.objects.filter(pk=a.run_id).update(params={"estimator": "logistic_regression", "hyperparameters": {"C": 0.1}})
    TrainingRun.objects.filter(pk=b.run_id).update(params={"estimator": "logistic_regression", "hyperparameters": {"C": 1.0}})

    listing = otto_client.get(_url("trainingrun_changelist"))
    one = otto_client.post(_url("trainingrun_changelist"), {
        "action": "compare_runs", "_selected_action": [a.run_id], "csrfmiddlewaretoken": _csrf(listing),
    }, follow=True)
    assert "Select two or more runs to compare." in _messages(one)

    response = otto_client.post(_url("trainingrun_changelist"), {
        "action": "compare_runs", "_selected_action": [a.run_id, b.run_id, c.run_id], "csrfmiddlewaretoken": _csrf(listing),
    })
    assert response.status_code == 302
    page = otto_client.get(response["Location"])
    assert page.status_code == 200
    html = page.content.decode()

    def row(name: str) -> list[tuple[bool, str]]:
        match = re.search(rf'<tr data-row="{re.escape(name)}">(.*?)</tr>', html, re.S)
        return [(bool(best), text) for best, text in re.findall(r'<td( class="oz-best"[^>]*)?>(.*?)</td>', match.group(1))]

    assert row("accuracy") == [(False, "0.8"), (True, "0.9"), (False, "0.85")]          # higher is better
    assert row("log_loss") == [(False, "0.5"), (False, "0.6"), (True, "0.4")]           # lower is better
    assert row("calibration.brier") == [(False, "0.2"), (True, "0.1"), (False, "—")]
    assert row("demographic_parity_difference") == [(False, "—"), (True, "0.05"), (False, "0.09")]
    assert not any(best for best, _ in row("by_group.food.accuracy"))  # describes a group; not ranked
    assert not any(best for best, _ in row("n_train"))
    assert row("hyperparameters.C") == [(False, "0.1"), (False, "1"), (False, "—")]


@pytest.mark.parametrize("how_many", [0, 1])
def test_compare_page_renders_for_no_run_and_one_run(loan, otto_client, how_many):
    ids = [str(_version(loan, 1).run_id)] if how_many else ["999999", "x", "²", "9" * 30]  # none a run, none a crash
    page = otto_client.get(_url("trainingrun_compare") + "?ids=" + ",".join(ids))
    assert page.status_code == 200
    assert "Select two or more training runs" in page.content.decode()
    assert ('id="oz-compare"' in page.content.decode()) is bool(how_many)
    assert otto_client.get(_url("trainingrun_compare")).status_code == 200


# --- metric charts ------------------------------------------------------------------------------

def _chart(client, slug: str = "loan-approval") -> str:
    page = client.get(_url("trainingrun_chart", slug))
    assert page.status_code == 200
    html = page.content.decode()
    main = html[html.index('id="content-main"'):]
    assert "<script" not in main and "cdn" not in main.lower()  # drawn on the server, nothing fetched
    return main


def test_chart_for_a_predictor_without_runs(loan, otto_client):
    main = _chart(otto_client)
    assert 'id="oz-no-versions"' in main and "oz-chart" not in main and 'id="oz-metrics-table"' in main
    assert otto_client.get(_url("trainingrun_charts")).status_code == 200
    assert otto_client.get(_url("trainingrun_chart", "nope")).status_code == 404


def test_chart_for_one_version(loan, otto_client):
    _version(loan, 1, metrics={"accuracy": 0.8, "n_train": 90})
    main = _chart(otto_client)
    svg = re.search(r'data-metric="accuracy".*?</svg>', main, re.S).group(0)
    assert svg.count("<circle") == 1 and "<polyline" not in svg and "v1: 0.8" in svg
    assert 'data-metric="n_train"' not in main  # counts are not charted


def test_chart_for_several_versions_with_a_table(loan, otto_client):
    for number, (accuracy, loss) in enumerate([(0.8, 0.5), (0.85, 0.45), (0.9, 0.4)], start=1):
        _version(loan, number, metrics={"accuracy": accuracy, "log_loss": loss, "calibration": {"brier": 0.1 * number}})
    _version(loan, 4, metrics={"accuracy": 0.7})  # no log_loss: a gap, not a crash
    main = _chart(otto_client)
    accuracy = re.search(r'data-metric="accuracy".*?</svg>', main, re.S).group(0)
    assert accuracy.count("<circle") == 4 and "<polyline" in accuracy and "higher is better" in accuracy
    points = [tuple(map(float, p.split(","))) for p in re.search(r'points="([^"]+)"', accuracy).group(1).split()]
    assert [x for x, _ in points] == sorted(x for x, _ in points)
    assert min(points, key=lambda p: p[1]) == points[2]  # v3's 0.9 is drawn highest (SVG y grows down)
    assert max(points, key=lambda p: p[1]) == points[3]  # v4's 0.7 lowest
    log_loss = re.search(r'data-metric="log_loss".*?</svg>', main, re.S).group(0)
    assert log_loss.count("<circle") == 3 and "lower is better" in log_loss
    assert 'data-metric="calibration.brier"' in main
    table = re.search(r'id="oz-metrics-table".*?</table>', main, re.S).group(0)
    assert table.count("<tr>") == 5  # header + 4 versions


def test_run_change_page_shows_what_the_run_holds(loan, otto_client):
    version = _version(loan, 1, champion_metrics={"accuracy": 0.7}, fairness={"demographic_parity_difference": 0.05})
    TrainingRun.objects.filter(pk=version.run_id).update(logs="step 1\nstep 2", peak_memory_bytes=50 * 2**20)
    html = otto_client.get(_url("trainingrun_change", version.run_id)).content.decode()
    assert "step 2" in html and "50.0 MiB" in html and "demographic_parity_difference" in html
    assert _url("trainingrun_chart", "loan-approval") in html
