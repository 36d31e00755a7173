"""Retention of drift reports: reports older than OZ_DRIFT_REPORT_KEEP_DAYS go, each
predictor's newest stays however old, 0 keeps everything, other predictors are untouched,
deletion runs in batches, and the periodic check prunes at the end of each run."""
from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext, override_settings
from django.utils import timezone

from gateway.definitions import predictors_load
from gateway.models import Predictor
from models_registry import drift, tasks
from models_registry.drift import drift_check_all, drift_latest, drift_reports_prune
from models_registry.models import DriftReport

pytestmark = pytest.mark.django_db

NOW = timezone.now()


def _report(predictor, *, days_old: float, now=NOW) -> DriftReport:
    """A report whose created_at is `days_old` days before `now` (created_at is auto_now_add,
    so it is set afterwards)."""
    created = now - timedelta(days=days_old)
    report = DriftReport.objects.create(predictor=predictor, window_start=created - timedelta(hours=24), window_end=created)
    DriftReport.objects.filter(pk=report.pk).update(created_at=created)
    return report


def _ids(predictor) -> set[int]:
    return set(DriftReport.objects.filter(predictor=predictor).values_list("id", flat=True))


@pytest.fixture
def price(tmp_path):
    (tmp_path / "price.yaml").write_text(
        "slug: price\ninput: {size: {type: number}}\noutput: {type: number, minimum: 0}\nrouting: {mode: human}\n"
    )
    predictors_load(tmp_path / "price.yaml")
    return Predictor.objects.get(slug="price")


@override_settings(OZ_DRIFT_REPORT_KEEP_DAYS=90)
def test_old_reports_go_and_recent_ones_stay(loan, caplog):
    old = [_report(loan, days_old=d) for d in (400, 200, 91)]
    recent = [_report(loan, days_old=d) for d in (89, 10, 0)]
    with caplog.at_level(logging.INFO, logger="models_registry.drift"):
        assert drift_reports_prune(now=NOW) == 3
    assert _ids(loan) == {r.pk for r in recent}
    assert not DriftReport.objects.filter(pk__in=[r.pk for r in old]).exists()
    assert "pruned 3 drift reports older than 90 days" in caplog.text


@override_settings(OZ_DRIFT_REPORT_KEEP_DAYS=30)
def test_the_cutoff_follows_the_setting_and_now(loan):
    kept = _report(loan, days_old=29)
    gone = _report(loan, days_old=31)
    newest = _report(loan, days_old=1)
    assert drift_reports_prune(now=NOW) == 1
    assert _ids(loan) == {kept.pk, newest.pk}
    # Ten days later the report of 29 days has passed the cutoff too; the newest has not.
    assert drift_reports_prune(now=NOW + timedelta(days=10)) == 1
    assert _ids(loan) == {newest.pk}
    assert not DriftReport.objects.filter(pk=gone.pk).exists()


@override_settings(OZ_DRIFT_REPORT_KEEP_DAYS=90)
def test_the_newest_report_of_a_predictor_stays_however_old(loan):
    """A champion without traffic for months: its last check is still what the API shows."""
    _report(loan, days_old=500)
    _report(loan, days_old=400)
    last = _report(loan, days_old=300)
    assert drift_reports_prune(now=NOW) == 2
    assert _ids(loan) == {last.pk}
    assert drift_latest([loan.pk])[loan.pk].pk == last.pk
    assert drift_reports_prune(now=NOW) == 0
    assert _ids(loan) == {last.pk}


@override_settings(OZ_DRIFT_REPORT_KEEP_DAYS=90)
def test_the_newest_by_id_and_the_newest_by_time_both_stay(loan):
    """drift_latest picks the highest id, the dashboard and metrics the latest created_at;
    when the two disagree (clocks of two hosts), both are kept so every view has one."""
    newest_by_time = _report(loan, days_old=200)
    middle = _report(loan, days_old=300)
    newest_by_id = _report(loan, days_old=400)
    assert drift_reports_prune(now=NOW) == 1
    assert _ids(loan) == {newest_by_time.pk, newest_by_id.pk}
    assert not DriftReport.objects.filter(pk=middle.pk).exists()
    assert drift_latest([loan.pk])[loan.pk].pk == newest_by_id.pk
    assert DriftReport.objects.filter(predictor=loan).first().pk == newest_by_time.pk


@override_settings(OZ_DRIFT_REPORT_KEEP_DAYS=0)
def test_zero_keeps_every_report(loan):
    reports = [_report(loan, days_old=d) for d in (3000, 400, 91, 1)]
    assert drift_reports_prune(now=NOW) == 0
    assert _ids(loan) == {r.pk for r in reports}


@override_settings(OZ_DRIFT_REPORT_KEEP_DAYS=90)
def test_other_predictors_keep_their_reports(loan, price):
    """Loan's recent report is not price's newest: price keeps its only report, old as it is."""
    price_last = _report(price, days_old=150)
    _report(loan, days_old=200)
    loan_recent = _report(loan, days_old=5)
    assert drift_reports_prune(now=NOW) == 1
    assert _ids(loan) == {loan_recent.pk}
    assert _ids(price) == {price_last.pk}


@override_settings(OZ_DRIFT_REPORT_KEEP_DAYS=90)
def test_one_predictors_reports_do_not_shield_another_ones(loan, price):
    """Each predictor's newest is its own: price's only report stays (its newest) while
    loan's old reports go, although loan has a recent report of its own."""
    price_only = _report(price, days_old=1000)
    loan_old = [_report(loan, days_old=d) for d in (300, 200)]
    loan_recent = _report(loan, days_old=1)
    price_recent = _report(price, days_old=3)
    assert drift_reports_prune(now=NOW) == 3
    assert _ids(loan) == {loan_recent.pk}
    assert _ids(price) == {price_recent.pk}
    assert not DriftReport.objects.filter(pk__in=[price_only.pk, *(r.pk for r in loan_old)]).exists()


@override_settings(OZ_DRIFT_REPORT_KEEP_DAYS=90)
def test_deletion_runs_in_bounded_batches(loan, monkeypatch):
    monkeypatch.setattr(drift, "PRUNE_BATCH", 2)
    for d in range(100, 105):
        _report(loan, days_old=d)
    newest = _report(loan, days_old=1)
    with CaptureQueriesContext(connection) as queries:
        assert drift_reports_prune(now=NOW) == 5
    deletes = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("DELETE")]
    assert len(deletes) == 3  # 2 + 2 + 1
    assert _ids(loan) == {newest.pk}


@override_settings(OZ_DRIFT_REPORT_KEEP_DAYS=90)
def test_the_periodic_check_prunes(loan, price):
    """No predictor has a champion, so nothing is checked, and the run still prunes."""
    now = timezone.now()
    price_last = _report(price, days_old=365, now=now)
    _report(loan, days_old=120, now=now)
    loan_older = _report(loan, days_old=88, now=now)
    loan_recent = _report(loan, days_old=1, now=now)
    assert tasks.drift_check_all() == {"checked": 0, "alerts": 0, "failed": 0}
    assert _ids(loan) == {loan_older.pk, loan_recent.pk}
    assert _ids(price) == {price_last.pk}
    # The run's `now` is the pruning's: five days on, the report of 88 days has passed 90.
    assert drift_check_all(now=now + timedelta(days=5)) == {"checked": 0, "alerts": 0, "failed": 0}
    assert _ids(loan) == {loan_recent.pk}
    assert _ids(price) == {price_last.pk}


def test_a_failed_prune_is_logged_and_the_check_still_reports(loan, monkeypatch, caplog):
    def broken(**kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(drift, "drift_reports_prune", broken)
    with caplog.at_level(logging.ERROR, logger="models_registry.drift"):
        assert drift_check_all() == {"checked": 0, "alerts": 0, "failed": 0}
    assert "pruning drift reports failed" in caplog.text
