"""Replay's "cost then → now" compares like with like: task totals only when both sides have one, else the actions' costs."""

from __future__ import annotations

from typing import Any

from schemas import (
    ActionProposed,
    ActionProposedData,
    ActionResultData,
    ActionSucceeded,
    ProposalCost,
    ResultCost,
    TaskCompleted,
    TaskCost,
    TaskOutcomeData,
)
from tidegate.ops.replay_report import TaskDiff, stories

TASK = {"task_id": "t-1002", "tenant_id": "acme"}


def refund_then_outcome(*, outcome_total: float | None) -> list[Any]:
    """A refund proposed (0.0001 USD of model) whose result cost 0.0001, then, if given, the task's outcome with its total."""
    args = {"payee_id": "cus_1001", "amount_usd": 899.0, "order_id": "O-2"}
    proposal = ActionProposedData(
        action_id="a-1", step=1, tool="issue_refund", args=args, proposer="p", mode="autonomous", cost=ProposalCost(usd=0.0001), **TASK
    )
    result = ActionResultData(
        action_id="a-1", tool="issue_refund", status="succeeded", attempts=1, duration_ms=1.0, cost=ResultCost(usd=0.0001), **TASK
    )
    events: list[Any] = [ActionProposed.build(proposal, source="p"), ActionSucceeded.build(result, source="x")]
    if outcome_total is not None:  # orchestration and four dollars of human review on top of the tools
        outcome = TaskOutcomeData(
            workflow="support", status="completed", summary="s", cost=TaskCost(total=outcome_total), duration_ms=1.0, **TASK
        )
        events.append(TaskCompleted.build(outcome, source="planner"))
    return events


def test_without_an_outcome_now_both_sides_are_the_sums_of_their_actions_costs() -> None:
    then, now = (
        stories(refund_then_outcome(outcome_total=4.00017))[("acme", "t-1002")],
        stories(refund_then_outcome(outcome_total=None))[("acme", "t-1002")],
    )
    diff = TaskDiff("t-1002", "acme", then, now)
    assert (diff.then.cost_usd, diff.now.cost_usd) == (0.0002, 0.0002)  # not 4.00017 → 0.0002
    assert (diff.then.task_cost_usd, diff.now.task_cost_usd) == (4.00017, None)  # the recorded total is still reported
    assert diff.as_dict()["then"]["task_cost_usd"] == 4.00017


def test_with_an_outcome_on_both_sides_the_task_totals_are_compared() -> None:
    then, now = (
        stories(refund_then_outcome(outcome_total=4.00017))[("acme", "t-1002")],
        stories(refund_then_outcome(outcome_total=0.5))[("acme", "t-1002")],
    )
    diff = TaskDiff("t-1002", "acme", then, now)
    assert (diff.then.cost_usd, diff.now.cost_usd) == (4.00017, 0.5)


def test_an_action_repeated_by_its_agent_costs_and_ends_once() -> None:
    """The agent proposed the refund again under its action id; the policy and the executor answered from their records.

    The recorded window then holds the proposal twice and the result twice (the same event): the action cost what its one
    call cost, and ended as that call did.
    """
    proposal, result = refund_then_outcome(outcome_total=None)
    story = stories([proposal, result, proposal, result])[("acme", "t-1002")]
    assert len(story.actions) == 1
    assert story.actions[0]["result"] == "succeeded"
    assert story.cost_usd == 0.0002  # 0.0001 of model and 0.0001 of the call, not 0.0003
