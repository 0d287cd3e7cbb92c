"""On the real database and bus: a result is kept among the task's events with its fields (migration 012), and what an
approver reads of a granted call is the schemas' rule on them; results kept before the migration read as they did."""

from __future__ import annotations

import json
import shutil
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from approval_harness import StartApproval

import schemas as s
from servicekit import REPO_ROOT, action_digest, create_pool
from servicekit.db import apply_migrations
from services.approval._outcome import earlier_grants, outcome_of
from services.approval._task_event_store import TaskEvent
from services.approval.domain import ApprovalRecord
from services.approval.repository import PgApprovalRepository

MIGRATIONS = REPO_ROOT / "services" / "approval" / "migrations"
RESULTS = "012_task_event_results.sql"
ARGS = {"payee_id": "cus_1", "amount_usd": 900.0, "order_id": "O-1"}

# A summary as the service kept it before 012 (its only record of the result) → what the approver read of it then.
KEPT_BEFORE = {
    "a-ok": ("succeeded", "succeeded after 1 attempt(s)", {"status": "executed", "reason": None, "message": None, "attempts": 1}),
    "a-503": (
        "failed",
        "failed after 2 attempt(s): http_503: helpdesk: down",
        {"status": "failed", "reason": "http_503", "message": "helpdesk: down", "attempts": 2},
    ),
    "a-exp": (
        "failed",
        "failed after 0 attempt(s): authorization_expired: expired before the executor read it",
        {"status": "expired_unused", "reason": "authorization_expired", "message": "expired before the executor read it", "attempts": 0},
    ),
    "a-ks": (
        "failed",
        "failed after 0 attempt(s): kill_switch: stopped",
        {"status": "refused", "reason": "kill_switch", "message": "stopped", "attempts": 0},
    ),
    "a-unk": (
        "unknown",
        "unknown after 1 attempt(s): timeout: no answer",
        {"status": "unknown", "reason": "timeout", "message": "no answer", "attempts": 1},
    ),
    "a-odd": ("failed", "something else", {"status": "failed", "reason": None, "message": "something else", "attempts": None}),
}


def granted(action_id: str, tenant: str = "acme") -> ApprovalRecord:
    now = datetime.now(UTC)
    return ApprovalRecord(
        approval_id=f"ap-{uuid.uuid4().hex[:16]}",
        action_id=action_id,
        task_id="t-1",
        tenant_id=tenant,
        tool="issue_refund",
        args=ARGS,
        action_digest=action_digest(tenant, "issue_refund", ARGS),
        risk="financial",
        status="granted",
        approvers=["bob@acme.example"],
        decided_by="bob@acme.example",
        decided_at=now,
        created_at=now - timedelta(minutes=1),
        expires_at=now + timedelta(hours=1),
    )


async def test_results_kept_before_migration_012_read_as_they_did_and_new_ones_keep_their_fields(infra: Any, tmp_path: Path) -> None:
    schema = f"approval_results_{uuid.uuid4().hex[:8]}"
    folder = tmp_path / "migrations"
    folder.mkdir()
    for path in sorted(MIGRATIONS.glob("*.sql")):
        if path.name < RESULTS:
            shutil.copy(path, folder / path.name)
    pool = await create_pool(infra.database_url, max_size=2)
    try:
        await apply_migrations(pool, schema, folder)
        at = datetime.now(UTC) - timedelta(minutes=5)
        for action_id, (status, summary, _) in KEPT_BEFORE.items():
            await pool.execute(
                f'INSERT INTO "{schema}".task_events (event_id, tenant_id, task_id, action_id, type, tool, outcome, summary, at) '
                "VALUES ($1, 'acme', 't-1', $1, $2, 'issue_refund', $3, $4, $5)",
                action_id,
                f"tidegate.action.{status}",
                status,
                summary,
                at,
            )
        shutil.copy(MIGRATIONS / RESULTS, folder / RESULTS)
        assert await apply_migrations(pool, schema, folder) == [RESULTS]

        repo = PgApprovalRepository(pool, schema)
        shown = {}
        for action_id in KEPT_BEFORE:
            record = granted(action_id)
            assert await repo.insert_request(record, [], []) is not None
            outcome = await outcome_of(repo, record)
            assert outcome is not None
            shown[action_id] = {k: v for k, v in outcome.items() if k != "at"}
        assert shown == {action_id: expected for action_id, (_, _, expected) in KEPT_BEFORE.items()}

        # The same call proposed again: the grant whose authorization expired unused (kept before 012) is named.
        again = granted("a-again").model_copy(update={"status": "pending", "approvers": [], "decided_by": None, "decided_at": None})
        context = [e.as_dict() for e in await repo.task_events("acme", "t-1")]
        [earlier] = await earlier_grants(repo, again, context)
        assert earlier["action_id"] == "a-exp"
        assert "(expired before the executor read it): nothing was done" in earlier["why"]

        # Kept from now on: the result's fields, read back as they were given, whatever the summary beside them says.
        result = s.ActionResultData(
            action_id="a-new",
            task_id="t-1",
            tenant_id="acme",
            tool="issue_refund",
            status="failed",
            attempts=0,
            duration_ms=0,
            error=s.ErrorInfo(type="authorization_expired: late by 2 s", message="refused"),
        )
        summary = "failed after 0 attempt(s): authorization_expired: late by 2 s: refused"  # reads as the code, to a parser
        event = TaskEvent("e-new", "acme", "t-1", "a-new", "tidegate.action.failed", "issue_refund", datetime.now(UTC), "failed")
        await repo.record_task_events([replace(event, summary=summary, result=result)])
        [back] = await repo.action_events(["a-new"])
        assert back.result == result
        new = granted("a-new")
        await repo.insert_request(new, [], [])
        assert (await outcome_of(repo, new) or {})["status"] == "refused"  # the summary would read as authorization_expired
        stored = json.loads(await pool.fetchval(f'SELECT result FROM "{schema}".task_events WHERE event_id = $1', "e-new"))
        assert (stored["status"], stored["attempts"], stored["error"]["type"]) == ("failed", 0, "authorization_expired: late by 2 s")
        decided = await pool.fetchval(f'SELECT count(*) FROM "{schema}".task_events WHERE result IS NOT NULL AND type LIKE $1', "%decided")
        assert decided == 0
    finally:
        await pool.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await pool.close()


async def test_the_running_service_keeps_a_results_fields_without_what_the_call_returned(
    start_approval: StartApproval, http: httpx.AsyncClient, wait_for: Any
) -> None:
    h = await start_approval()
    bob = {"Authorization": f"Bearer {await h.token('bob@acme.example', ['finance'])}"}
    await h.escalate(d := h.decided())
    record = await h.request_for(d.action_id, wait_for)
    approved = await http.post(
        f"{h.url}/api/v1/approvals/{record.approval_id}/approve", json={"action_digest": record.action_digest}, headers=bob
    )
    assert approved.json()["status"] == "granted", approved.text
    data = s.ActionResultData(
        action_id=d.action_id,
        task_id=d.task_id,
        tenant_id=h.tenant,
        tool=d.tool,
        status="succeeded",
        result={"refund_id": "re_1", "card": "4242"},
        attempts=2,
        duration_ms=40,
        cost=s.ResultCost(usd=0.002),
    )
    await h.publish("actions.results", s.ActionSucceeded.build(data, source="tidegate/executor"))

    async def outcome() -> Any:
        return (await http.get(f"{h.url}/api/v1/approvals/{record.approval_id}", headers=bob)).json()["outcome"]

    shown = await wait_for(outcome, what="the grant's outcome")
    assert (shown["status"], shown["attempts"], shown["reason"]) == ("executed", 2, None)
    assert h.proc.pool is not None
    stored = json.loads(
        await h.proc.pool.fetchval("SELECT result FROM approval.task_events WHERE action_id = $1 AND result IS NOT NULL", d.action_id)
    )
    assert (stored["status"], stored["attempts"], stored["duration_ms"], stored["cost"]) == ("succeeded", 2, 40, {"usd": 0.002})
    assert (stored["result"], stored["undo"]) == (None, None)  # what the call returned is not kept here
