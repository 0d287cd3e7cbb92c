"""`tidegate tasks` over the real database lists outside agents' open actions (client, LangGraph, MCP): no planner task.

Each service holds them where it always does: the approval service's requests (pending; granted, not decided again),
policy's reservations (authorized, not claimed) and the executor's calls (running, retrying). Finding integrator4 #3:
three approvals pending and a refund retrying, and `tidegate tasks` printed "0 open task(s)".
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import schemas as s
from servicekit import REPO_ROOT, SigningKey, create_pool
from servicekit.db import apply_migrations
from services.approval.domain import ApprovalRecord
from services.approval.repository import PgApprovalRepository
from services.planner.repository import PostgresTaskRepository
from services.planner.state_seal import StateSeal
from services.planner.task_state import CostRates, PlannedStep, StepRecord, TaskState, Transition
from tidegate.cli import app as cli

with tempfile.TemporaryDirectory() as _keys:  # the planner's key: its current key is known without the folder
    SEAL = StateSeal(SigningKey.load_or_create(Path(_keys), "planner"), Path(_keys))

NOW = datetime.now(UTC)  # set again as each test starts (`_now`): the suite may run it long after this module is imported


@pytest.fixture(autouse=True)
def _now() -> None:
    """The test's times are relative to when it runs, not to when the suite collected it (CI ran it 20 minutes later)."""
    global NOW
    NOW = datetime.now(UTC)


def _request(ids: dict[str, str], tenant: str, key: str, **extra: Any) -> ApprovalRecord:
    return ApprovalRecord(
        approval_id=ids[key], action_id=ids[key] + ":a", task_id=ids["mcp_task"], tenant_id=tenant, step=1, tool="refund_charge",
        args={"amount_usd": 903}, action_digest="d", proposer="external:mcp", created_at=NOW - timedelta(minutes=25),
        expires_at=NOW + timedelta(minutes=35), **extra,
    )  # fmt: skip


async def _decision(pool: Any, key: str, action_id: str, tenant: str, task_id: str, proposer: str, outcome: str) -> None:
    proposal = json.dumps({"proposer": proposer, "step": 3, "tool": "refund_charge"})
    await pool.execute(
        "INSERT INTO policy.decisions (key, action_id, tenant_id, task_id, outcome, action_digest, proposal, decided_event) "
        "VALUES ($1, $2, $3, $4, $5, 'd', $6::jsonb, '{}')",
        key, action_id, tenant, task_id, outcome, proposal,
    )  # fmt: skip


async def _reserve(pool: Any, action_id: str, tenant: str, task_id: str, created_at: datetime) -> None:
    await pool.execute(
        "INSERT INTO policy.reservations (action_id, tenant_id, task_id, tool, args, amount_usd, status, created_at) "
        "VALUES ($1, $2, $3, 'refund_charge', '{}', 40, 'reserved', $4)",
        action_id, tenant, task_id, created_at,
    )  # fmt: skip


async def _call(pool: Any, action_id: str, tenant: str, task_id: str, status: str, prefix: str, **times: Any) -> None:
    await pool.execute(
        "INSERT INTO executor.actions (action_id, event_id, tenant_id, task_id, step, tool, args, action_digest, status, attempts, "
        "retry_at, claimed_at, started_at, topic_prefix) VALUES ($1, $2, $3, $4, 3, 'refund_charge', '{}', 'd', $5, 2, $6, $7, $8, $9)",
        action_id, "au-" + action_id, tenant, task_id, status, times.get("retry_at"), times.get("claimed_at", NOW),
        times.get("started_at"), prefix,
    )  # fmt: skip


async def _fill(database_url: str, prefix: str, tenant: str, ids: dict[str, str]) -> None:
    pool = await create_pool(database_url, max_size=2)
    try:
        for schema in ("planner", "executor", "policy", "approval"):
            await apply_migrations(pool, schema, REPO_ROOT / "services" / schema / "migrations")
        # The planner's own task, escalated: its request is listed once, as the planner's task.
        planned = PlannedStep(tool="issue_refund", args={"amount_usd": 899})
        record = StepRecord(step=1, action_id=ids["planned"] + ":1", tool="issue_refund", args=planned.args, status="escalated",
                            planned=planned, approval_id=ids["planned_ap"])  # fmt: skip
        state = TaskState(
            task_id=ids["planned"], tenant_id=tenant, workflow="support_triage", mode="draft", requested_by="r", strategy="playbook",
            status="waiting_human", steps=[record], counts=s.ActionCounts(proposed=1, escalated=1), started_at=NOW - timedelta(hours=1),
        )  # fmt: skip
        await PostgresTaskRepository(pool, CostRates(), seal=SEAL, prefix=prefix).apply(
            f"ev-{ids['planned']}", state.tenant_id, state.task_id, lambda _o: Transition(state=state)
        )
        approvals = PgApprovalRepository(pool)
        planner_request = _request(ids, tenant, "planned_ap").model_copy(
            update={"task_id": ids["planned"], "action_id": ids["planned"] + ":1"}
        )
        granted = {"status": "granted", "decided_by": "fin@acme.example", "decided_at": NOW - timedelta(minutes=4)}
        for request in (
            planner_request,
            _request(ids, tenant, "pending"),
            _request(ids, tenant, "follow_up", kind="follow_up"),
            _request(ids, tenant, "granted", **granted),
            _request(ids, tenant, "granted_done", **granted),  # decided again and run: nothing open
        ):
            assert await approvals.insert_request(request, [], []) is not None
        await _decision(
            pool, f"approval:{ids['granted_done']}", ids["granted_done"] + ":a", tenant, ids["mcp_task"], "external:mcp", "allow"
        )
        await _call(pool, ids["granted_done"] + ":a", tenant, ids["mcp_task"], "succeeded", prefix)
        # A LangGraph agent's refund retrying, one authorized and not claimed yet, one run already, one of another prefix.
        for key in ("retrying", "unclaimed", "ran", "elsewhere"):
            await _decision(pool, ids[key], ids[key], tenant, ids["graph_task"], "langgraph-agent", "allow")
            await _reserve(pool, ids[key], tenant, ids["graph_task"], NOW - timedelta(minutes=20))
        await _call(pool, ids["retrying"], tenant, ids["graph_task"], "waiting", prefix, retry_at=NOW + timedelta(seconds=40),
                    claimed_at=NOW - timedelta(minutes=19))  # fmt: skip
        await _call(pool, ids["ran"], tenant, ids["graph_task"], "succeeded", prefix)
        await _call(pool, ids["elsewhere"], tenant, ids["graph_task"], "running", "another-" + prefix, started_at=NOW)
    finally:
        await pool.close()


async def _tasks(env: dict[str, str], *args: str) -> Any:
    return await asyncio.to_thread(CliRunner().invoke, cli, ["tasks", *args], env=env)


async def test_outside_agents_open_actions_are_listed_with_what_each_waits_on(infra: Any, prefix: str, tmp_path: Path) -> None:
    tenant = f"outside-{uuid.uuid4().hex[:8]}"
    keys = ("planned", "planned_ap", "mcp_task", "pending", "follow_up", "granted", "granted_done", "graph_task")
    ids = {k: f"{k}-{uuid.uuid4().hex[:8]}" for k in (*keys, "retrying", "unclaimed", "ran", "elsewhere")}
    await _fill(infra.database_url, prefix, tenant, ids)
    env = {"TIDEGATE_DATABASE_URL": infra.database_url, "TIDEGATE_TOPIC_PREFIX": prefix, "TIDEGATE_KEYS_DIR": str(tmp_path / "keys")}

    listed = await _tasks(env, "--tenant", tenant, "--json")
    assert listed.exit_code == 0, listed.output
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    planner_rows = [r for r in rows if not r["outside_agent"]]
    assert [(r["task_id"], r["proposed_by"], r["approval_id"]) for r in planner_rows] == [
        (ids["planned"], "tidegate/planner", ids["planned_ap"])
    ]
    outside = {r["action_id"]: r for r in rows if r["outside_agent"]}
    assert {a: (r["task_id"], r["proposed_by"], r["waits"], r["waits_on"]) for a, r in outside.items()} == {
        ids["pending"] + ":a": (ids["mcp_task"], "external:mcp", "human", f"a human's approval {ids['pending']} of refund_charge"),
        ids["follow_up"] + ":a": (
            ids["mcp_task"], "external:mcp", "human", f"a human's follow-up (its outcome is unknown) {ids['follow_up']} of refund_charge"
        ),
        ids["granted"] + ":a": (
            ids["mcp_task"], "external:mcp", "decision", f"policy's decision on refund_charge after a human's grant ({ids['granted']})"
        ),
        ids["retrying"]: (ids["graph_task"], "langgraph-agent", "result", "a retry of refund_charge (attempt 2 failed)"),
        ids["unclaimed"]: (
            ids["graph_task"], "langgraph-agent", "result", "the executor to take the call of refund_charge (authorized, not claimed)"
        ),
    }  # fmt: skip
    pending = outside[ids["pending"] + ":a"]
    assert datetime.fromisoformat(pending["since"]) == NOW - timedelta(minutes=25)  # when the human was asked
    assert datetime.fromisoformat(pending["expires_at"]) == NOW + timedelta(minutes=35)
    assert datetime.fromisoformat(outside[ids["granted"] + ":a"]["since"]) == NOW - timedelta(minutes=4)  # the grant
    assert datetime.fromisoformat(outside[ids["retrying"]]["retry_at"]) == NOW + timedelta(seconds=40)
    assert datetime.fromisoformat(outside[ids["retrying"]]["since"]) == NOW - timedelta(minutes=19)  # claimed, retrying since

    stale = await _tasks(env, "--tenant", tenant, "--stale", "15m", "--json")
    assert {json.loads(line)["action_id"] for line in stale.stdout.splitlines()} == {
        ids["pending"] + ":a",
        ids["follow_up"] + ":a",
        ids["retrying"],
        ids["unclaimed"],
    }  # the grant 4 min ago is not stale, nor the planner's task (its request is not in the audit log: since its last change)

    table = await _tasks({**env, "COLUMNS": "250"}, "--tenant", tenant)
    assert table.exit_code == 0, table.output
    assert "1 open task(s), 5 open action(s) of outside agents" in table.stdout
    assert "outside agent external:mcp" in table.stdout
