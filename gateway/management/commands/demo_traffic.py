import random
import time

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Count

from gateway.demo import SyntheticPredictor, queue_work, reviewer_panel
from gateway.models import ApiClient, Prediction, Predictor
from gateway.schema import input_validate
from gateway.services import api_client_create, prediction_create

DEMO_CLIENT = "demo-traffic"
DEMO_REVIEWER = "demo-reviewer-bot"


class Command(BaseCommand):
    help = (
        "Send synthetic requests to a predictor through the normal prediction path; with "
        "--simulate-reviewer, also work the review queue, answering from a hidden ground truth."
    )

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--n", type=int, default=100, help="number of requests")
        parser.add_argument("--simulate-reviewer", action="store_true")
        parser.add_argument("--mistake-rate", type=float, default=0.0, help="share of reviewer answers that are wrong")
        parser.add_argument("--seed", type=int, default=None)
        parser.add_argument(
            "--scenario", action="store_true",
            help="play the whole loop, told as it happens: cold start, automatic retrain, shadow, canary, model mode, "
            "rollback, and an unfair model stopped by the fairness gate (needs a fresh database)",
        )
        parser.add_argument("--pause", type=float, default=0.0, help="with --scenario: seconds to wait between steps")

    def handle(self, *args, slug, n, simulate_reviewer, mistake_rate, seed, scenario, pause, **options):
        predictor = Predictor.objects.select_related("routing").filter(slug=slug).first()
        if predictor is None:
            raise CommandError(f"no predictor named {slug!r}")
        if scenario:
            return self._scenario(predictor, seed=8 if seed is None else seed, pause=pause, verbose=options["verbosity"] > 1)
        if n < 1:
            raise CommandError("--n must be at least 1")
        rng = random.Random(seed)
        # The hidden truth never looks at the sensitive attribute: any gap between groups a
        # model shows is noise, or bias it learned from its labels.
        blind = (predictor.sensitive_attribute,) if predictor.sensitive_attribute else ()
        world = SyntheticPredictor(predictor.schema, predictor.output_spec, blind_to=blind)
        client = ApiClient.objects.filter(name=DEMO_CLIENT).first() or api_client_create(name=DEMO_CLIENT)[0]
        panel = reviewer_panel(predictor, DEMO_REVIEWER) if simulate_reviewer else []
        started = time.monotonic()
        correct = answered_now = 0
        for _ in range(n):
            data = world.input(rng)
            clean, errors = input_validate(predictor.schema, data)
            if errors:  # the generator follows the schema; this would be a bug in it
                raise CommandError(f"generated input failed validation: {errors}")
            predictor.routing.refresh_from_db()
            prediction, _ = prediction_create(predictor=predictor, policy=predictor.routing, client=client, clean_input=clean)
            if prediction.output is not None:
                answered_now += 1
                correct += prediction.output == world.truth(clean)

        def answer(reviewer, data):
            truth = world.truth(data)
            if mistake_rate and rng.random() < mistake_rate and predictor.output_spec["type"] == "label":
                return rng.choice([x for x in predictor.output_spec["labels"] if x != truth])
            return truth

        decided = queue_work(panel, answer)
        by_source = dict(
            Prediction.objects.filter(predictor=predictor).values_list("source").annotate(c=Count("id")).order_by()
        )
        self.stdout.write(f"sent {n} requests to {slug} in {time.monotonic() - started:.1f}s "
                          f"(routing mode: {predictor.routing.mode})")
        if answered_now:
            self.stdout.write(f"  answered at once: {answered_now}, agreeing with the hidden truth: "
                              f"{correct}/{answered_now} ({correct / answered_now:.0%})")
        if panel:
            who = "simulated reviewer" if len(panel) == 1 else f"{len(panel)} simulated reviewers"
            self.stdout.write(f"  {who} decided {decided} tasks")
        self.stdout.write(f"  predictions so far by source: { {k or 'pending': v for k, v in by_source.items()} }")
        versions = ", ".join(f"v{v} {stage}" for v, stage in predictor.model_versions.order_by("version").values_list("version", "stage"))
        self.stdout.write(f"  model versions: {versions or 'none yet'}")
        self.stdout.write(f"next: manage.py train {slug} --wait (its gates set its stage), promote {slug} <version>, "
                          f"set_routing {slug} --mode model; or the whole story: make demo")

    def _scenario(self, predictor, *, seed: int, pause: float, verbose: bool):
        import logging

        from gateway.demo_scenario import Scenario, ScenarioRefused

        try:
            story = Scenario(predictor, say=self.stdout.write, seed=seed, pause=pause)
        except ScenarioRefused as exc:
            raise CommandError(str(exc)) from None
        # The story says what happened; the services' INFO lines (kept in each run's log
        # all the same) would drown it. -v 2 shows them.
        console = [] if verbose else [(h, h.level) for h in logging.getLogger().handlers]
        for handler, _ in console:
            handler.setLevel(max(handler.level, logging.WARNING))
        try:
            outcome = story.run()
        finally:
            for handler, level in console:
                handler.setLevel(level)
        if not outcome.get("ok"):
            raise CommandError(f"the scenario stopped early: {outcome.get('stopped')}")
