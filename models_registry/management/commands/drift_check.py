from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError

from gateway.models import Predictor
from models_registry.drift import drift_check, psi_alert
from models_registry.models import ModelVersion, Stage


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-3 and value else f"{value:.{digits}f}"
    return str(value)


class Command(BaseCommand):
    help = (
        "Compare the live inputs of a predictor's champion (or of every predictor with a champion) over a window "
        "with its training inputs, store a drift report and print it as a table."
    )

    def add_arguments(self, parser):
        parser.add_argument("slug", nargs="?", help="one predictor; every predictor with a champion when left out")
        parser.add_argument("--hours", type=float, default=None, help="the window, in hours (default OZ_DRIFT_WINDOW_HOURS)")

    def handle(self, *args, slug=None, hours=None, **options):
        from django.conf import settings

        window = timedelta(hours=hours if hours is not None else getattr(settings, "OZ_DRIFT_WINDOW_HOURS", 24))
        if slug:
            predictors = list(Predictor.objects.filter(slug=slug))
            if not predictors:
                raise CommandError(f"no predictor named {slug!r}")
        else:
            with_champion = ModelVersion.objects.filter(stage=Stage.CHAMPION).values_list("predictor_id", flat=True)
            predictors = list(Predictor.objects.filter(pk__in=with_champion).order_by("slug"))
            if not predictors:
                self.stdout.write("no predictor has a champion: nothing to compare")
                return
        failed = False
        for predictor in predictors:
            report = drift_check(predictor, window=window)
            if report is None:
                self.stdout.write(f"{predictor.slug}: no champion, nothing to compare")
                failed = failed or bool(slug)
                continue
            self._print(predictor, report)
        if failed:
            raise CommandError(f"{slug} has no champion")

    def _print(self, predictor, report):
        version = report.model_version.version if report.model_version_id else "?"
        outputs = report.outputs or {}
        self.stdout.write(
            f"{predictor.slug} (champion v{version}): {report.n_live} live rows compared "
            f"of {outputs.get('n_window', report.n_live)} from {report.window_start:%Y-%m-%d %H:%M} "
            f"to {report.window_end:%Y-%m-%d %H:%M} UTC; alert at PSI > {psi_alert()}"
        )
        rows = [("field", "test", "PSI", "statistic", "p-value", "drifted")]
        for name, f in (report.fields or {}).items():
            rows.append((name, f.get("test") or "-", _fmt(f.get("psi")), _fmt(f.get("statistic")), _fmt(f.get("p_value")),
                         "DRIFT" if f.get("drifted") else "no"))
        widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            self.stdout.write("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        if outputs.get("type") == "label":
            reference = outputs.get("reference") or {}
            self.stdout.write("outputs: reference " + ", ".join(f"{k} {v:.2f}" for k, v in reference.items()))
            for source, shares in (outputs.get("by_source") or {}).items():
                line = ", ".join(f"{k} {v:.2f}" for k, v in shares.items())
                self.stdout.write(f"  {source}: {line} (PSI {_fmt((outputs.get('psi') or {}).get(source))})")
        self.stdout.write(f"ALERT: input drift for {predictor.slug}" if report.alert else "no alert")
