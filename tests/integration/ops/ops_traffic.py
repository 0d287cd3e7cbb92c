"""Recorded traffic for the ops commands: the real services run the demo's tickets on a prefix of their own.

The planner, policy, executor and approval services run in process against the real Kafka and
PostgreSQL; ten tasks are submitted (the eight demo tickets, plus the over-threshold refund twice),
one escalated refund is granted over the approval API and the other rejected; then T-1001's refund is proposed
once more under its action id (as a retrying agent, or a planner's redelivery, does: the policy and the executor answer
from their records). Tests then read the window back with the ops commands.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from signers import SigningBus

from schemas import ActionProposed, TaskCompleted, TaskFailed, TaskSubmitted
from servicekit import ADMIN, KitSettings, catalog_topic_names, create_pool, ensure_topics
from systems.seed import TICKETS, seed_demo
from tidegate.demo.run import fresh_orders
from tidegate.demo.tickets import ticket_task

SYSTEM_SCHEMAS = ("helpdesk", "payments", "mail", "crm", "code")


@dataclass(frozen=True)
class Traffic:
    """Where the recorded traffic is and what it holds."""

    kit: KitSettings
    start: datetime
    end: datetime
    task_ids: dict[str, str]  # ticket (or label) -> task id
    outcomes: dict[str, Any]

    def env(self) -> dict[str, str]:
        """Environment for the CLI to read this traffic."""
        return {
            "TIDEGATE_KAFKA_BOOTSTRAP": self.kit.kafka_bootstrap,
            "TIDEGATE_TOPIC_PREFIX": self.kit.topic_prefix,
            "TIDEGATE_DATABASE_URL": self.kit.database_url,
            "TIDEGATE_KEYS_DIR": str(self.kit.keys_dir),
        }


async def systems_fingerprint(database_url: str) -> dict[str, tuple[int, str]]:
    """Row count and content hash of every table of the systems of record."""
    pool = await create_pool(database_url, max_size=1)
    try:
        tables = await pool.fetch(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema = ANY($1::text[]) AND table_type = 'BASE TABLE' ORDER BY 1, 2",
            list(SYSTEM_SCHEMAS),
        )
        out: dict[str, tuple[int, str]] = {}
        for t in tables:
            name = f'"{t["table_schema"]}"."{t["table_name"]}"'
            row = await pool.fetchrow(
                f"SELECT count(*) AS n, md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) AS h FROM {name} x"
            )
            out[name] = (row["n"], row["h"])
        return out
    finally:
        await pool.close()


async def _outcomes(kit: KitSettings, task_ids: set[str], timeout_s: float) -> dict[str, Any]:
    from tidegate.ops.recorded import recorded_window

    deadline = time.monotonic() + timeout_s
    while True:
        window = await recorded_window(kit, None, None, topics=("tasks.outcomes",), principal=ADMIN)
        found = {e.data.task_id: e for e in window.of(TaskCompleted, TaskFailed) if e.data.task_id in task_ids}
        if len(found) == len(task_ids) or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.3)


async def _audit_caught_up(kit: KitSettings, start: datetime, end: datetime) -> None:
    """Until the audit log holds every event of the window."""
    from tidegate.ops.recorded import read_audit_window, recorded_window

    def ids(window: Any) -> set[str]:  # an event published again (a repeat answered from the record) is one event
        return {r.event.id for r in window.events}

    wanted = ids(await recorded_window(kit, start, end, principal=ADMIN))
    deadline = time.monotonic() + 60
    while not wanted <= ids(await read_audit_window(kit.database_url, kit.topic_prefix, start, end)):
        assert time.monotonic() < deadline, "the audit service did not record the window"
        await asyncio.sleep(0.3)


async def _decide_approvals(approval: Any, kit: KitSettings, grant_task: str, reject_task: str) -> None:
    from services.approval import auth

    token = auth.new_token()
    await approval.approval.repo.add_token(auth.hash_token(token), "fin@acme.example", "acme", ["finance"])
    headers = {"Authorization": f"Bearer {token}"}
    pending: dict[str, dict[str, Any]] = {}
    async with httpx.AsyncClient(base_url=approval.http_url, headers=headers, timeout=10) as http:
        deadline = time.monotonic() + 60
        while len(pending) < 2:
            assert time.monotonic() < deadline, f"approval requests did not appear: {pending}"
            listed = (await http.get("/api/v1/approvals", params={"status": "pending"})).json()
            assert isinstance(listed, list), listed
            pending = {a["task_id"]: a for a in listed if a["task_id"] in (grant_task, reject_task)}
            await asyncio.sleep(0.3)
        ok = await http.post(
            f"/api/v1/approvals/{pending[grant_task]['approval_id']}/approve",
            json={"action_digest": pending[grant_task]["action_digest"], "comment": "checked the order"},
        )
        assert ok.status_code == 200, ok.text
        no = await http.post(f"/api/v1/approvals/{pending[reject_task]['approval_id']}/reject", json={"comment": "duplicate"})
        assert no.status_code == 200, no.text


async def _propose_again(client: SigningBus, kit: KitSettings, task_id: str, tool: str) -> None:
    """Publish the task's recorded proposal of `tool` again, as signed, and wait until its recorded result is published again."""
    from tidegate.ops.recorded import recorded_window

    window = await recorded_window(kit, None, None, topics=("actions.proposed",), principal=ADMIN)
    (proposal,) = [e for e in window.of(ActionProposed) if e.data.task_id == task_id and e.data.tool == tool]
    await client.publish("actions.proposed", proposal)
    deadline = time.monotonic() + 60
    while True:
        results = await recorded_window(kit, None, None, topics=("actions.results",), principal=ADMIN)
        if sum(1 for e in results.events if getattr(e.event.data, "action_id", None) == proposal.data.action_id) >= 2:
            return
        assert time.monotonic() < deadline, "the repeated proposal was not answered from the record"
        await asyncio.sleep(0.3)


async def record_traffic(kit: KitSettings) -> Traffic:
    """Run the services, submit the tickets, decide the two approvals, wait for every outcome."""
    from services.approval.app import build as build_approval
    from services.approval.settings import ApprovalSettings
    from services.executor.app import build as build_executor
    from services.planner.app import build as build_planner
    from services.policy.app import build as build_policy

    await ensure_topics(kit.kafka_bootstrap, kit.topic_prefix, catalog_topic_names(["update_inventory"]))  # the catalog's topic tool
    run = uuid.uuid4().hex[:8]
    pool = await create_pool(kit.database_url, max_size=2)
    try:
        await seed_demo(pool, ("acme",))
        # The refund tickets' orders under ids of this recording's own, as each demo run does: another test (or a demo
        # run) may already have refunded the demo's O-5001 in the shared database, and the recording would then hold a
        # refund that failed where the tests reading it expect one that succeeded (tests/e2e/tracing did exactly that).
        orders = await fresh_orders(pool, "acme", suffix=str(int(run, 16) % 10**8))
    finally:
        await pool.close()
    # Every demo ticket but T-1009, whose refund to a payee named by untrusted text would wait on an approver the recording
    # never has (T-1002's two are decided below).
    tickets = {t.ticket_id: t for t in TICKETS if t.ticket_id != "T-1009"}
    tasks = {tid: ticket_task(t, tenant_id="acme", task_id=f"ops-{run}-{tid}", order_id=orders.get(tid)) for tid, t in tickets.items()}
    tasks["T-1002-again"] = ticket_task(tickets["T-1002"], tenant_id="acme", task_id=f"ops-{run}-T-1002-again", order_id=orders["T-1002"])
    from services.audit.app import build as build_audit

    approval = build_approval(kit, ApprovalSettings(http_port=0))
    services = [build_policy(kit), build_planner(kit), build_executor(kit), approval, build_audit(kit)]
    start = datetime.now(UTC)
    for svc in services:
        await svc.start()
    client = SigningBus(kit, "ops-test")
    await client.start()
    try:
        for data in tasks.values():
            await client.publish("tasks", TaskSubmitted.build(data, source="tidegate/test"))
        await _decide_approvals(approval, kit, tasks["T-1002"].task_id, tasks["T-1002-again"].task_id)
        outcomes = await _outcomes(kit, {t.task_id for t in tasks.values()}, 90)
        await _propose_again(client, kit, tasks["T-1001"].task_id, "issue_refund")
        end = datetime.now(UTC)  # every event of a task was published before its outcome
        await _audit_caught_up(kit, start, end)
    finally:
        await client.stop()
        for svc in reversed(services):
            await svc.stop()
    assert len(outcomes) == len(tasks), f"only {sorted(outcomes)} of {sorted(t.task_id for t in tasks.values())} ended"
    return Traffic(kit, start, end, {k: v.task_id for k, v in tasks.items()}, outcomes)
