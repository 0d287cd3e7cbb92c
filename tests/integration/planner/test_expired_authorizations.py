"""An executor down longer than an authorization lives delays governed work; it no longer voids a human's approval.

Found by an outside probe (an executor down for 5 min 15 s): the human-approved 899 USD refund never ran, the task failed
`tool_failed` though no tool was called, the approval still said `granted`, and the metric booked it on the tool. Here
the planner, policy, approval (HTTP), executor and audit run in process on the real Kafka and PostgreSQL: a refund is
granted while no executor runs, under a policy whose authorizations live half a second; then the executor starts. Its
refusal (`authorization_expired`, 0 attempts) makes the planner propose the refund again as a new action, policy
escalates it again, the new request names the grant that could not be carried out, the old one says what became of
it, and once a person approves again the refund is made exactly once and the task completes.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from bus_helpers import Collector
from prometheus_client import REGISTRY
from signers import SigningBus

from schemas import TaskSubmitted, utcnow
from servicekit import KitSettings, create_pool
from services.approval import auth
from services.approval.app import build as build_approval
from services.approval.settings import ApprovalSettings
from services.executor.app import build as build_executor
from services.planner.app import build as build_planner
from services.policy.app import build as build_policy
from services.policy.settings import PolicySettings
from systems.seed import TICKETS, seed_demo
from tidegate.demo.run import fresh_orders
from tidegate.demo.tickets import ticket_task

SHORT = PolicySettings(authorization_ttl_s=0.5)  # an authorization no executor can take in time while none runs


def refused(tool: str) -> float:
    return (
        REGISTRY.get_sample_value("tidegate_action_refusals_total", {"tenant": "acme", "tool": tool, "reason": "authorization_expired"})
        or 0.0
    )


def results(tool: str, status: str) -> float:
    return REGISTRY.get_sample_value("tidegate_action_results_total", {"tenant": "acme", "tool": tool, "status": status}) or 0.0


@dataclass
class Stack:
    kit: KitSettings
    collector: Collector
    http: httpx.AsyncClient
    running: dict[str, Any] = field(default_factory=dict)

    async def start(self, name: str, service: Any) -> None:
        await service.start()
        self.running[name] = service

    async def stop(self, name: str) -> None:
        await self.running.pop(name).stop()

    async def pending(self, wait_for: Any, task_id: str, *, besides: str | None = None) -> dict[str, Any]:
        """The task's pending request (another than `besides`), once the approval service opened it."""

        async def found() -> dict[str, Any] | None:
            listed = (await self.http.get("/api/v1/approvals", params={"status": "pending"})).json()
            return next((a for a in listed if a["task_id"] == task_id and a["approval_id"] != besides), None)

        return await wait_for(found, timeout=60, what=f"a pending approval request of {task_id}")  # type: ignore[no-any-return]

    async def approve(self, request: dict[str, Any]) -> None:
        answer = await self.http.post(
            f"/api/v1/approvals/{request['approval_id']}/approve", json={"action_digest": request["action_digest"], "comment": "ok"}
        )
        assert answer.status_code == 200, answer.text


@pytest.fixture
async def stack(kit: KitSettings) -> AsyncIterator[Stack]:
    pool = await create_pool(kit.database_url, max_size=2)
    try:
        await seed_demo(pool, ("acme",))
        orders = await fresh_orders(pool, "acme", suffix=str(int(uuid.uuid4().hex[:8], 16) % 10**8))
    finally:
        await pool.close()
    collector = Collector(kit, ["actions.proposed", "actions.authorized", "actions.results", "tasks.outcomes"])
    await collector.start()
    approval = build_approval(kit, ApprovalSettings(http_port=0, sweep_interval_s=0.2))
    token = auth.new_token()
    stack = Stack(kit, collector, httpx.AsyncClient(timeout=10, headers={"Authorization": f"Bearer {token}"}))
    stack.running["orders"] = orders  # not a service: the fresh order of each refund ticket
    try:
        await stack.start("approval", approval)
        await approval.approval.repo.add_token(auth.hash_token(token), "fin@acme.example", "acme", ["finance"])
        stack.http.base_url = httpx.URL(approval.http_url)
        for name, service in (("policy", build_policy(kit)), ("planner", build_planner(kit)), ("executor", build_executor(kit))):
            await stack.start(name, service)
        yield stack
    finally:
        await stack.http.aclose()
        await collector.stop()
        stack.running.pop("orders")
        for name in reversed(list(stack.running)):
            await stack.stop(name)


async def test_a_grant_whose_authorization_expired_before_any_executor_ran_it_is_asked_again_and_executed_once(
    stack: Stack, kit: KitSettings, wait_for: Any
) -> None:
    order = stack.running["orders"]["T-1002"]
    ticket = next(t for t in TICKETS if t.ticket_id == "T-1002")
    data = ticket_task(ticket, tenant_id="acme", task_id=f"exp-{uuid.uuid4().hex[:10]}", order_id=order)
    before_refused, before_failed = refused("issue_refund"), results("issue_refund", "failed")
    client = SigningBus(kit, "expiry-test")
    await client.start()
    try:
        await client.publish("tasks", TaskSubmitted.build(data, source="tidegate/test"))
        first = await stack.pending(wait_for, data.task_id)  # the 899 USD refund, escalated
        # The executor goes down; the grant is authorized under a half-second lifetime and nobody runs it in time.
        await stack.stop("executor")
        await stack.stop("policy")
        await stack.start("policy", build_policy(kit, SHORT))
        await stack.approve(first)

        def authorized() -> Any:
            found = [e.data for e in stack.collector.events["actions.authorized"] if e.data.action_id == first["action_id"]]
            return found[0] if found and found[0].authorization.expires_at < utcnow() else None

        auth_ = await wait_for(authorized, timeout=60, what="the grant's authorization, expired")
        assert auth_.authorization.via == "approval"
        await stack.stop("policy")
        await stack.start("policy", build_policy(kit))  # the usual lifetime again, before the executor is back
        await stack.start("executor", build_executor(kit))

        result = await wait_for(lambda: stack.collector.result(first["action_id"]), timeout=60, what="the executor's refusal")
        assert (result.data.status, result.data.attempts, result.data.error.type) == ("failed", 0, "authorization_expired")
        again = await wait_for(
            lambda: next((p for p in stack.collector.proposals(data.task_id) if p.repeats == first["action_id"]), None),
            timeout=60,
            what="the refund proposed again",
        )
        assert (again.tool, again.args) == ("issue_refund", first["args"])
        assert f"the approval {first['approval_id']} could not be carried out" in again.rationale

        # A person is asked again, and told why; the first grant says that nothing ran.
        second = await stack.pending(wait_for, data.task_id, besides=first["approval_id"])
        assert second["action_id"] == again.action_id
        shown = (await stack.http.get(f"/api/v1/approvals/{second['approval_id']}")).json()
        [earlier] = shown["earlier"]
        assert (earlier["approval_id"], earlier["approvers"]) == (first["approval_id"], ["fin@acme.example"])
        assert "authorization expired before the executor ran it" in earlier["why"]
        old = (await stack.http.get(f"/api/v1/approvals/{first['approval_id']}")).json()
        assert (old["status"], old["outcome"]["status"], old["outcome"]["reason"]) == ("granted", "expired_unused", "authorization_expired")

        await stack.approve(second)
        outcome = await wait_for(lambda: stack.collector.outcome(data.task_id), timeout=90, what="the task's outcome")
        assert outcome.type == "tidegate.task.completed", outcome.data.summary
        assert (outcome.data.counts.refused, outcome.data.counts.failed) == (1, 0)

        async def outcome_shown() -> Any:
            return (await stack.http.get(f"/api/v1/approvals/{second['approval_id']}")).json()["outcome"]

        assert (await wait_for(outcome_shown, timeout=30, what="the second grant's outcome"))["status"] == "executed"
    finally:
        await client.stop()
    pool = await create_pool(kit.database_url, max_size=1)
    try:
        refunds = await pool.fetchval("SELECT count(*) FROM payments.refunds WHERE tenant_id = 'acme' AND order_id = $1", order)
    finally:
        await pool.close()
    assert refunds == 1  # made once, by the second action
    # Counted as a refusal by its reason, never as a failure of the tool (the executor ran in this process).
    assert refused("issue_refund") - before_refused == 1
    assert results("issue_refund", "failed") - before_failed == 0
