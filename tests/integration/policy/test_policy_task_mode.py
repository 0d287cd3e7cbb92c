"""Attacker tests on the real broker and database: the planner's proposal cannot lift its task's signed draft mode.

As an outside review found (security4 F1): with the planner's database login alone, `mode: autonomous` planted in a
draft task's state made the planner's next proposals autonomous, and the policy decided them so (a write allowed, no
human). Here the test signs as the planner, as a planner whose state was rewritten would: the policy service takes the
mode from the task it learned on `tasks` (signed by the requester's client), and the proposal escalates `draft_mode`.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from schemas import ActionProposed, Mode, TaskSubmitted, TaskSubmittedData
from servicekit import KitSettings, service_key, sign_event
from services.policy.repository import TaskInput

NOTE = {"ticket_id": "T-1001", "note": "PLANTED by the planner's database login"}  # write_low with an undo: alone when autonomous


def _as_planner(kit: KitSettings, proposal: ActionProposed) -> ActionProposed:
    """`proposal` as the planner publishes it: signed with the planner's service key, naming its task's requester."""
    data = proposal.data.model_copy(update={"proposer": "tidegate/planner/playbook", "requested_by": "ann@acme.example"})
    return sign_event(proposal.model_copy(update={"source": "tidegate/planner", "data": data}), service_key(kit, "planner"))


def _task(task_id: str, mode: Mode) -> TaskSubmitted:
    request = TaskSubmittedData(
        task_id=task_id, tenant_id="acme", workflow="support_triage", input={"ticket_id": "T-1001"}, requested_by="ann@acme.example",
        mode=mode,
    )  # fmt: skip
    return TaskSubmitted.build(request, source="tidegate/cli")


async def _decided(collector: Any, producer: Any, kit: KitSettings, wait_for: Any, one: Any, make_proposal: Any, task_id: str) -> Any:
    note = _as_planner(kit, make_proposal("add_internal_note", NOTE, task_id=task_id, mode="autonomous"))
    await producer.send("actions.proposed", note)
    return await wait_for(lambda: one(collector.decided(note.data.action_id)), what="the note's decision")


async def test_a_planner_proposal_claiming_autonomous_for_a_draft_task_escalates_draft_mode(
    policy: Any, collector: Any, producer: Any, kit: KitSettings, wait_for: Any, one: Any, make_proposal: Any
) -> None:
    task_id = f"t-{uuid.uuid4().hex[:8]}"
    await producer.send("tasks", _task(task_id, "draft"))  # the proposal waits for it: the planner signed it
    decided = await _decided(collector, producer, kit, wait_for, one, make_proposal, task_id)
    assert (decided.data.outcome, [r.code.value for r in decided.data.reasons]) == ("escalate", ["draft_mode"])
    assert (decided.data.mode, decided.data.facts["task_mode"]) == ("draft", "draft")
    assert collector.authorized(decided.data.action_id) == []  # nothing may run without a human


async def test_the_same_proposal_of_an_autonomous_task_runs_alone(
    policy: Any, collector: Any, producer: Any, kit: KitSettings, wait_for: Any, one: Any, make_proposal: Any
) -> None:
    task_id = f"t-{uuid.uuid4().hex[:8]}"
    await producer.send("tasks", _task(task_id, "autonomous"))
    decided = await _decided(collector, producer, kit, wait_for, one, make_proposal, task_id)
    assert (decided.data.outcome, [r.code.value for r in decided.data.reasons]) == ("allow", ["low_risk_write_allowed"])


async def test_postgresql_keeps_the_stricter_mode_and_reads_a_task_learned_before_the_migration_as_draft(
    policy: Any, collector: Any, producer: Any, kit: KitSettings, wait_for: Any, one: Any, make_proposal: Any
) -> None:
    repo = policy.policy.repo
    lifted, lowered, old = (f"t-{uuid.uuid4().hex[:8]}" for _ in range(3))
    for task_id, modes in ((lifted, ("draft", "autonomous")), (lowered, ("autonomous", "draft"))):
        for mode in modes:  # a request learned again (a second submission of the task): never looser
            await repo.learn_many([TaskInput("acme", task_id, {}, {}, request=True, mode=mode)])
    await repo.learn_many([TaskInput("acme", old, {}, {}, request=True, mode="autonomous")])
    conn = await asyncpg.connect(kit.database_url)
    try:  # as a row written before migration 014 reads
        await conn.execute("UPDATE policy.tasks_learned SET mode = NULL WHERE tenant_id = 'acme' AND task_id = $1", old)
    finally:
        await conn.close()
    reads = await repo.task_reads([("acme", lifted), ("acme", lowered), ("acme", old)])
    assert [(reads[("acme", t)].learned, reads[("acme", t)].mode) for t in (lifted, lowered, old)] == [
        (True, "draft"),
        (True, "draft"),
        (True, None),
    ]
    for task_id in (lifted, lowered, old):
        decided = await _decided(collector, producer, kit, wait_for, one, make_proposal, task_id)
        assert (decided.data.outcome, decided.data.facts["task_mode"]) == ("escalate", "draft")
