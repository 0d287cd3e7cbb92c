"""Cost math, in one place: what a tool call, a proposed action, a human decision and a task cost.

Amounts are USD rounded to micro-dollars (6 decimals) where they are published; sums are taken
before rounding, so a total is the rounded sum of its parts, not the sum of rounded parts.
"""

from __future__ import annotations

from schemas import TaskCost

__all__ = ["call_cost_usd", "estimated_cost_usd", "review_cost_usd", "task_cost"]

PLACES = 6


def call_cost_usd(per_call_usd: float, attempts: int, reported_usd: float = 0.0) -> float:
    """A tool call's cost: its catalogued price for every attempt, plus what the tool reported it spent."""
    return round(per_call_usd * attempts + reported_usd, PLACES)


def estimated_cost_usd(per_call_usd: float, model_usd: float) -> float:
    """What a proposed action is expected to cost before it runs: one call, plus the model's cost of proposing it."""
    return round(per_call_usd + model_usd, PLACES)


def review_cost_usd(decisions: float, minutes_per_decision: float, hourly_rate_usd: float) -> float:
    """People's time for `decisions` approval decisions, at `minutes_per_decision` each and `hourly_rate_usd`."""
    return decisions * (minutes_per_decision / 60.0 * hourly_rate_usd)


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
