"""The planner's own database login, in an attacker's hands, cannot make the planner propose steps it never planned.

As in the outside review (finding F1 of 2026-12, `probe/t3_planner_login.py`): a draft task waits for a human on its
first step; the attacker, logged in as the planner's database role, rewrites the task's stored state (mode
`autonomous`, planted steps, a step's result). Before, the human's grant made the planner propose and sign the planted
steps. Now each state carries the planner's signature (`services/planner/state_seal.py`): the rewritten one is refused,
nothing is proposed from it, a WARNING names the task, `tidegate_rows_refused_total{service="planner",table="tasks"}`
counts it, and the task ends failed `state_refused` (the requester does not wait forever).
Real planner service, Kafka and PostgreSQL; policy and approval are played by the test.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest
from bus_helpers import Collector, Producer
from prometheus_client import REGISTRY

from schemas import (
    ActionDecided,
    ActionDecidedData,
    ActionResultData,
    ActionSucceeded,
    ApprovalData,
    ApprovalGranted,
    Reason,
    ResultCost,
    TaskSubmitted,
    action_identity,
    utcnow,
)
from servicekit import KitSettings
from servicekit.dbroles import service_database_url
from services.planner.app import build
from systems.seed import TICKETS
from tidegate.demo.tickets import ticket_task

TICKET = next(t for t in TICKETS if t.ticket_id == "T-1007")


def _refused(reason: str) -> float:
    labels = {"service": "planner", "table": "tasks", "reason": reason}
    return REGISTRY.get_sample_value("tidegate_rows_refused_total", labels) or 0.0


@pytest.fixture
async def producer(kit: KitSettings) -> AsyncIterator[Producer]:
    p = Producer(kit)
    await p.start()
    yield p
    await p.stop()


@pytest.fixture
async def collector(kit: KitSettings) -> AsyncIterator[Collector]:
    c = Collector(kit, ["actions.proposed", "tasks.outcomes"])
    await c.start()
    yield c
    await c.stop()


@pytest.fixture
async def planner_login(kit: KitSettings) -> AsyncIterator[asyncpg.Connection]:
    """A connection with the planner's own database login: what the service uses, and what the attacker holds."""
    conn = await asyncpg.connect(service_database_url(kit, "planner"))
    yield conn
    await conn.close()


def _answers(p: Any, approval_id: str) -> list[tuple[str, Any]]:
    """What follows a grant: the policy's new decision (allow, via the approval) and the executor's result."""
    decided = ActionDecidedData(
        **action_identity(p),
        tool=p.tool,
        args=p.args,
        action_digest="d",
        outcome="allow",
        reasons=[Reason(code="approved_by_human", policy_id="test", message="approved")],
        policy_version="test",
        latency_ms=1.0,
        via="approval",
        approval_id=approval_id,
    )
    result = ActionResultData(
        **action_identity(p), tool=p.tool, status="succeeded", result={"ok": True}, attempts=1, duration_ms=2.0, cost=ResultCost()
    )
    return [
        ("actions.decided", ActionDecided.build(decided, source="tests/policy-standin")),
        ("actions.results", ActionSucceeded.build(result, source="tests/executor-standin")),
    ]


def _planted(tool: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"tool": tool, "args": args, "rationale": "planted by the planner's DB login", "continue_on_failure": True, "required": False}


def _everything(state: dict[str, Any]) -> None:
    """What the review's probe changed: draft lifted, the remaining plan replaced, the waiting step made optional."""
    state["mode"] = "autonomous"
    state["plan"] = [
        _planted("add_internal_note", {"ticket_id": TICKET.ticket_id, "note": "PLANTED by planner DB login"}),
        _planted("acme_crm_lookup", {"customer": "planted-by-planner-login"}),
    ]
    for step in state["steps"]:
        step["planned"] |= {"continue_on_failure": True, "required": False}


def _a_result(state: dict[str, Any]) -> None:
    """One step's result alone (what later steps could be computed from), the plan's next step's args with it."""
    state["steps"][0]["result"] = {"ticket_id": TICKET.ticket_id, "customer": "planted-by-planner-login"}
    state["plan"][0]["args"] = {**state["plan"][0]["args"], "note": "PLANTED by planner DB login"}


@pytest.mark.parametrize("tamper", [_everything, _a_result], ids=["mode-plan-steps", "a-step-result"])
async def test_a_state_the_planner_login_rewrote_proposes_nothing_and_ends_the_task(
    kit: KitSettings,
    producer: Producer,
    collector: Collector,
    planner_login: asyncpg.Connection,
    wait_for: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
    tamper: Callable[[dict[str, Any]], None],
) -> None:
    svc = build(kit)
    await svc.start()
    try:
        task = ticket_task(TICKET, task_id=f"sec-planner-{uuid.uuid4().hex[:8]}", mode="draft")
        await producer.send("tasks", TaskSubmitted.build(task, source="tests"))
        [first] = await wait_for(lambda: collector.proposals(task.task_id) or None, timeout=30, what="the first proposal")
        assert first.mode == "draft"

        async def recorded() -> bool:  # the planner has stored its state for the task (the step waits for a decision)
            return await planner_login.fetchval("SELECT state IS NOT NULL FROM planner.tasks WHERE task_id = $1", task.task_id) or False

        await wait_for(recorded, timeout=20, what="the task's state stored")
        state = json.loads(await planner_login.fetchval("SELECT state FROM planner.tasks WHERE task_id = $1", task.task_id))
        assert state["plan"], "the playbook plans more than one step"
        tamper(state)
        status = await planner_login.execute(  # the attacker: the planner's own login, its own table
            "UPDATE planner.tasks SET state = $2::json WHERE task_id = $1", task.task_id, json.dumps(state)
        )
        assert status == "UPDATE 1"

        before = _refused("invalid")
        approval_id = f"ap-{uuid.uuid4().hex[:8]}"
        with caplog.at_level(logging.WARNING, logger="servicekit.row_proofs"):
            grant = ApprovalGranted.build(  # the human grants the step they were shown; the planner reads the task's state
                ApprovalData(
                    approval_id=approval_id,
                    action_id=first.action_id,
                    task_id=task.task_id,
                    tenant_id=task.tenant_id,
                    tool=first.tool,
                    args=first.args,
                    action_digest="d",
                    approver="bob@acme.example",
                    approvers=["bob@acme.example"],
                    expires_at=utcnow(),
                ),
                source="tests/approval",
            )
            await producer.send("approvals", grant)
            for topic, event in _answers(first, approval_id):  # then the step runs: before, the planted step came next
                await producer.send(topic, event)

            def ended_or_proposed() -> Any:
                return collector.outcome(task.task_id) or (len(collector.proposals(task.task_id)) > 1 or None)

            await wait_for(ended_or_proposed, timeout=30, what="the task's outcome or its next proposal")
            for topic in ("approvals", "actions.decided", "actions.results"):
                await svc.bus.wait_caught_up(topic)

        assert not any("planted" in json.dumps(p.args).lower() for p in collector.proposals())  # nothing planted was proposed
        assert [p.action_id for p in collector.proposals(task.task_id)] == [first.action_id]
        outcome = collector.outcome(task.task_id)
        assert (outcome.type, outcome.data.reason, outcome.data.tenant_id) == ("tidegate.task.failed", "state_refused", "acme")
        assert _refused("invalid") >= before + 1
        assert f"planner: the stored state of task {task.task_id} of tenant {task.tenant_id} refused" in caplog.text
        assert "rotate that login's password" in caplog.text
        stored = await planner_login.fetchrow("SELECT status, reason, state FROM planner.tasks WHERE task_id = $1", task.task_id)
        assert (stored["status"], stored["reason"]) == ("failed", "state_refused")
        assert json.loads(stored["state"])["plan"] == []  # the planner's own closed state replaced the forged one
    finally:
        await svc.stop()
