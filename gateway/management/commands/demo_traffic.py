import random
import time

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Count

from gateway.demo import SyntheticPredictor
from gateway.models import ApiClient, Prediction, Predictor
from gateway.roles import REVIEWERS
from gateway.schema import input_validate
from gateway.services import api_client_create, person_create, prediction_create
from review.services import review_task_claim_next, review_task_decide

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

    def handle(self, *args, slug, n, simulate_reviewer, mistake_rate, seed, **options):
        predictor = Predictor.objects.select_related("routing").filter(slug=slug).first()
        if predictor is None:
            raise CommandError(f"no predictor named {slug!r}")
        if n < 1:
            raise CommandError("--n must be at least 1")
        rng = random.Random(seed)
        world = SyntheticPredictor(predictor.schema, predictor.output_spec)
        client = ApiClient.objects.filter(name=DEMO_CLIENT).first() or api_client_create(name=DEMO_CLIENT)[0]
        # Consensus needs that many different people, and an adjudication one more.
        panel = (
            [
                person_create(username=DEMO_REVIEWER if i == 0 else f"{DEMO_REVIEWER}-{i + 1}", group=REVIEWERS)[0]
                for i in range(predictor.reviews_required + (1 if predictor.reviews_required > 1 else 0))
            ]
            if simulate_reviewer
            else []
        )
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
        decided = 0
        turn = idle = 0
        while panel and idle < len(panel):  # round robin until nobody on the panel finds work
            reviewer = panel[turn % len(panel)]
            turn += 1
            task = review_task_claim_next(reviewer=reviewer)
            if task is None:
                idle += 1
                continue
            idle = 0
            answer = world.truth(task.prediction.input)
            if mistake_rate and rng.random() < mistake_rate and predictor.output_spec["type"] == "label":
                answer = rng.choice([x for x in predictor.output_spec["labels"] if x != answer])
            review_task_decide(task_id=task.pk, reviewer=reviewer, output=answer, note="simulated reviewer")
            decided += 1
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
        self.stdout.write(f"next: manage.py train {slug} --wait, then promote {slug} <version>, "
                          f"then set_routing {slug} --mode model")
