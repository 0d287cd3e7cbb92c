"""Undo on the real stack: each reversible demo tool's undo goes through policy, runs once, restores the system of record
exactly, and the audit log links it to the call it undoes.

Policy, executor and audit run as in production (their `app.build`, real Kafka and PostgreSQL); the
undo proposals are the ones `tidegate undo` makes from the audit log (`tidegate.ops.undo`).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
from autonomy_helpers import propose, recorded
from bus_helpers import Collector, Producer

import schemas as s
from servicekit import KitSettings, create_pool
from services.approval import auth
from services.approval.app import build as build_approval
from services.approval.settings import ApprovalSettings
from services.audit.app import build as build_audit
from services.executor.app import build as build_executor
from services.policy.app import build as build_policy
from systems.seed import seed_demo
from tidegate.ops.undo import undo_steps

WATCHED = ["actions.proposed", "actions.decided", "actions.results"]
CALLS: list[tuple[str, dict[str, Any]]] = [
    ("tag_ticket", {"ticket_id": "T-1001", "tags": ["refund", "vip"]}),  # "vip" was there before: it stays
    ("add_internal_note", {"ticket_id": "T-1001", "note": "customer called twice"}),
    ("add_crm_note", {"customer_id": "cus_1001", "note": "prefers email"}),
    ("set_ticket_status", {"ticket_id": "T-1001", "status": "pending"}),
]


@dataclass
class Stack:
    kit: KitSettings
    tenant: str
    pool: asyncpg.Pool
    producer: Producer
    collector: Collector

    async def propose(self, tool: str, args: dict[str, Any], task_id: str) -> str:
        return await propose(self.producer, self.tenant, tool, args, task_id=task_id, requested_by="agent@undo.example")

    def result(self, action_id: str) -> Any:
        return self.collector.result(action_id)

    async def state(self) -> dict[str, Any]:
        """What the undo must restore: the ticket's status, tags and notes, the customer's notes."""
        q = self.pool.fetch
        return {
            "status": await self.pool.fetchval(
                "SELECT status FROM helpdesk.tickets WHERE tenant_id = $1 AND ticket_id = 'T-1001'", self.tenant
            ),
            "tags": [
                tuple(r)
                for r in await q("SELECT tag, added_by_action FROM helpdesk.ticket_tags WHERE tenant_id = $1 ORDER BY tag", self.tenant)
            ],
            "notes": [tuple(r) for r in await q("SELECT note_id, note FROM helpdesk.internal_notes WHERE tenant_id = $1", self.tenant)],
            "crm": [tuple(r) for r in await q("SELECT note_id, note FROM crm.notes WHERE tenant_id = $1", self.tenant)],
        }


@pytest.fixture
async def stack(kit: KitSettings) -> AsyncIterator[Stack]:
    tenant = f"und-{uuid.uuid4().hex[:8]}"
    pool = await create_pool(kit.database_url, max_size=2)
    await seed_demo(pool, [tenant])
    await pool.execute("INSERT INTO helpdesk.ticket_tags (tenant_id, ticket_id, tag) VALUES ($1, 'T-1001', 'vip')", tenant)
    producer = Producer(kit)
    await producer.start()
    settings = {"allow_autonomous": True, "internal_domains": ["undo.example"]}
    onboard = s.ControlTenant.build(s.ControlTenantData(tenant_id=tenant, settings=settings, set_by="admin@undo.example"), source="cli")
    await producer.send("control", onboard)  # as `tidegate tenant add` does, signed as the operator
    services: list[Any] = [build_policy(kit), build_executor(kit), build_audit(kit)]
    for svc in services:
        await svc.start()
    collector = Collector(kit, WATCHED)
    await collector.start()
    try:
        yield Stack(kit, tenant, pool, producer, collector)
    finally:
        await collector.stop()
        for svc in reversed(services):
            await svc.stop()
        await producer.stop()
        await pool.close()


async def test_each_reversible_demo_tool_is_undone_through_policy_and_linked_in_the_audit(stack: Stack, wait_for: Any) -> None:
    before = await stack.state()
    done: dict[str, str] = {}
    for tool, args in CALLS:
        task_id = f"t-{tool}-{uuid.uuid4().hex[:6]}"
        action = await stack.propose(tool, args, task_id)
        result = await wait_for(lambda a=action: stack.result(a), timeout=30, what=f"{tool} result")
        assert (result.type, result.data.undo.status) == ("tidegate.action.succeeded", "ready"), result.data
        done[task_id] = action
    assert await stack.state() != before

    for task_id, original in done.items():
        events = await recorded(stack.kit, task_id, wait_for, count=4)  # proposed, decided, authorized, succeeded
        [step] = undo_steps(events, requested_by="ops@undo.example")
        assert step.proposal is not None
        assert step.proposal.undoes == original
        await stack.producer.send("actions.proposed", s.ActionProposed.build(step.proposal, source="external/undo"))
        undo_result = await wait_for(lambda p=step.proposal: stack.result(p.action_id), timeout=30, what=f"the undo of {original}")
        assert undo_result.type == "tidegate.action.succeeded", undo_result.data
        [decided] = stack.collector.decided(step.proposal.action_id)
        assert decided.data.outcome == "allow"  # policy decided the undo like any other call
        linked = await recorded(stack.kit, task_id, wait_for, count=8)  # and the undo's four
        proposals = [e.data for e in linked if isinstance(e, s.ActionProposed) and e.data.undoes == original]
        assert [p.action_id for p in proposals] == [step.proposal.action_id]
        assert any(isinstance(e, s.ActionDecided) and e.data.action_id == step.proposal.action_id for e in linked)
        assert undo_steps(linked, requested_by="ops@undo.example") == []  # undone once: nothing left to propose

    assert await stack.state() == before


async def test_an_approver_undoes_through_the_api_and_an_irreversible_call_is_refused(
    stack: Stack, kit: KitSettings, wait_for: Any
) -> None:
    approval = build_approval(kit, ApprovalSettings(http_port=0))
    await approval.start()
    try:
        token = auth.new_token()
        assert approval.pool is not None
        await approval.approval.repo.add_token(auth.hash_token(token), "bob@undo.example", stack.tenant, ["support"])
        before = await stack.state()
        action = await stack.propose("set_ticket_status", {"ticket_id": "T-1001", "status": "closed"}, f"t-api-{uuid.uuid4().hex[:6]}")
        await wait_for(lambda: stack.result(action), timeout=30, what="the status change")
        sent = await stack.propose("send_reply", {"ticket_id": "T-1001", "to": "ops@undo.example", "body": "done"}, "t-api-send")
        assert (await wait_for(lambda: stack.result(sent), timeout=30, what="the reply")).type == "tidegate.action.succeeded"
        async with httpx.AsyncClient(base_url=approval.http_url, headers={"Authorization": f"Bearer {token}"}) as http:

            async def undo(action_id: str) -> httpx.Response | None:
                answer = await http.post(f"/api/v1/actions/{action_id}/undo")
                # 404, or "no result yet", until the approval service has read the result (the bus has it already)
                return None if answer.status_code == 404 or "no result yet" in answer.text else answer

            proposed = await wait_for(lambda: undo(action), timeout=30, what="the approval service knowing the result")
            refused = await wait_for(lambda: undo(sent), timeout=30, what="the approval service knowing the reply")
        assert proposed.status_code == 200, proposed.text
        assert (refused.status_code, refused.json()["detail"]["code"]) == (422, "undo_irreversible")
        undo_id = proposed.json()["action_id"]
        await wait_for(lambda: stack.result(undo_id), timeout=30, what="the undo's result")
        [decided] = stack.collector.decided(undo_id)
        assert (decided.data.outcome, decided.data.requested_by) == ("allow", "bob@undo.example")
        assert (await stack.state())["status"] == before["status"] == "open"
    finally:
        await approval.stop()
