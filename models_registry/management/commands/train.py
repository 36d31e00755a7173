import json
import time

from django.core.management.base import BaseCommand, CommandError

from gateway.models import Predictor
from models_registry.models import TrainingRun
from models_registry.presenters import run_as_dict
from models_registry.training import TrainingAlreadyActive, training_run_request


class Command(BaseCommand):
    help = "Start a training run for a predictor (in a Celery worker); --wait follows it to the end."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--wait", action="store_true", help="wait for the run to finish and print its result")
        parser.add_argument("--timeout", type=int, default=1800)

    def handle(self, *args, slug, wait, timeout, **options):
        predictor = Predictor.objects.filter(slug=slug).first()
        if predictor is None:
            raise CommandError(f"no predictor named {slug!r}")
        try:
            run = training_run_request(predictor=predictor)
        except TrainingAlreadyActive as exc:
            raise CommandError(f"run {exc.run.pk if exc.run else '?'} is already queued or running for {slug}") from None
        self.stdout.write(f"training run {run.pk} queued for {slug}")
        if not wait:
            return
        deadline = time.monotonic() + timeout
        while True:
            run.refresh_from_db()
            if run.status in (TrainingRun.Status.SUCCEEDED, TrainingRun.Status.FAILED):
                break
            if time.monotonic() > deadline:
                raise CommandError(f"run {run.pk} still {run.status} after {timeout}s")
            time.sleep(0.5)
        run = TrainingRun.objects.select_related("predictor", "model_version").get(pk=run.pk)
        summary = run_as_dict(run)
        if run.status == TrainingRun.Status.FAILED:
            raise CommandError(f"run {run.pk} failed: {run.error.splitlines()[0] if run.error else 'unknown error'}")
        params = summary["params"] or {}
        metrics = {k: v for k, v in (summary["metrics"] or {}).items() if k != "calibration"}
        champion = {k: v for k, v in (summary["champion_metrics"] or {}).items() if k != "calibration"}
        fairness = summary["fairness"] or {}
        shown = {
            "id": summary["id"],
            "status": summary["status"],
            "model_version": summary["model_version"],
            "estimator": summary["estimator"],
            "chosen_params": params.get("chosen_params"),
            "grid_best_score": (params.get("grid_search") or {}).get("best_score"),
            "split": params.get("split"),
            "metrics": metrics,
            "champion_metrics": champion or None,
            "fairness_gaps": {k: fairness.get(k) for k in ("demographic_parity_difference", "equalized_odds_difference")}
            if fairness else None,
            "dataset": {k: summary["dataset"].get(k) for k in ("n_labels", "n_train", "n_holdout", "label_ids_sha256", "class_counts")},
            "duration_seconds": summary["duration_seconds"],
            "peak_memory_bytes": summary["peak_memory_bytes"],
            "gates_passed": summary.get("gates_passed"),
        }
        self.stdout.write(json.dumps(shown, indent=2))
        version = run.model_version
        version.refresh_from_db()
        if version.stage == "candidate":
            self.stdout.write(f"model version {version.version} registered as a candidate; "
                              f"promote it with: manage.py promote {slug} {version.version}")
        else:
            self.stdout.write(f"model version {version.version} registered; its gates made it {version.stage}: {version.stage_reason}")
