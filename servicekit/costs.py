"""Cost math, in one place: what a tool call, a proposed action, a human decision and a task cost.

Amounts are USD rounded to micro-dollars (6 decimals) where they are published; sums are taken
before rounding, so a total is the rounded sum of its parts, not the sum of rounded parts.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas import TaskCost

__all__ = ["HOURLY_RATE_USD", "REVIEW_MINUTES", "ReviewPrice", "call_cost_usd", "estimated_cost_usd", "task_cost"]

PLACES = 6

REVIEW_MINUTES = 4.0
"""Minutes of a person's time one approval decision costs, unless set (`TIDEGATE_HUMAN_REVIEW_MINUTES`)."""

HOURLY_RATE_USD = 60.0
"""Hourly rate of the people who approve, USD, unless set (`TIDEGATE_HUMAN_HOURLY_RATE_USD`)."""


def call_cost_usd(per_call_usd: float, attempts: int, reported_usd: float = 0.0) -> float:
    """A tool call's cost: its catalogued price for every attempt, plus what the tool reported it spent."""
    return round(per_call_usd * attempts + reported_usd, PLACES)


def estimated_cost_usd(per_call_usd: float, model_usd: float) -> float:
    """What a proposed action is expected to cost before it runs: one call, plus the model's cost of proposing it."""
    return round(per_call_usd + model_usd, PLACES)


@dataclass(frozen=True)
class ReviewPrice:
    """The price of a human decision: `minutes_per_decision` of a person's time at `hourly_rate_usd`.

    One price for the planner's task costs, the approval page's figure and `tidegate costs`: the kit's `TIDEGATE_HUMAN_*`
    (`servicekit.settings.review_price`).
    """

    minutes_per_decision: float = REVIEW_MINUTES
    hourly_rate_usd: float = HOURLY_RATE_USD

    def usd(self, decisions: float) -> float:
        """People's time for `decisions` approval decisions, USD (not rounded: a sum is rounded once, where it is published)."""
        return decisions * (self.minutes_per_decision / 60.0 * self.hourly_rate_usd)

    @property
    def per_decision_usd(self) -> float:
        """The price of one human decision, USD."""
        return self.usd(1)


def task_cost(*, model: float, retrieval: float, tools: float, orchestration: float, retries: float, human_review: float) -> TaskCost:
    """A task's cost breakdown, each part and the total rounded."""
    parts = {
        "model": model,
        "retrieval": retrieval,
        "tools": tools,
        "orchestration": orchestration,
        "retries": retries,
        "human_review": human_review,
    }
    return TaskCost(**{k: round(v, PLACES) for k, v in parts.items()}, total=round(sum(parts.values()), PLACES))
