"""One trace per task across every service: planner → policy → (approval) → executor → audit, with an in-memory exporter.

The services run in this process against the real Kafka and PostgreSQL. Context travels only as
the bus carries it (the `traceparent` of each event and its Kafka header); the audit service
records the trace id of every event it logs, so the audit leg is checked in its log.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from signers import SigningBus

from schemas import TaskCompleted, TaskFailed, TaskSubmitted
from servicekit import ADMIN, Attr, KitSettings, create_pool, install_tracing
from systems.seed import TICKETS, seed_demo
from tests.conftest import delete_prefix_topics
from tidegate.demo.tickets import ticket_task

EXPORTER = InMemorySpanExporter()


@pytest.fixture
async def stack(kit: KitSettings) -> AsyncIterator[dict[str, Any]]:
    from services.approval.app import build as build_approval
    from services.approval.settings import ApprovalSettings
    from services.audit.app import build as build_audit
    from services.executor.app import build as build_executor
    from services.planner.app import build as build_planner
    from services.policy.app import build as build_policy

    provider = install_tracing("e2e", exporter=EXPORTER)
    pool = await create_pool(kit.database_url, max_size=2)
    try:
        await seed_demo(pool, ("acme",))
    finally:
        await pool.close()
    services = {
        "policy": build_policy(kit),
        "planner": build_planner(kit),
        "executor": build_executor(kit),
        "approval": build_approval(kit, ApprovalSettings(http_port=0)),
        "audit": build_audit(kit),
    }
    for svc in services.values():
        await svc.start()
    client = SigningBus(kit, "e2e-client")
    await client.start()
    try:
        yield {"services": services, "client": client, "provider": provider}
    finally:
        await client.stop()
        for svc in reversed(services.values()):
            await svc.stop()
        await delete_prefix_topics(kit.kafka_bootstrap, kit.topic_prefix)  # the broker keeps every partition open: leave none behind


async def submit_and_wait(stack: dict[str, Any], kit: KitSettings, ticket: str, *, grant: bool = False) -> str:
    from tidegate.ops.recorded import recorded_window

    task = ticket_task(
        next(t for t in TICKETS if t.ticket_id == ticket), tenant_id="acme", task_id=f"trace-{uuid.uuid4().hex[:8]}-{ticket}"
    )
    await stack["client"].publish("tasks", TaskSubmitted.build(task, source="tidegate/e2e"))
    if grant:
        await grant_pending(stack["services"]["approval"], task.task_id)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        window = await recorded_window(
            kit,
            None,
            None,
            topics=("tasks.outcomes",),
            task=task.task_id,
            principal=ADMIN,
        )
        if window.of(TaskCompleted, TaskFailed):
            return task.task_id
        await asyncio.sleep(0.3)
    raise AssertionError(f"task {task.task_id} did not end")


async def grant_pending(approval: Any, task_id: str) -> None:
    from services.approval import auth

    token = auth.new_token()
    await approval.approval.repo.add_token(auth.hash_token(token), "fin@acme.example", "acme", ["finance"])
    async with httpx.AsyncClient(base_url=approval.http_url, headers={"Authorization": f"Bearer {token}"}, timeout=10) as http:
        deadline = time.monotonic() + 60
        while True:
            assert time.monotonic() < deadline, "no approval request"
            mine = [a for a in (await http.get("/api/v1/approvals")).json() if a["task_id"] == task_id]
            if mine:
                break
            await asyncio.sleep(0.3)
        ok = await http.post(f"/api/v1/approvals/{mine[0]['approval_id']}/approve", json={"action_digest": mine[0]["action_digest"]})
        assert ok.status_code == 200, ok.text


async def audit_trace_ids(stack: dict[str, Any], kit: KitSettings, task_id: str, expected_rows: int) -> set[str | None]:
    from services.audit.repository import PostgresAuditLog

    audit = stack["services"]["audit"]
    log = PostgresAuditLog(audit.pool)
    deadline = time.monotonic() + 30
    while True:
        rows = await log.task_rows(task_id, kit.topic_prefix)
        if len(rows) >= expected_rows or time.monotonic() > deadline:
            return {r.trace_id for r in rows}
        await asyncio.sleep(0.3)


def spans_of(task_id: str) -> tuple[list[Any], set[str]]:
    """The spans about the task (by task id, or by an action id of the task), and the trace ids they belong to."""

    def about(span: Any) -> bool:
        attrs = span.attributes or {}
        return attrs.get(Attr.TASK) == task_id or str(attrs.get(Attr.ACTION, "")).startswith(f"{task_id}:")

    mine = [s for s in EXPORTER.get_finished_spans() if about(s)]
    return mine, {format(s.context.trace_id, "032x") for s in mine}


def service_of(span: Any) -> str:
    """Span names start with the service: `<service> handle <event>`, `policy evaluate`, `executor execute`."""
    return str(span.name).split(" ", 1)[0]


def services_in_order(spans: list[Any]) -> list[str]:
    seen: list[str] = []
    for s in sorted(spans, key=lambda s: s.start_time):
        if service_of(s) not in seen:
            seen.append(service_of(s))
    return seen


async def test_an_allowed_task_is_one_trace_from_planner_to_audit(stack: dict[str, Any], kit: KitSettings) -> None:
    task_id = await submit_and_wait(stack, kit, "T-1001")
    stack["provider"].force_flush()
    spans, traces = spans_of(task_id)
    assert len(traces) == 1, f"spans of one task in {len(traces)} traces"
    # Both the planner and the policy service handle `task.submitted` first (the policy records the task's untrusted input).
    assert services_in_order(spans)[0] in ("planner", "policy")
    assert {"planner", "policy", "executor"} <= set(services_in_order(spans))
    (trace,) = traces
    # The span chain: an executor span descends (through the bus) from the planner's first span.
    by_id = {s.context.span_id: s for s in EXPORTER.get_finished_spans()}
    execute = next(s for s in spans if s.name.startswith("executor handle"))
    chain = []
    node = execute
    while node is not None:
        chain.append(service_of(node))
        node = by_id.get(node.parent.span_id) if node.parent else None
    # Up from the executor: policy, then planner (the root is the client's publish span: `Bus.publish`'s own).
    services = [c for c in chain if c in ("planner", "policy", "approval", "executor")]
    assert services[-1] == "planner"
    assert "policy" in services
    assert await audit_trace_ids(stack, kit, task_id, expected_rows=15) == {trace}


async def test_an_escalated_task_keeps_its_trace_through_the_human_approval(stack: dict[str, Any], kit: KitSettings) -> None:
    task_id = await submit_and_wait(stack, kit, "T-1002", grant=True)
    stack["provider"].force_flush()
    spans, traces = spans_of(task_id)
    assert {"planner", "policy", "approval", "executor"} <= set(services_in_order(spans))
    trace_of: dict[str, str] = {}
    for span in sorted(spans, key=lambda s: s.start_time):
        trace_of.setdefault(span.name, format(span.context.trace_id, "032x"))  # the first span of each name
    first = format(min(spans, key=lambda s: s.start_time).context.trace_id, "032x")
    # Up to the request for a human, one trace: planner -> policy -> approval.
    assert trace_of["approval handle action.decided"] == first
    # After the grant, one trace: the policy's re-decision and the executor's call share it.
    executed = next(s for s in spans if s.name == "executor execute" and (s.attributes or {}).get(Attr.TOOL) == "issue_refund")
    regranted = [s for s in spans if s.name == "policy handle approval.granted"]
    assert regranted
    assert {format(s.context.trace_id, "032x") for s in regranted} == {format(executed.context.trace_id, "032x")}
    # And the human's decision continues the escalation's trace: the whole task is one trace.
    assert len(traces) == 1, f"spans of one task in {len(traces)} traces: {sorted(traces)}"
    assert await audit_trace_ids(stack, kit, task_id, expected_rows=15) == traces
