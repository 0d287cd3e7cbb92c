"""The operator upgrades to release 23 with a refund waiting on an approver, and adopts its decision: it is approved and runs once.

The five services run in process on the real Kafka and PostgreSQL. The policy escalates the demo's over-threshold
refund (T-1002); its request is then made what a request opened by release 22 is (the row without the kept
`decision`): release 23 refuses to approve it (`409 request_unproven`). The operator runs `tidegate approvals adopt`
(the CLI, as a subprocess), twice (the second run has nothing to do for it); the approver approves, and the executor
refunds once.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from signers import SigningBus

from schemas import TaskSubmitted
from servicekit import REPO_ROOT, KitSettings, catalog_topic_names, create_pool, ensure_topics
from services.audit import PostgresAuditLog, SearchFilters
from systems.seed import TICKETS, seed_demo
from tidegate.demo.run import fresh_orders
from tidegate.demo.tickets import ticket_task

pytestmark = pytest.mark.integration

WaitFor = Callable[..., Awaitable[Any]]


def adopt(kit: KitSettings) -> subprocess.CompletedProcess[str]:
    env = {
        "TIDEGATE_KAFKA_BOOTSTRAP": kit.kafka_bootstrap,
        "TIDEGATE_TOPIC_PREFIX": kit.topic_prefix,
        "TIDEGATE_DATABASE_URL": kit.database_url,
        "TIDEGATE_KEYS_DIR": str(kit.keys_dir),
        "TIDEGATE_DB_CREDENTIALS_DIR": str(kit.db_credentials_dir),
        "PATH": "/usr/bin:/bin",
        "COLUMNS": "200",
    }
    command = [sys.executable, "-m", "tidegate.cli", "approvals", "adopt", "--json"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)


async def test_a_refund_pending_across_the_upgrade_is_adopted_approved_and_runs_once(kit: KitSettings, wait_for: WaitFor) -> None:
    from services.approval import auth
    from services.approval.app import build as build_approval
    from services.approval.settings import ApprovalSettings
    from services.audit.app import build as build_audit
    from services.executor.app import build as build_executor
    from services.planner.app import build as build_planner
    from services.policy.app import build as build_policy

    await ensure_topics(kit.kafka_bootstrap, kit.topic_prefix, catalog_topic_names(["update_inventory"]))
    pool = await create_pool(kit.database_url, max_size=2)
    try:
        await seed_demo(pool, ("acme",))
        orders = await fresh_orders(pool, "acme", suffix=str(uuid.uuid4().int % 10**8))
    finally:
        await pool.close()
    (ticket,) = [t for t in TICKETS if t.ticket_id == "T-1002"]
    task = ticket_task(ticket, tenant_id="acme", task_id=f"adopt-{uuid.uuid4().hex[:8]}", order_id=orders["T-1002"])

    approval = build_approval(kit, ApprovalSettings(http_port=0))
    services = [build_policy(kit), build_planner(kit), build_executor(kit), approval, build_audit(kit)]
    for svc in services:
        await svc.start()
    client = SigningBus(kit, "adopt-test")
    await client.start()
    log = await PostgresAuditLog.connect(kit.database_url, max_size=2)
    token = auth.new_token()
    await approval.approval.repo.add_token(auth.hash_token(token), "fin@acme.example", "acme", ["finance"])
    try:
        await client.publish("tasks", TaskSubmitted.build(task, source="tidegate/test"))
        async with httpx.AsyncClient(base_url=approval.http_url, headers={"Authorization": f"Bearer {token}"}, timeout=10) as http:

            async def request() -> Any:
                listed = (await http.get("/api/v1/approvals", params={"status": "pending", "tenant_id": "acme"})).json()
                return next((a for a in listed if a["task_id"] == task.task_id), None)

            shown = await wait_for(request, what="the refund's approval request", timeout=90)
            action_id, approval_id = shown["action_id"], shown["approval_id"]
            decided = SearchFilters(event_type="tidegate.action.decided", action_id=action_id, topic_prefix=kit.topic_prefix)
            await wait_for(lambda: log.search(decided, limit=5), what="the escalation in the audit log", timeout=60)
            # The row as release 22 wrote it: no kept decision.
            async with _operator(kit) as db:
                await db.execute("UPDATE approval.approvals SET record = record - 'decision' WHERE approval_id = $1", approval_id)
            approve = {"action_digest": shown["action_digest"], "comment": "checked the order"}
            refused = await http.post(f"/api/v1/approvals/{approval_id}/approve", json=approve)
            assert (refused.status_code, refused.json()["detail"]["code"]) == (409, "request_unproven"), refused.text
            assert "tidegate approvals adopt" in refused.json()["detail"]["message"]

            first = adopt(kit)
            assert first.returncode == 0, first.stdout + first.stderr
            ours = [r for r in json.loads(first.stdout)["requests"] if r["approval_id"] == approval_id]
            assert [r["outcome"] for r in ours] == ["adopted"], first.stdout
            again = adopt(kit)
            assert approval_id not in again.stdout, again.stdout  # kept: not read again

            after = (await http.get(f"/api/v1/approvals/{approval_id}")).json()
            assert (after["not_as_signed"], after["can_decide"]) == (None, True), after
            granted = await http.post(f"/api/v1/approvals/{approval_id}/approve", json=approve)
            assert (granted.status_code, granted.json()["status"]) == (200, "granted"), granted.text

        ran = SearchFilters(event_type="tidegate.action.succeeded", action_id=action_id, topic_prefix=kit.topic_prefix)
        await wait_for(lambda: log.search(ran, limit=5), what="the refund's result", timeout=90)
        assert len(await log.search(ran, limit=5)) == 1
    finally:
        await log.close()
        await client.stop()
        for svc in reversed(services):
            await svc.stop()
    async with _operator(kit) as db:
        refunds = await db.fetchval("SELECT count(*) FROM payments.refunds WHERE order_id = $1", orders["T-1002"])
    assert refunds == 1, "the refund ran other than once"


@asynccontextmanager
async def _operator(kit: KitSettings) -> AsyncIterator[Any]:
    pool = await create_pool(kit.database_url, max_size=1)
    try:
        yield pool
    finally:
        await pool.close()
