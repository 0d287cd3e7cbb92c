"""Attacker test against the real policy and approval services: Bob cannot approve an outside agent's refund in his own task.

As an outside review found (security5 F3): Bob submitted a task, an outside agent (its own client key, so its proposal names
the agent as `requested_by`) proposed a 650 USD refund in it, and Bob approved it; the policy authorized it. The policy now
learns Bob from the task's signed request (kept in PostgreSQL, `policy.tasks_learned.requested_by`), its escalation names
him beside the agent, and the approval service refuses him `403 four_eyes` in any spelling; another approver still grants.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import httpx
from approval_harness import StartApproval
from test_approval_with_policy import read

from schemas import ActionProposed, ActionProposedData, TaskSubmitted, TaskSubmittedData
from services.policy.app import build as build_policy
from services.policy.repository import TaskInput

BOB, AGENT = "Bob@Acme.example", "agent@acme.example"


async def test_bob_may_not_approve_the_agents_refund_in_his_task_and_carol_may(
    start_approval: StartApproval, http: httpx.AsyncClient, wait_for: Any
) -> None:
    h = await start_approval()
    h.tenant = "acme"  # the default policy pack knows acme's payees and threshold
    policy = build_policy(h.kit)
    await policy.start()
    try:
        bob = await h.token("bob@acme.example", ["finance"], tenant="acme")
        carol = await h.token("carol@acme.example", ["finance"], tenant="acme")
        task_id, action_id = f"fe-{uuid.uuid4().hex[:10]}", f"a-{uuid.uuid4().hex[:10]}"
        request = TaskSubmittedData(
            task_id=task_id, tenant_id="acme", workflow="support_triage", input={"ticket_id": "T-1002"}, requested_by=BOB,
            mode="autonomous", planner="external:bobs-agent",
        )  # fmt: skip
        await h.publish("tasks", TaskSubmitted.build(request, source="tidegate/cli"))
        scope = ("acme", task_id)

        async def learned() -> bool:
            return (await policy.policy.repo.task_reads([scope]))[scope].requested_by == BOB

        await wait_for(learned, what="the policy service to learn Bob's task")  # an outside agent's proposal does not wait for it
        args = {"payee_id": "cus_1002", "amount_usd": 650.0, "order_id": "O-5002"}
        proposal = ActionProposedData(
            action_id=action_id, task_id=task_id, tenant_id="acme", step=1, tool="issue_refund", args=args, rationale="fe-2",
            proposer="bobs-agent", mode="autonomous", requested_by=AGENT,
        )  # fmt: skip
        await h.publish("actions.proposed", ActionProposed.build(proposal, source="bobs-agent"))
        record = await h.request_for(action_id, wait_for)
        assert (record.requested_by, record.task_requested_by) == (AGENT, BOB)

        seen = (await http.get(f"{h.url}/api/v1/approvals/{record.approval_id}", headers={"Authorization": f"Bearer {bob}"})).json()
        assert (seen["task_requested_by"], seen["can_decide"], seen["cannot_decide_code"]) == (BOB, False, "four_eyes")
        vote = {"action_digest": record.action_digest, "comment": "I approve my own task's refund"}
        answer = await http.post(
            f"{h.url}/api/v1/approvals/{record.approval_id}/approve", json=vote, headers={"Authorization": f"Bearer {bob}"}
        )
        assert answer.status_code == 403, answer.text
        assert "four_eyes" in answer.text
        assert (await h.repo.get(record.approval_id)).status == "pending"

        as_carol = {"Authorization": f"Bearer {carol}"}
        answer = await http.post(f"{h.url}/api/v1/approvals/{record.approval_id}/approve", json=vote | {"comment": "ok"}, headers=as_carol)
        assert answer.status_code == 200, answer.text

        async def authorized() -> list[Any]:
            events = await read(h.kit.kafka_bootstrap, h.bus.topic("actions.authorized"), "actions.authorized")
            return [e for e in events if e.data.action_id == action_id]

        (auth,) = await wait_for(authorized, timeout=30, what="the policy service to authorize after Carol's grant")
        assert auth.data.authorization.approval_id == record.approval_id
    finally:
        await policy.stop()


async def test_postgresql_keeps_the_first_requester_and_fills_a_row_learned_before_the_migration(
    start_approval: StartApproval, wait_for: Any
) -> None:
    h = await start_approval()
    policy = build_policy(h.kit)
    await policy.start()
    try:
        repo = policy.policy.repo
        first, old, never = (f"t-{uuid.uuid4().hex[:8]}" for _ in range(3))
        for name in (BOB, "carol@acme.example"):  # a second request of the task names nobody new
            await repo.learn_many([TaskInput("acme", first, {}, {}, request=True, mode="draft", requested_by=name)])
        await repo.learn_many([TaskInput("acme", old, {}, {}, request=True, mode="autonomous", requested_by=BOB)])
        conn = await asyncpg.connect(h.kit.database_url)
        try:  # as a row written before migration 016 reads
            await conn.execute("UPDATE policy.tasks_learned SET requested_by = NULL WHERE tenant_id = 'acme' AND task_id = $1", old)
        finally:
            await conn.close()
        assert (await repo.task_reads([("acme", old)]))[("acme", old)].requested_by is None
        await repo.learn_many([TaskInput("acme", old, {}, {}, request=True, mode="autonomous", requested_by="carol@acme.example")])
        reads = await repo.task_reads([("acme", first), ("acme", old), ("acme", never)])
        assert [(reads[("acme", t)].requested_by, reads[("acme", t)].mode) for t in (first, old, never)] == [
            (BOB, "draft"),
            ("carol@acme.example", "autonomous"),
            (None, None),
        ]
    finally:
        await policy.stop()
