"""`manage.py demo_traffic SLUG --scenario` (or `make demo`): the whole loop on one predictor,
told as it happens, through the same services the API and the admin use.

1. Cold start: every request goes to the (simulated) reviewers; their decisions are labels;
   at `training.retrain_after_labels` labels a training run starts by itself.
2. Shadow: the new version is a challenger; it answers every request in shadow, never to the
   client, and its agreement with the reviewers climbs until its gate promotes it.
3. Canary: the champion answers a share of the requests, chosen by a stable request key.
4. Model mode: the champion answers; below the confidence threshold a reviewer does, with
   the model's suggestion in front of them.
5. A retrain is shipped in a hurry past its pending gate, then rolled back in one step.
6. A reviewer with a bias (every application from one group is referred) works the QA
   queue; the labels retrain a model that the fairness gate rejects.

Training runs go to Celery like any other; the scenario also runs each queued run itself
(`training_run_execute` starts a queued run once, so whoever comes first does it) and runs
the shadows of its own requests (idempotent), so it works with or without a worker. Every
request carries a routing key from the seed, so a run with the same seed routes the same.
It needs a predictor with no training runs yet: a fresh database (see README)."""
from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable

from django.db.models import Count

from models_registry.gates import shadow_gates_sweep
from models_registry.models import ModelVersion, Stage, TrainingRun
from models_registry.services import PromotionRefused, gates_blocking, model_version_promote, model_version_rollback
from models_registry.shadow import shadow_agreement, shadow_run
from models_registry.training import TrainingAlreadyActive, training_run_execute, training_run_request
from review.selectors import labels_current

from .demo import SyntheticPredictor, queue_work, reviewer_panel
from .models import ApiClient, Prediction, Predictor
from .roles import OPERATORS
from .schema import input_validate
from .services import api_client_create, person_create, prediction_create, routing_update

DEMO_CLIENT = "demo-scenario"
HONEST_PANEL = "demo-reviewer-bot"
BIASED_REVIEWER = "demo-reviewer-biased"
OPERATOR = "demo-operator-bot"
BATCH = 25
RUN_WAIT_SECONDS = 600


class ScenarioRefused(Exception):
    """The predictor cannot play the scenario (the message says why)."""


def scenario_check(predictor: Predictor) -> None:
    problems = []
    if predictor.output_spec.get("type") != "label":
        problems.append("its output must be a label")
    if not predictor.sensitive_attribute:
        problems.append("it must name a sensitive_attribute (the fairness gate measures it)")
    training, gates = predictor.training or {}, predictor.gates or {}
    if not training.get("retrain_after_labels"):
        problems.append("it needs training.retrain_after_labels (the automatic retrain)")
    if not gates.get("min_shadow_agreement") or not gates.get("max_fairness_gaps"):
        problems.append("it needs gates min_shadow_agreement and max_fairness_gaps")
    if not predictor.auto_promote:
        problems.append("it needs auto_promote: true")
    if not predictor.rules:
        problems.append("it needs rules (the kill switch and rule fallback use them)")
    if TrainingRun.objects.filter(predictor=predictor).exists():
        problems.append("it already has training runs: start from a fresh database")
    if problems:
        raise ScenarioRefused(f"{predictor.slug} cannot play the scenario: " + "; ".join(problems))


class Scenario:
    def __init__(self, predictor: Predictor, *, say: Callable[[str], None], seed: int = 7, pause: float = 0.0):
        scenario_check(predictor)
        self.predictor = predictor
        self.say = say
        self.pause = pause
        self.rng = random.Random(seed)
        self.seed = seed
        self.sent = 0
        attribute = predictor.sensitive_attribute
        self.world = SyntheticPredictor(predictor.schema, predictor.output_spec, blind_to=(attribute,))
        self.attribute = attribute
        choices = predictor.schema[attribute].get("choices") or []
        # The group the biased reviewer refers (food, in the demo predictor).
        self.target_group = choices[1] if len(choices) > 1 else (choices[0] if choices else None)
        self.client = ApiClient.objects.filter(name=DEMO_CLIENT).first() or api_client_create(name=DEMO_CLIENT)[0]
        self.honest = reviewer_panel(predictor, HONEST_PANEL)
        self.biased = reviewer_panel(predictor, BIASED_REVIEWER)
        self.operator = person_create(username=OPERATOR, group=OPERATORS)[0]
        self.labels = predictor.output_spec["labels"]
        self.refer = self.labels[-1]
        self.outcome: dict = {}
        self.told: set[int] = set()

    # -- the pieces ------------------------------------------------------------------------
    def _heading(self, number: int, title: str) -> None:
        if number > 1 and self.pause:
            time.sleep(self.pause)
        self.say("")
        self.say(f"== {number}. {title}")

    def _routing(self, changes: dict, reason: str) -> None:
        policy = routing_update(predictor=self.predictor, changes=changes, user=self.operator, reason=f"demo: {reason}")
        flags = (f"mode={policy.mode} fallback={policy.fallback} canary={policy.canary_percent:g}% "
                 f"shadow={'on' if policy.shadow else 'off'} confidence_threshold={policy.confidence_threshold} "
                 f"qa_sample={policy.qa_sample_percent:g}%")
        self.say(f"   routing v{policy.version}: {flags}")

    def _send(self, n: int) -> list[Prediction]:
        """n requests through prediction_create, as the API sends them; shadows run here too."""
        sent = []
        for _ in range(n):
            self.sent += 1
            clean, errors = input_validate(self.predictor.schema, self.world.input(self.rng))
            if errors:  # the generator follows the schema; this would be a bug in it
                raise RuntimeError(f"generated input failed validation: {errors}")
            self.predictor.routing.refresh_from_db()
            prediction, _ = prediction_create(
                predictor=self.predictor, policy=self.predictor.routing, client=self.client, clean_input=clean,
                routing_key=f"scenario-{self.seed}-{self.sent}",
            )
            sent.append(prediction)
        for prediction in sent:
            versions = [v for v in (prediction.route or {}).get("shadow") or [] if isinstance(v, int)]
            if versions:
                ids = list(ModelVersion.objects.filter(predictor=self.predictor, version__in=versions).values_list("pk", flat=True))
                shadow_run(prediction_id=prediction.pk, version_ids=ids)
        return sent

    def _honest_answer(self, reviewer, data):
        return self.world.truth(data)

    def _biased_answer(self, reviewer, data):
        return self.refer if data.get(self.attribute) == self.target_group else self.world.truth(data)

    def _work(self, panel: list, answer) -> int:
        decided = queue_work(panel, answer)
        self._runs_finish()
        return decided

    def _runs_finish(self) -> list[TrainingRun]:
        """Run what is queued (unless a worker got there first), wait for what runs, and
        tell each run that has finished since the last look (eager Celery runs them inline)."""
        runs = TrainingRun.objects.filter(predictor=self.predictor)
        for run_id in runs.filter(status__in=["queued", "running"]).order_by("pk").values_list("pk", flat=True):
            training_run_execute(run_id=run_id)
            deadline = time.monotonic() + RUN_WAIT_SECONDS
            while runs.filter(pk=run_id, status__in=["queued", "running"]).exists() and time.monotonic() < deadline:
                time.sleep(0.5)
        finished = list(runs.exclude(pk__in=self.told).exclude(status__in=["queued", "running"]).order_by("pk"))
        for run in finished:
            self.told.add(run.pk)
            self._tell_run(run)
        return finished

    def _tell_run(self, run: TrainingRun) -> None:
        labels = (run.dataset or {}).get("n_labels")
        self.say(f"   training run #{run.pk} ({run.trigger}, {labels} labels): {run.status}")
        if run.status != "succeeded":
            self.say(f"     error: {run.error.splitlines()[0] if run.error else '?'}")
            return
        version = run.model_version
        metrics = run.metrics or {}
        gaps = {k: v for k, v in (run.fairness or {}).items() if k.endswith("_difference")}
        self.say(f"     v{version.version}: accuracy {metrics.get('accuracy', 0):.2f}, macro F1 {metrics.get('f1_macro', 0):.2f}, "
                 f"serving {version.serving_format}; {self.attribute} gaps "
                 + ", ".join(f"{k} {v:.2f}" for k, v in gaps.items() if isinstance(v, (int, float))))
        self._tell_gates(version)

    def _tell_gates(self, version: ModelVersion) -> None:
        version.refresh_from_db()
        for gate in version.gates or []:
            mark = {True: "pass", False: "FAIL", None: "wait"}[gate.get("passed")]
            self.say(f"       [{mark}] {gate['gate']}: {gate.get('detail', '')}")
        self.say(f"     v{version.version} is now {version.stage}")

    def _versions(self) -> str:
        rows = ModelVersion.objects.filter(predictor=self.predictor).order_by("version")
        return ", ".join(f"v{v.version} {v.stage}" for v in rows) or "none"

    def _sources(self, predictions: list[Prediction]) -> Counter:
        counts: Counter = Counter()
        for prediction in predictions:
            prediction.refresh_from_db()
            counts[prediction.route.get("reason", "?") if prediction.source is None else prediction.source] += 1
        return counts

    # -- the story -------------------------------------------------------------------------
    def run(self) -> dict:
        p = self.predictor
        threshold = p.training["retrain_after_labels"]
        self.say(f"Scenario on {p.slug} (seed {self.seed}): the hidden truth never looks at {self.attribute}.")

        self._heading(1, "Cold start: people answer, and every decision is a label")
        self._routing({"mode": "human", "fallback": "human", "canary_percent": 0.0, "shadow": True,
                       "confidence_threshold": None, "qa_sample_percent": 0.0}, "cold start")
        v1 = None
        for _ in range(2 * threshold // BATCH + 4):
            self._send(BATCH)
            self._work(self.honest, self._honest_answer)
            n = labels_current(predictor=p).count()
            self.say(f"   {self.sent} requests, {n} labels (a retrain starts itself at {threshold})")
            v1 = ModelVersion.objects.filter(predictor=p).order_by("version").first()
            if v1 is not None:
                break
        if v1 is None:
            return self._stop("no version was trained from the cold-start labels")
        self.outcome["first"] = v1.version

        self._heading(2, f"Shadow: v{v1.version} answers every request in secret; its gate waits for agreement")
        for _ in range(12):
            v1.refresh_from_db()
            if v1.stage not in (Stage.CANDIDATE, Stage.CHALLENGER) or v1.gates_passed is not None:
                break
            self._send(BATCH)
            self._work(self.honest, self._honest_answer)
            shadow_gates_sweep()
            agreement = shadow_agreement(version=v1)
            rate = f"{agreement['rate']:.0%}" if agreement["rate"] is not None else "-"
            self.say(f"   v{v1.version} agreed with the reviewers on {agreement['agreeing']} of {agreement['n']} ({rate})")
        self._tell_gates(v1)
        if v1.stage != Stage.CHAMPION:
            return self._stop(f"v{v1.version} was not promoted by its shadow gate")

        self._heading(3, f"Canary: v{v1.version} answers a quarter of the requests, chosen by request key")
        self._routing({"canary_percent": 25.0}, "canary 25%")
        batch = self._send(2 * BATCH)
        self._work(self.honest, self._honest_answer)
        counts = self._sources(batch)
        self.say(f"   of {len(batch)} requests: model {counts['model']}, reviewers {counts['human']}")
        self.outcome["canary"] = dict(counts)

        self._heading(4, "Model mode: the model answers; below 75% confidence a reviewer does, with its suggestion")
        self._routing({"mode": "model", "canary_percent": 0.0, "confidence_threshold": 0.75, "fallback": "human",
                       "shadow": False}, "model mode with a confidence threshold")
        batch = self._send(2 * BATCH)
        low = [x for x in batch if x.route.get("reason") == "low_confidence"]
        if low:
            task = low[0].review_tasks.first()
            suggestion = task.suggestion or {}
            self.say(f"   a low-confidence task shows the reviewer: model says {suggestion.get('output')!r} "
                     f"at {suggestion.get('confidence') or 0:.0%}")
        self._work(self.honest, self._honest_answer)
        counts = self._sources(batch)
        self.say(f"   of {len(batch)} requests: model {counts['model']}, reviewers {counts['human']} "
                 f"({len(low)} below the threshold)")
        self.outcome["model_mode"] = dict(counts)

        self._heading(5, "A retrain shipped in a hurry, and a one-step rollback")
        try:
            run = training_run_request(predictor=p, requested_by=self.operator)
        except TrainingAlreadyActive as exc:
            run = exc.run
        self._runs_finish()
        run.refresh_from_db()
        v2 = getattr(run, "model_version", None) if run.status == "succeeded" else None
        if v2 is None:
            return self._stop("the manual retrain produced no version")
        if v2.stage in (Stage.CANDIDATE, Stage.CHALLENGER):
            blocking = [g["gate"] for g in gates_blocking(v2)]
            try:
                model_version_promote(version=v2, user=self.operator, force=bool(blocking),
                                      reason="demo: shipped before its shadow evidence came in")
                self.say(f"   the operator promotes v{v2.version} past its waiting gates ({', '.join(blocking) or 'none'}), "
                         "with a written reason")
            except PromotionRefused as exc:
                self.say(f"   promotion refused: {exc}")
        self.say(f"   versions: {self._versions()}")
        restored = model_version_rollback(predictor=p, user=self.operator, reason="demo: complaints after the release")
        self.say(f"   rollback: v{restored.version} is champion again; every web worker sees it within seconds")
        self.say(f"   versions: {self._versions()}")
        self.outcome["rolled_back_to"] = restored.version

        self._heading(6, f"A reviewer refers every {self.attribute}={self.target_group} application; the fairness gate catches it")
        self._routing({"qa_sample_percent": 100.0}, "QA week: every model answer is reviewed too")
        rejected = None
        for _ in range(24):
            self._send(BATCH)
            self._work(self.biased, self._biased_answer)
            latest = ModelVersion.objects.filter(predictor=p).order_by("-version").first()
            if latest.version > v2.version and latest.stage == Stage.REJECTED and any(
                g["gate"].startswith("max_fairness_gaps") and g.get("passed") is False for g in latest.gates or []
            ):
                rejected = latest
                break
        self._routing({"qa_sample_percent": 0.0}, "QA week over")
        if rejected is None:
            return self._stop("the biased labels did not produce a model the fairness gate rejects")
        self.outcome["unfair_rejected"] = rejected.version

        self.say("")
        self.say(f"Done: {self.sent} requests; versions: {self._versions()}.")
        by_source = dict(Prediction.objects.filter(predictor=p).values_list("source").annotate(c=Count("id")).order_by())
        self.say(f"   answers by source: { {k or 'pending': v for k, v in by_source.items()} }")
        self.outcome["ok"] = True
        return self.outcome

    def _stop(self, why: str) -> dict:
        self.say(f"The scenario stopped: {why}. Versions: {self._versions()}.")
        self.outcome["ok"] = False
        self.outcome["stopped"] = why
        return self.outcome
