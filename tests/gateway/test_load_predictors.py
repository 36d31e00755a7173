"""`manage.py load_predictors PATH`: predictors as code, all or nothing."""
from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from gateway.models import Predictor, RoutingPolicy
from gateway.services import routing_update
from tests.factories import DEMO_PREDICTORS

pytestmark = pytest.mark.django_db

DEMO_TEXT = (DEMO_PREDICTORS / "loan-approval.yaml").read_text()

CHURN = """\
slug: churn
description: Will this customer leave?
input:
  months:  {type: integer, minimum: 0, required: true}
  plan:    {type: category, choices: [basic, pro]}
output: {type: label, labels: [stay, leave]}
routing: {mode: rule}
rules:
  - when: {months: {lt: 3}}
    then: leave
  - default: stay
"""

PRICE = """\
slug: price
input:
  rooms: {type: integer, minimum: 1}
output: {type: number, minimum: 0}
"""


def load(path) -> str:
    out = StringIO()
    call_command("load_predictors", str(path), stdout=out)
    return out.getvalue()


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_file_creates_its_predictor_with_the_initial_routing(tmp_path):
    out = load(write(tmp_path, "churn.yaml", CHURN))
    assert "created" in out and "churn" in out
    predictor = Predictor.objects.get(slug="churn")
    assert predictor.description == "Will this customer leave?"
    assert predictor.input_schema["months"] == {"type": "integer", "minimum": 0, "required": True}
    assert list(predictor.schema) == ["months", "plan"]  # declaration order, whatever jsonb does
    assert predictor.output_spec == {"type": "label", "labels": ["stay", "leave"]}
    assert predictor.rules[-1] == {"default": "stay"}
    assert predictor.schema_version == 1
    assert predictor.routing.mode == "rule"
    assert predictor.routing.version == 1


def test_a_folder_loads_every_yaml_file_in_it(tmp_path):
    write(tmp_path, "churn.yaml", CHURN)
    write(tmp_path, "nested/price.yml", PRICE)
    write(tmp_path, "README.md", "not a predictor")
    load(tmp_path)
    assert set(Predictor.objects.values_list("slug", flat=True)) == {"churn", "price"}
    assert Predictor.objects.get(slug="price").routing.mode == "human"  # the default flag


@pytest.mark.parametrize(
    "bad_text, field",
    [
        (CHURN.replace("type: category, choices: [basic, pro]", "type: category"), "input.plan.choices"),
        (CHURN.replace("then: leave", "then: gone"), "rules[0].then"),
        (CHURN.replace("months: {lt: 3}", "plan: {lt: 3}"), "rules[0].when.plan.lt"),
        (CHURN.replace("slug: churn", "slug: Churn!"), "slug"),
        (CHURN + "sensitive_attribute: [plan]\n", "sensitive_attribute"),
        (CHURN.replace("plan:    {", "plan:    {description: 2024-01-01, "), "input.plan.description"),
        (CHURN + "owner: me\n", "owner"),
    ],
)
def test_a_bad_file_loads_nothing_and_the_error_names_file_and_field(tmp_path, bad_text, field):
    write(tmp_path, "a-price.yaml", PRICE)
    bad = write(tmp_path, "b-churn.yaml", bad_text)
    write(tmp_path, "c-loan.yaml", DEMO_TEXT)
    with pytest.raises(CommandError) as caught:
        load(tmp_path)
    message = str(caught.value)
    assert str(bad) in message
    assert f"{field}:" in message
    assert "nothing loaded" in message
    # Not even the good files that come before or after it.
    assert not Predictor.objects.exists()
    assert not RoutingPolicy.objects.exists()


@pytest.mark.parametrize("text", ["slug: [unclosed\n", "- just\n- a list\n", "", "\x00\x01 binary"])
def test_unparsable_files_are_errors_naming_the_file(tmp_path, text):
    bad = write(tmp_path, "bad.yaml", text)
    with pytest.raises(CommandError) as caught:
        load(bad)
    assert str(bad) in str(caught.value)
    assert not Predictor.objects.exists()


def test_a_bad_reload_leaves_the_loaded_predictors_untouched(tmp_path):
    path = write(tmp_path, "churn.yaml", CHURN)
    load(path)
    path.write_text(CHURN.replace("Will this customer leave?", "changed").replace("then: leave", "then: gone"))
    with pytest.raises(CommandError):
        load(path)
    predictor = Predictor.objects.get(slug="churn")
    assert predictor.description == "Will this customer leave?"
    assert predictor.rules[0]["then"] == "leave"


def test_missing_path_and_empty_folder_are_errors(tmp_path):
    with pytest.raises(CommandError, match="no such file"):
        load(tmp_path / "nope.yaml")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CommandError, match=r"no \.yaml"):
        load(tmp_path / "empty")


def test_the_same_slug_in_two_files_is_an_error(tmp_path):
    first = write(tmp_path, "a.yaml", CHURN)
    second = write(tmp_path, "b.yaml", CHURN.replace("Will this customer leave?", "again"))
    with pytest.raises(CommandError) as caught:
        load(tmp_path)
    message = str(caught.value)
    assert str(second) in message and str(first) in message
    assert "slug:" in message
    assert not Predictor.objects.exists()


def test_an_unchanged_reload_is_unchanged(tmp_path):
    path = write(tmp_path, "churn.yaml", CHURN)
    load(path)
    before = Predictor.objects.get(slug="churn")
    history_rows = before.history.count()
    out = load(path)
    assert out.split()[0] == "unchanged"
    after = Predictor.objects.get(slug="churn")
    assert after.pk == before.pk
    assert after.schema_version == 1
    assert after.updated_at == before.updated_at
    assert after.history.count() == history_rows


def test_a_reload_updates_in_place_without_a_new_schema_version(tmp_path):
    path = write(tmp_path, "churn.yaml", CHURN)
    load(path)
    pk = Predictor.objects.get(slug="churn").pk
    path.write_text(CHURN.replace("Will this customer leave?", "Churn risk").replace("lt: 3", "lt: 6"))
    out = load(path)
    assert out.split()[0] == "updated"
    predictor = Predictor.objects.get(slug="churn")
    assert predictor.pk == pk
    assert Predictor.objects.count() == 1
    assert predictor.description == "Churn risk"
    assert predictor.rules[0]["when"] == {"months": {"lt": 6}}
    assert predictor.schema_version == 1  # rules and description are not the schema


@pytest.mark.parametrize(
    "change",
    [
        lambda t: t.replace("plan:    {type: category, choices: [basic, pro]}",
                            "plan:    {type: category, choices: [basic, pro, team]}"),
        lambda t: t.replace("months:  {type: integer, minimum: 0, required: true}",
                            "months:  {type: integer, minimum: 0}"),
        lambda t: t.replace("output: {type: label, labels: [stay, leave]}",
                            "output: {type: label, labels: [stay, leave, downgrade]}"),
        # The same fields in another order: the model's feature columns change.
        lambda t: t.replace("  months:  {type: integer, minimum: 0, required: true}\n  plan:    {type: category, choices: [basic, pro]}\n",
                            "  plan:    {type: category, choices: [basic, pro]}\n  months:  {type: integer, minimum: 0, required: true}\n"),
    ],
)
def test_a_schema_change_bumps_the_schema_version(tmp_path, change):
    path = write(tmp_path, "churn.yaml", CHURN)
    load(path)
    path.write_text(change(CHURN))
    out = load(path)
    assert out.split()[0] == "updated"
    assert "schema v2" in out
    assert Predictor.objects.get(slug="churn").schema_version == 2
    assert load(path).split()[0] == "unchanged"
    assert Predictor.objects.get(slug="churn").schema_version == 2


def test_routing_in_the_file_only_applies_at_creation(tmp_path, operator):
    path = write(tmp_path, "churn.yaml", CHURN)
    load(path)
    predictor = Predictor.objects.get(slug="churn")
    routing_update(predictor=predictor, changes={"mode": "human"}, user=operator[0], reason="too many mistakes")
    # The file still says rule; re-loading it, even with other changes, keeps the operator's choice.
    path.write_text(CHURN.replace("Will this customer leave?", "edited"))
    load(path)
    policy = RoutingPolicy.objects.get(predictor__slug="churn")
    assert policy.mode == "human"
    assert policy.version == 2
    assert Predictor.objects.get(slug="churn").description == "edited"
