"""Replay proposes each task's recorded steps in their order, the next once the one before ran its course."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from schemas import ActionDecided, ActionProposed, ActionProposedData, ActionSucceeded, Envelope
from tidegate.ops.replay import _propose_in_step, _Tracker


def proposal(task: str, step: int, tool: str) -> ActionProposed:
    data = ActionProposedData(
        action_id=f"{task}-{step}", task_id=task, tenant_id="acme", step=step, tool=tool, args={}, proposer="agent", rationale="r"
    )
    return ActionProposed.build(data, source="test")


def settled(action_id: str) -> Any:
    """What the sandbox's collector would see of an allowed, answered call (the tracker reads `.data` and the type)."""
    decided_data: Any = SimpleNamespace(action_id=action_id, tenant_id="acme", via="policy", outcome="allow")
    answered_data: Any = SimpleNamespace(action_id=action_id, tenant_id="acme")
    decided = ActionDecided.model_construct(data=decided_data, source="t", tenantid="acme")
    answered = ActionSucceeded.model_construct(data=answered_data, source="t", tenantid="acme")
    return decided, answered


async def test_a_step_is_proposed_only_once_the_one_before_was_answered_and_tasks_go_side_by_side() -> None:
    """All at once, a refund was decided before the charge read before it was answered: escalated where it had been allowed."""
    tracker = _Tracker(planner=False)
    published: list[str] = []

    async def publish(event: Envelope) -> None:
        published.append(event.data.action_id)

    inputs: list[Envelope] = [proposal("t1", 1, "stripe_get_charge"), proposal("t1", 2, "stripe_refund"), proposal("t2", 1, "tag_ticket")]
    feeding = asyncio.create_task(_propose_in_step(inputs, publish, tracker, step_wait_s=5.0))
    await asyncio.sleep(0.1)
    assert published == ["t1-1", "t2-1"]  # t1's refund waits for its read; t2 is not held by t1
    for event in settled("t1-1"):
        tracker.see(event)
    await asyncio.sleep(0.1)
    assert published == ["t1-1", "t2-1", "t1-2"]
    for action_id in ("t1-2", "t2-1"):
        for event in settled(action_id):
            tracker.see(event)
    await asyncio.wait_for(feeding, 1.0)


async def test_a_step_that_never_runs_its_course_holds_the_next_for_the_step_wait_only() -> None:
    tracker = _Tracker(planner=False)
    published: list[str] = []

    async def publish(event: Envelope) -> None:
        published.append(event.data.action_id)

    inputs: list[Envelope] = [proposal("t1", 1, "a"), proposal("t1", 2, "b")]
    await asyncio.wait_for(_propose_in_step(inputs, publish, tracker, step_wait_s=0.2), 2.0)
    assert published == ["t1-1", "t1-2"]
