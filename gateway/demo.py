"""Synthetic traffic for trying Oz: inputs drawn from a predictor's schema, and a hidden
ground-truth function of those inputs that the simulated reviewer answers from.

The ground truth is a fixed, seeded linear score over the input fields, so a model trained
on the reviewer's labels can learn it, and its accuracy on fresh traffic says something.
Fields named in `blind_to` (the predictor's sensitive attribute, in the demos) carry no
weight: the truth is the same for every group, so a gap a model shows between groups is
noise or bias it learned from its labels."""
from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

WORDS = (
    "steady growing seasonal new established family online local export import café bakery "
    "repair consulting cleaning retail workshop delivery franchise contract lease equipment"
).split()


@dataclass
class SyntheticPredictor:
    schema: dict
    output_spec: dict
    seed: int = 7
    blind_to: tuple[str, ...] = field(default=())

    def __post_init__(self):
        rng = random.Random(self.seed)
        self.weights = {}
        for name, spec in self.schema.items():
            kind = spec["type"]
            if kind in ("number", "integer", "boolean"):
                self.weights[name] = rng.uniform(-1.5, 1.5)
            elif kind == "category":
                self.weights[name] = {c: rng.uniform(-1, 1) for c in spec["choices"]}
            else:
                self.weights[name] = {w: rng.uniform(-0.3, 0.3) for w in WORDS}
            if name in self.blind_to:  # drawn all the same, so the other weights stay put
                self.weights[name] = 0.0 if not isinstance(self.weights[name], dict) else dict.fromkeys(self.weights[name], 0.0)

    # -- inputs ---------------------------------------------------------------------------
    def _number(self, spec, rng) -> float:
        low = spec.get("minimum", 0)
        high = spec.get("maximum", max(low, 0) + (50_000 if spec["type"] == "number" else 20))
        if spec["type"] == "number" and high - low > 1000:
            # money-like: log-uniform
            value = math.exp(rng.uniform(math.log(max(low, 100)), math.log(high)))
            return round(value, 2)
        return rng.uniform(low, high)

    def input(self, rng: random.Random) -> dict:
        data = {}
        for name, spec in self.schema.items():
            if not spec.get("required") and rng.random() < 0.1:
                continue  # optional fields are sometimes missing, as in real traffic
            kind = spec["type"]
            if kind == "number":
                data[name] = self._number(spec, rng)
            elif kind == "integer":
                data[name] = int(self._number(spec, rng))
            elif kind == "boolean":
                data[name] = rng.random() < 0.5
            elif kind == "category":
                data[name] = rng.choice(spec["choices"])
            else:
                limit = spec.get("max_length", 200)
                data[name] = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 8)))[:limit]
        return data

    # -- ground truth ---------------------------------------------------------------------
    def _score(self, data: dict) -> float:
        score = 0.0
        for name, spec in self.schema.items():
            value = data.get(name)
            if value is None:
                continue
            kind = spec["type"]
            w = self.weights[name]
            if kind in ("number", "integer"):
                low = spec.get("minimum", 0)
                high = spec.get("maximum", max(low, 0) + (50_000 if kind == "number" else 20))
                span = math.log1p(high - low) or 1.0
                score += w * (math.log1p(max(value - low, 0)) / span * 2 - 1)
            elif kind == "boolean":
                score += w * (1 if value else -1) * 0.5
            elif kind == "category":
                score += w[value]
            else:
                score += sum(w.get(token, 0.0) for token in value.split())
        return score

    def truth(self, data: dict):
        score = self._score(data)
        if self.output_spec["type"] == "label":
            labels = self.output_spec["labels"]
            # Evenly spaced cut points over a squashed score: every label occurs.
            squashed = 1 / (1 + math.exp(-2 * score))
            return labels[min(int(squashed * len(labels)), len(labels) - 1)]
        low = self.output_spec.get("minimum", 0.0)
        high = self.output_spec.get("maximum", 100.0)
        return round(low + (high - low) / (1 + math.exp(-score)), 3)


def queue_work(panel: list, answer: Callable[[object, dict], object]) -> int:
    """The simulated reviewers work the queue in turn until none of them finds a task (a
    consensus task needs that many different people). `answer(reviewer, input)` gives each
    one's answer. Returns how many decisions were made."""
    from review.services import review_task_claim_next, review_task_decide

    decided = turn = idle = 0
    while panel and idle < len(panel):
        reviewer = panel[turn % len(panel)]
        turn += 1
        task = review_task_claim_next(reviewer=reviewer)
        if task is None:
            idle += 1
            continue
        idle = 0
        review_task_decide(task_id=task.pk, reviewer=reviewer, output=answer(reviewer, task.prediction.input),
                           note="simulated reviewer")
        decided += 1
    return decided


def reviewer_panel(predictor, name: str) -> list:
    """Simulated reviewers enough for the predictor's consensus (and one more to adjudicate)."""
    from .roles import REVIEWERS
    from .services import person_create

    size = predictor.reviews_required + (1 if predictor.reviews_required > 1 else 0)
    return [person_create(username=name if i == 0 else f"{name}-{i + 1}", group=REVIEWERS)[0] for i in range(size)]
