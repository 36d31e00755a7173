"""The operators' dashboard (gateway/dashboard.py): renders for an empty and a busy predictor,
the numbers in its tables are right, reviewers are refused, and the number of queries does
not grow with the number of rows."""
from __future__ import annotations

from datetime import timedelta
from html.parser import HTMLParser

import pytest
from django.urls import reverse
from django.utils import timezone

from gateway import charts
from gateway.dashboard import _percentile, dashboard_window
from gateway.models import Prediction, RoutingPolicy
from models_registry.models import DriftReport, ExplanationSample, ModelVersion, ShadowPrediction, TrainingRun
from review.models import Appeal, Label, ReviewTask
from tests import factories

pytestmark = pytest.mark.django_db

MAX_QUERIES = 30


class _Tables(HTMLParser):
    """Every <table id=…> of a page as a list of rows of cell texts."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._table = None
        self._row = None
        self._cell = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and attrs.get("id"):
            self._table = self.tables.setdefault(attrs["id"], [])
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self._table.append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def tables_of(response) -> dict[str, dict[str, list[str]]]:
    """{table id: {first cell of a row: the row}} (the header row under its first cell)."""
    parser = _Tables()
    parser.feed(response.content.decode())
    return {tid: {row[0]: row for row in rows if row} for tid, rows in parser.tables.items()}


def _url(slug: str, days: int | None = None) -> str:
    url = reverse("admin:gateway_predictor_dashboard", args=[slug])
    return f"{url}?days={days}" if days else url


@pytest.fixture
def otto_client(client, operator):
    client.force_login(operator[0])
    return client


def _version(loan, number: int, stage: str, metrics: dict) -> ModelVersion:
    run = TrainingRun.objects.create(predictor=loan, status="succeeded", metrics=metrics)
    return ModelVersion.objects.create(
        predictor=loan, version=number, run=run, stage=stage, schema_version=1,
        **factories.stored_artifact(f"models/v{number}.skops"), metrics=metrics,
    )


def busy(loan, now, days: int = 10, extra_old: int = 10) -> dict:
    """A few hundred predictions over `days` days (40 a day: 20 human, 10 rule, 5 model v1,
    2 provisional, 3 pending; sectors alternate food/retail), `extra_old` model answers 40
    days ago, tasks, labels, shadows, appeals, two drift reports and three explanations."""
    RoutingPolicy.objects.filter(predictor=loan).update(human_sla_seconds=3600)
    v1 = _version(loan, 1, "champion", {"accuracy": 0.8, "f1_macro": 0.7, "n_train": 90})
    v2 = _version(loan, 2, "candidate", {"accuracy": 0.85, "f1_macro": 0.75, "n_train": 120})
    kinds = ["human"] * 20 + ["rule"] * 10 + ["model"] * 5 + ["provisional"] * 2 + ["pending"] * 3
    rows = []
    for d in range(days):
        for i, kind in enumerate(kinds):
            created = now - timedelta(days=d)
            rows.append(_prediction(loan, kind, created, sector="food" if i % 2 == 0 else "retail",
                                    output="approve" if i % 4 != 3 else "refer"))
    for _ in range(extra_old):
        rows.append(_prediction(loan, "model", now - timedelta(days=40), sector="other", output="approve"))
    Prediction.objects.bulk_create(rows)
    by_kind = {}
    for p, kind in zip(rows, [k for _ in range(days) for k in kinds] + ["model-old"] * extra_old, strict=True):
        by_kind.setdefault(kind, []).append(p)

    # Review tasks: per day (first five days) four routed tasks decided, three in 10 minutes and
    # one in 2 hours; QA samples decided (3 confirmed rule answers, 1 corrected); the queue now.
    humans = by_kind["human"]
    tasks = []
    for d in range(min(5, days)):
        for j, seconds in enumerate((600, 600, 600, 7200)):
            tasks.append((ReviewTask(prediction=humans[d * 20 + j], predictor=loan, kind="routed", priority=20, reason=f"ttd-{seconds}",
                                     status="decided", final_output="approve"), d, seconds))
    for j, source in enumerate(("rule", "rule", "rule", "human")):
        target = by_kind[source][-1 - j]
        tasks.append((ReviewTask(prediction=target, predictor=loan, kind="qa_sample", priority=10, reason="qa", status="decided"), 0, 300))
    for j in range(3):
        tasks.append((ReviewTask(prediction=by_kind["pending"][j], predictor=loan, kind="routed", priority=20, reason="open"), None, None))
    tasks.append((ReviewTask(prediction=by_kind["model"][0], predictor=loan, kind="appeal", priority=40, reason="appeal"), None, None))
    for j in range(2):
        tasks.append((ReviewTask(prediction=by_kind["rule"][j], predictor=loan, kind="qa_sample", priority=10, reason="qa now",
                                 status="claimed"), None, None))
    ReviewTask.objects.bulk_create([t for t, _, _ in tasks])
    for task, d, seconds in tasks:  # auto_now_add wrote "now" into created_at
        if d is not None:
            decided = now - timedelta(days=d, hours=1)
            ReviewTask.objects.filter(pk=task.pk).update(created_at=decided - timedelta(seconds=seconds), decided_at=decided)

    # Shadows: v1 on 20 human answers (15 labels agree), v2 on 10 (9 agree); one errored and
    # one without a label are not counted; a superseded label never counts.
    labels, shadows = [], []
    for j, p in enumerate(humans[:20]):
        labels.append(Label(predictor=loan, prediction=p, schema_version=1, input=p.input, target="approve" if j < 15 else "refer",
                            source="review"))
        shadows.append(ShadowPrediction(prediction=p, model_version=v1, output="approve", confidence=0.9))
    for j, p in enumerate(humans[20:30]):
        labels.append(Label(predictor=loan, prediction=p, schema_version=1, input=p.input, target="refer" if j < 9 else "approve",
                            source="review"))
        shadows.append(ShadowPrediction(prediction=p, model_version=v2, output="refer", confidence=0.8))
    shadows.append(ShadowPrediction(prediction=humans[30], model_version=v1, output=None, error="ValueError: boom"))
    shadows.append(ShadowPrediction(prediction=humans[31], model_version=v1, output="approve"))
    Label.objects.bulk_create(labels)
    Label.objects.create(predictor=loan, prediction=humans[0], schema_version=1, input={}, target="refer", source="review",
                         superseded_by=labels[0])
    ShadowPrediction.objects.bulk_create(shadows)

    # Appeals: three against v1's answers (overturned, upheld, open), one against a human's.
    models = by_kind["model"]
    for p, status in zip(models[:3], ("overturned", "upheld", "open"), strict=True):
        Appeal.objects.create(prediction=p, status=status, reason="why", original_output=p.output, original_source="model",
                              original_model_version=1)
    Appeal.objects.create(prediction=humans[-1], status="upheld", reason="why", original_output="refer", original_source="human")

    DriftReport.objects.create(predictor=loan, model_version=v1, window_start=now - timedelta(days=2), window_end=now - timedelta(days=1),
                               n_live=100, fields={"amount": {"psi": 0.05}, "sector": {"psi": 0.31, "drifted": True}}, alert=True)
    DriftReport.objects.create(predictor=loan, model_version=v1, window_start=now - timedelta(days=3), window_end=now - timedelta(days=2),
                               n_live=100, fields={"amount": {"psi": 0.12}, "sector": {"psi": None}})
    for p, contributions in zip(models[:3], ({"amount": -0.4, "sector": 0.1, "years_trading": 0.2},
                                             {"amount": -0.2, "sector": -0.1, "years_trading": 0.4},
                                             {"amount": 0.3, "sector": 0.0, "years_trading": 0.0}), strict=True):
        ExplanationSample.objects.create(prediction=p, predictor=loan, model_version=1, contributions=contributions)
    return {"rows": rows, "by_kind": by_kind}


def _prediction(loan, kind: str, created, *, sector: str, output: str) -> Prediction:
    answered = kind != "pending"
    source = {"human": "human", "rule": "rule", "model": "model", "model-old": "model", "provisional": "rule", "pending": ""}[kind]
    return Prediction(
        predictor=loan, schema_version=1, input=factories.loan_input(sector=sector), route={"mode": "human", "reason": "mode"},
        status="answered" if answered else "pending", output=output if answered else None, source=source,
        provisional=kind == "provisional", model_version=1 if source == "model" else None, created_at=created,
        answered_at=created + timedelta(minutes=10) if answered else None,
    )


# -- the pages ---------------------------------------------------------------------------------------

def test_empty_predictor_renders_every_empty_state(otto_client, loan, django_assert_max_num_queries):
    with django_assert_max_num_queries(MAX_QUERIES):
        response = otto_client.get(_url(loan.slug))
    assert response.status_code == 200
    body = response.content.decode()
    for key in ("traffic", "queue-now", "queue-flow", "time-to-decision", "agreement", "appeals", "labels", "label-mix",
                "training", "drift", "explanations", "groups"):
        assert f'id="oz-empty-{key}"' in body, key
    assert 'class="oz-svg"' not in body
    assert "No predictions in the last 30 days." in body
    assert "No drift reports in the last 30 days." in body
    traffic = tables_of(response)["oz-table-traffic"]
    assert traffic["total"][1:] == ["0", "0", "0", "0", "0", "0"]


def test_busy_predictor_numbers(otto_client, loan, django_assert_max_num_queries):
    now = timezone.now()
    busy(loan, now)
    window = dashboard_window(30, now)
    for source, target, age in (("outcome", "approve", 2), ("import", "approve", 2), ("appeal", "refer", 40), ("import", "legacy", 40),
                                ("import", {"odd": 1}, 40)):
        label = Label.objects.create(predictor=loan, schema_version=1, input=factories.loan_input(), target=target, source=source)
        Label.objects.filter(pk=label.pk).update(created_at=now - timedelta(days=age))
    with django_assert_max_num_queries(MAX_QUERIES):
        response = otto_client.get(_url(loan.slug))
    assert response.status_code == 200
    body = response.content.decode()
    assert "id=\"oz-empty-" not in body and body.count('class="oz-svg"') == 12  # a chart in every panel
    tables = tables_of(response)

    traffic = tables["oz-table-traffic"]
    assert traffic["day"] == ["day", "Human", "Rule", "Model", "Provisional", "Unanswered (pending or expired)", "total"]
    assert traffic["total"][1:] == ["200", "100", "50", "20", "30", "400"]
    today = dashboard_window(30, now).labels[-1]
    assert traffic[today][1:] == ["20", "10", "5", "2", "3", "40"]
    assert len(traffic) == 1 + 30 + 1  # header, 30 days, total

    queue_now = tables["oz-table-queue-now"]
    assert queue_now["appeal"][1:3] == ["1", "0"]
    assert queue_now["routed"][1:3] == ["3", "0"]
    assert queue_now["qa_sample"][1:3] == ["0", "2"]
    assert queue_now["total"][1:3] == ["4", "2"]

    flow = tables["oz-table-queue-flow"]
    assert flow["total"][1:] == ["30", "24"]  # 30 created today (bulk_create wrote now), 24 decided

    ttd = tables["oz-table-time-to-decision"]
    assert ttd["all"][1] == "20"
    # Histogram percentiles: 3 in (300, 600], 1 in (5400, 7200] -> median 500 s, p90 6480 s.
    assert ttd["all"][2:] == [charts.duration(500), charts.duration(6480)]
    assert "15 of 20 decided within it (75%)" in body

    agreement = tables["oz-table-agreement"]
    assert agreement["v1"][1:] == ["champion", "20", "15", "75%"]
    assert agreement["v2"][1:] == ["candidate", "10", "9", "90%"]
    assert "the reviewer confirmed 3 (75%) and corrected 1" in body

    appeals = {(row[0], row[1]): row[2:] for row in tables["oz-table-appeals"].values()}
    assert appeals[("model", "v1")] == ["50", "3", "1", "1", "6%", "50%"]
    assert appeals[("human", "–")] == ["200", "1", "0", "0", "0.5%", "0%"]
    assert appeals[("rule", "–")][:2] == ["120", "0"]

    collected = tables["oz-table-labels"]
    assert collected["day"][1:3] == ["Review", "Low-confidence review"] and collected["day"][-1] == "total"
    # 31 review labels today (one since superseded), an outcome and an import 2 days ago, an
    # appeal 40 days ago (outside the window).
    assert collected[today][1] == "31" and collected[today][-1] == "31"  # (the object label is 40 days old)
    assert collected[window.labels[-3]][6:] == ["1", "1", "2"]
    assert collected["total"][1:] == ["31", "0", "0", "0", "0", "1", "1", "33"]
    mix = tables["oz-table-label-mix"]
    # Current labels: 16 approve, 14 refer (busy's 30), plus the outcome's and the import's
    # approve, the appeal's refer, a legacy target and an object: 35; the superseded one is not counted.
    assert mix["approve"][1:] == ["18", "51.4%"]
    assert mix["refer"][1:] == ["15", "42.9%"]
    assert mix["legacy"][1:] == ["1", "2.86%"]  # a target an earlier output spec allowed is shown too
    assert mix['{"odd": 1}'][1:] == ["1", "2.86%"]  # and any other JSON, as its text

    training = tables["oz-table-training"]
    assert training["v1"][1:] == ["champion", "0.8", "0.7"]
    assert training["v2"][1:] == ["candidate", "0.85", "0.75"]

    drift = tables["oz-table-drift"]
    assert drift["day"][:5] == ["day", "reports", "alerts", "amount", "sector"]
    assert drift[window.labels[-2]][1:5] == ["1", "1", "0.050", "0.310"]
    assert drift[window.labels[-3]][1:5] == ["1", "0", "0.120", "–"]

    explanations = tables["oz-table-explanations"]
    assert explanations["amount"][1:] == ["0.3000", "-0.1000", "3"]
    assert explanations["years_trading"][1:] == ["0.2000", "+0.2000", "3"]
    assert list(explanations)[1] == "amount"  # strongest first

    groups = tables["oz-table-groups"]
    # Answered per day: 37 (20 human, 10 rule, 5 model, 2 provisional); even positions are food.
    # food: positions 0,2,…,36 = 19 answered a day; favourable unless position % 4 == 3 (never even).
    assert groups["food"][1:4] == ["190", "190", "100%"]
    assert groups["retail"][1:4] == ["180", "90", "50%"]
    # Model answers at positions 30, 32, 34 (food) and 31, 33 (retail); appeals on models[0] (overturned)
    # and models[2] (food), models[1] and humans[-1] (position 19: retail).
    assert groups["food"][4:7] == ["30", "2", "1"]
    assert groups["retail"][4:7] == ["20", "2", "0"]


def test_a_number_outputs_label_panels(otto_client, tmp_path):
    from gateway.definitions import predictors_load
    from gateway.models import Predictor

    (tmp_path / "price.yaml").write_text(
        "slug: price\ninput: {size: {type: number}}\noutput: {type: number, minimum: 0}\nrouting: {mode: human}\n"
    )
    predictors_load(tmp_path / "price.yaml")
    price = Predictor.objects.get(slug="price")
    for target in (120.5, 99):
        Label.objects.create(predictor=price, schema_version=1, input={"size": 1}, target=target, source="review")
    response = otto_client.get(_url("price"))
    assert response.status_code == 200
    body = response.content.decode()
    assert tables_of(response)["oz-table-labels"]["total"][1] == "2"
    assert 'id="oz-empty-label-mix"' in body and "A number output: 2 current labels." in body


def test_the_range_selector(otto_client, loan):
    now = timezone.now()
    busy(loan, now, days=3, extra_old=7)
    response = otto_client.get(_url(loan.slug, 90))
    assert response.status_code == 200
    traffic = tables_of(response)["oz-table-traffic"]
    assert traffic["total"][1:] == ["60", "30", "22", "6", "9", "127"]
    assert len(traffic) == 1 + 90 + 1
    assert 'aria-current="page">90 days<' in response.content.decode()

    hourly = tables_of(otto_client.get(_url(loan.slug, 1)))["oz-table-traffic"]
    assert hourly["hour"][0] == "hour" and len(hourly) == 1 + 24 + 1
    assert hourly["total"][-1] == "40"  # only today's

    # Anything else is the default, 30 days.
    assert len(tables_of(otto_client.get(_url(loan.slug) + "?days=12"))["oz-table-traffic"]) == 1 + 30 + 1


@pytest.mark.parametrize("days", [1, 7, 30, 90])
def test_queries_do_not_grow_with_rows(otto_client, loan, django_assert_max_num_queries, days):
    busy(loan, timezone.now(), days=2, extra_old=0)
    with django_assert_max_num_queries(MAX_QUERIES) as small:
        assert otto_client.get(_url(loan.slug, days)).status_code == 200
    Prediction.objects.bulk_create(
        [_prediction(loan, k, timezone.now() - timedelta(hours=h), sector="food", output="approve")
         for h in range(48) for k in ("human", "rule", "model", "pending") for _ in range(3)]
    )
    with django_assert_max_num_queries(MAX_QUERIES) as large:
        assert otto_client.get(_url(loan.slug, days)).status_code == 200
    assert len(large.captured_queries) == len(small.captured_queries)


def test_reviewers_are_refused(client, loan, reviewer):
    client.force_login(reviewer[0])
    assert client.get(_url(loan.slug)).status_code == 403
    assert client.get(reverse("admin:gateway_predictor_dashboards")).status_code == 403


def test_anonymous_goes_to_the_login_page(client, loan):
    response = client.get(_url(loan.slug))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_index_and_links(otto_client, loan):
    response = otto_client.get(reverse("admin:gateway_predictor_dashboards"))
    assert response.status_code == 200
    assert _url(loan.slug) in response.content.decode()
    change = otto_client.get(reverse("admin:gateway_predictor_change", args=[loan.pk]))
    assert _url(loan.slug) in change.content.decode()
    changelist = otto_client.get(reverse("admin:gateway_predictor_changelist"))
    assert reverse("admin:gateway_predictor_dashboards") in changelist.content.decode()
    assert otto_client.get(_url("no-such-predictor")).status_code == 404


def test_every_chart_is_labelled(otto_client, loan):
    busy(loan, timezone.now(), days=2, extra_old=0)
    body = otto_client.get(_url(loan.slug)).content.decode()
    svgs = [part for part in body.split("<svg")[1:] if 'class="oz-svg"' in part.split(">", 1)[0]]
    assert len(svgs) == 12
    for svg in svgs:
        head = svg.split(">", 1)[0]
        assert 'role="img"' in head and 'aria-label="' in head
        assert "<title id=" in svg and "<desc id=" in svg
    assert "<script" not in body.split('id="content-main"', 1)[1].split("</main>")[0]
    assert "http://" not in "".join(svgs).replace("http://www.w3.org/2000/svg", "")


def test_percentile_of_a_histogram():
    edges = [10.0, 60.0, 600.0]
    assert _percentile([0, 0, 0, 0], edges, 0.5) is None
    assert _percentile([0, 2, 0, 0], edges, 0.5) == pytest.approx(35.0)  # halfway through (10, 60]
    assert _percentile([0, 0, 0, 5], edges, 0.9) == 600.0  # the open bucket reports its lower edge


def test_the_latest_drift_alert_is_a_banner_until_a_calm_report_follows(otto_client, loan):
    assert 'id="oz-drift-alert"' not in otto_client.get(_url(loan.slug)).content.decode()
    now = timezone.now()
    DriftReport.objects.create(predictor=loan, window_start=now - timedelta(hours=24), window_end=now, n_live=500,
                               fields={"amount": {"psi": 0.61, "drifted": True}, "sector": {"psi": 0.04, "drifted": False}},
                               alert=True)
    body = otto_client.get(_url(loan.slug)).content.decode()
    banner = body[body.index('id="oz-drift-alert"'):]
    banner = banner[:banner.index("</p>")]
    assert "amount PSI 0.61" in banner and "sector" not in banner and "500 requests" in banner
    DriftReport.objects.create(predictor=loan, window_start=now - timedelta(hours=23), window_end=now, n_live=500,
                               fields={"amount": {"psi": 0.05, "drifted": False}}, alert=False)
    assert 'id="oz-drift-alert"' not in otto_client.get(_url(loan.slug)).content.decode()
