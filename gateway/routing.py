"""The one function that decides who answers a request."""
from __future__ import annotations

from dataclasses import dataclass

from .models import RoutingMode, RoutingPolicy


@dataclass(frozen=True)
class Route:
    target: str  # who answers: human | rule | model
    mode: str  # the policy's mode at the time
    reason: str  # why: mode, no_model, model_error, rule_error
    policy_version: int

    def as_dict(self) -> dict:
        return {"mode": self.mode, "reason": self.reason, "policy_version": self.policy_version}

    def diverted(self, target: str, reason: str) -> Route:
        return Route(target=target, mode=self.mode, reason=reason, policy_version=self.policy_version)


def route_decide(*, policy: RoutingPolicy) -> Route:
    """The route the policy asks for. The caller diverts it (`Route.diverted`) when the
    chosen answerer cannot answer: no champion model, a model error or a rule error all go
    to the human queue, so an accepted request is never dropped."""
    return Route(target=policy.mode, mode=policy.mode, reason="mode", policy_version=policy.version)


__all__ = ["Route", "RoutingMode", "route_decide"]
