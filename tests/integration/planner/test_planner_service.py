"""The planner service on the real broker and database, with policy and executor played by the test."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import asyncpg
from planner_helpers import StandIn, decided, succeeded

from schemas import ApprovalData, ApprovalGranted, TaskSubmitted, utcnow
from services.planner.app import build
from systems.seed import TICKETS
from tidegate.demo.tickets import ticket_task

TICKET = {t.ticket_id: t for t in TICKETS}


def task(ticket_id: str, **kw: Any):
    return ticket_task(TICKET[ticket_id], task_id=f"it-{ticket_id}-{uuid.uuid4().hex[:8]}", **kw)


def rubric(p: Any) -> tuple[str, str]:
    """A small stand-in for the default pack: enough to drive every planner path."""
    if p.tool == "issue_refund" and p.args["payee_id"] not in {"cus_1001", "cus_1002"}:
        return "deny", "new_payee_blocked"
    if p.tool == "issue_refund" and p.args["amount_usd"] >= 500:
        return "escalate", "needs_human_approval"
    return "allow", "low_risk_write_allowed"


async def test_a_denied_refund_is_handed_off_and_the_task_completes_with_its_cost(kit, producer, collector, wait_for):
    svc = build(kit)
    await svc.start()
    standin = StandIn(kit, producer, rubric)
    await standin.start()
    try:
        new_payee, triage = task("T-1003"), task("T-1007")
        for t in (new_payee, triage):
            await producer.send("tasks", TaskSubmitted.build(t, source="tests"))
        done = await wait_for(
            lambda: all(collector.outcome(t.task_id) for t in (new_payee, triage)) and True, timeout=40, what="two outcomes"
        )
        assert done
        out = collector.outcome(new_payee.task_id)
        assert out.type == "tidegate.task.completed"
        assert [p.tool for p in collector.proposals(new_payee.task_id)] == [
            "tag_ticket",
            "add_internal_note",
            "lookup_order",
            "issue_refund",
            "add_internal_note",
            "draft_reply",
        ]
        refund = collector.proposals(new_payee.task_id)[3]
        assert refund.tainted_args == ["payee_id"]
        assert (refund.mode, refund.requested_by, refund.budget_usd) == ("autonomous", "demo@acme.example", 5.0)
        assert out.data.counts.denied == 1
        assert out.data.counts.succeeded == 5
        assert out.data.cost.tools > 0
        assert out.data.cost.retrieval > 0
        assert out.data.cost.total > out.data.cost.tools
        assert collector.outcome(triage.task_id).data.counts.proposed == 3
        conn = await asyncpg.connect(kit.database_url)
        try:
            rows = await conn.fetch("SELECT step, tool, status FROM planner.steps WHERE task_id = $1 ORDER BY step", new_payee.task_id)
            status = await conn.fetchval("SELECT status FROM planner.tasks WHERE task_id = $1", new_payee.task_id)

            async def outbox_emptied() -> bool:
                return await conn.fetchval("SELECT count(*) FROM planner.outbox") == 0

            # Delivered entries are deleted right before the planner's consumer commits its offsets (`once_delivered_together`)
            await wait_for(outbox_emptied, timeout=10, what="every delivered outbox entry deleted")
        finally:
            await conn.close()
        assert [(r["tool"], r["status"]) for r in rows][3] == ("issue_refund", "denied")
        assert status == "completed"
    finally:
        await standin.stop()
        await svc.stop()


async def test_an_escalated_refund_waits_then_runs_after_a_grant_and_redelivery_changes_nothing(kit, producer, collector, wait_for):
    svc = build(kit)
    await svc.start()
    standin = StandIn(kit, producer, rubric)
    await standin.start()
    try:
        t = task("T-1002")
        await producer.send("tasks", TaskSubmitted.build(t, source="tests"))
        refund = await wait_for(
            lambda: next((p for p in collector.proposals(t.task_id) if p.tool == "issue_refund"), None), timeout=30, what="refund"
        )
        await svc.bus.wait_caught_up("actions.decided")
        assert collector.outcome(t.task_id) is None
        assert len(collector.proposals(t.task_id)) == 4
        grant = ApprovalGranted.build(
            ApprovalData(
                approval_id="ap-1",
                action_id=refund.action_id,
                task_id=t.task_id,
                tenant_id="acme",
                tool=refund.tool,
                args=refund.args,
                action_digest="d",
                approver="bob@acme.example",
                approvers=["bob@acme.example"],
                expires_at=utcnow(),
            ),
            source="tests/approval",
        )
        again = decided(refund, "allow", "approved_by_human", via="approval", approval_id="ap-1")
        result = succeeded(refund, usd=0.01)
        for topic, event in (("approvals", grant), ("actions.decided", again), ("actions.results", result)):
            await producer.send(topic, event)
            await producer.send(topic, event)  # redelivered: must change nothing
        out = await wait_for(lambda: collector.outcome(t.task_id), timeout=30, what="outcome")
        assert out.type == "tidegate.task.completed"
        assert out.data.human_touches == 1
        assert out.data.cost.human_review == 4.0  # default: 4 minutes at 60 USD/h
        assert (out.data.counts.escalated, out.data.counts.approved) == (1, 1)
        ids = [p.action_id for p in collector.proposals(t.task_id)]
        assert len(ids) == len(set(ids)) == 5
    finally:
        await standin.stop()
        await svc.stop()


async def test_tasks_of_outside_agents_are_left_alone(kit, producer, collector, wait_for):
    svc = build(kit)
    await svc.start()
    try:
        outside = task("T-1007").model_copy(update={"planner": "external:byoa"})
        await producer.send("tasks", TaskSubmitted.build(outside, source="tests"))
        await svc.bus.wait_caught_up("tasks")
        assert collector.proposals(outside.task_id) == []
        conn = await asyncpg.connect(kit.database_url)
        try:
            assert await conn.fetchval("SELECT count(*) FROM planner.tasks WHERE task_id = $1", outside.task_id) == 0
        finally:
            await conn.close()
    finally:
        await svc.stop()


async def test_two_planners_in_one_group_share_the_load_and_never_propose_twice(kit, producer, collector, wait_for):
    first, second = build(kit), build(kit)
    await first.start()
    await second.start()
    standin = StandIn(kit, producer, rubric)
    await standin.start()

    def assigned(svc: Any) -> set[Any]:
        return {tp for poller in svc.bus.pollers if poller.consumer for tp in poller.consumer.assignment() if tp.topic.endswith("tasks")}

    try:
        await wait_for(lambda: assigned(first) and assigned(second), timeout=40, what="both planners assigned partitions of tasks")
        tasks = [task(tid) for tid in ("T-1007", "T-1008") for _ in range(15)]
        for t in tasks:
            await producer.send("tasks", TaskSubmitted.build(t, source="tests"))
        await wait_for(lambda: all(collector.outcome(t.task_id) for t in tasks), timeout=60, what="30 outcomes")
        handled = [{p for (topic, p) in svc.bus.positions if topic.endswith(".tasks")} for svc in (first, second)]
        assert handled[0]
        assert handled[1]
        assert not handled[0] & handled[1]
        counts = Counter(p.action_id for p in collector.proposals())
        assert len(counts) == 30 * 3
        assert max(counts.values()) == 1
        assert all(collector.outcome(t.task_id).type == "tidegate.task.completed" for t in tasks)
    finally:
        await standin.stop()
        await first.stop()
        await second.stop()
