"""`tidegate tasks` over the real database: an outside agent's follow-up names its proposer and the attempts its call took.

Finding integrator5 #7: every follow-up row read `outside agent outside agent` (a follow-up records no proposer) and
`attempts: 0` for calls the executor had tried 3 times.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

import schemas as s
from servicekit import REPO_ROOT, create_pool
from servicekit.db import apply_migrations
from services.approval.domain import follow_up_from_result
from services.approval.repository import PgApprovalRepository
from tidegate.cli import app as cli


def _unknown(action_id: str, task_id: str, tenant: str) -> s.ActionResultData:
    return s.ActionResultData(
        action_id=action_id, task_id=task_id, tenant_id=tenant, step=2, tool="oa_refund_order", status="unknown", attempts=3,
        duration_ms=60_000.0, error=s.ErrorInfo(type="timeout", message="no reply within 20.0 s", maybe_applied=True),
        idempotency_key=action_id,
    )  # fmt: skip


async def _fill(database_url: str, tenant: str, ids: dict[str, str]) -> None:
    pool = await create_pool(database_url, max_size=2)
    try:
        for schema in ("planner", "executor", "policy", "approval"):
            await apply_migrations(pool, schema, REPO_ROOT / "services" / schema / "migrations")
        now = datetime.now(UTC)
        approvals = PgApprovalRepository(pool)
        for key in ("decided", "undecided"):  # the executor's result of each: unknown after 3 attempts
            record = follow_up_from_result(
                _unknown(ids[key], ids["task"], tenant), approval_id=f"fu-{ids[key]}", now=now - timedelta(minutes=5),
                ttl=timedelta(days=3), risk="financial", requested_by="agent@acme.example", args={"order_id": "o-66"},
            )  # fmt: skip
            assert record.proposer is None  # what the approval service records of a follow-up: no proposer
            assert await approvals.insert_request(record, [], []) is not None
        proposal = json.dumps({"proposer": "external:client", "step": 2, "tool": "oa_refund_order"})
        await pool.execute(
            "INSERT INTO policy.decisions (key, action_id, tenant_id, task_id, outcome, action_digest, proposal, decided_event) "
            "VALUES ($1, $1, $2, $3, 'allow', 'd', $4::jsonb, '{}')",
            ids["decided"], tenant, ids["task"], proposal,
        )  # fmt: skip
    finally:
        await pool.close()


async def _tasks(env: dict[str, str], *args: str) -> Any:
    return await asyncio.to_thread(CliRunner().invoke, cli, ["tasks", *args], env=env)


async def test_a_follow_up_row_names_its_proposer_and_the_attempts_its_call_took(infra: Any, prefix: str, tmp_path: Path) -> None:
    tenant = f"follow-{uuid.uuid4().hex[:8]}"
    ids = {k: f"{k}-{uuid.uuid4().hex[:8]}" for k in ("task", "decided", "undecided")}
    await _fill(infra.database_url, tenant, ids)
    env = {"TIDEGATE_DATABASE_URL": infra.database_url, "TIDEGATE_TOPIC_PREFIX": prefix, "TIDEGATE_KEYS_DIR": str(tmp_path / "keys")}

    listed = await _tasks(env, "--tenant", tenant, "--json")
    assert listed.exit_code == 0, listed.output
    rows = {r["action_id"]: r for r in map(json.loads, listed.stdout.splitlines())}
    assert {a: (r["status"], r["proposed_by"], r["step"], r["attempts"]) for a, r in rows.items()} == {
        ids["decided"]: ("follow-up pending", "external:client", 2, 3),  # the proposer policy's decision recorded
        ids["undecided"]: ("follow-up pending", None, 2, 3),  # none recorded anywhere: said so, never made up
    }

    table = await _tasks({**env, "COLUMNS": "250"}, "--tenant", tenant)
    assert table.exit_code == 0, table.output
    assert "outside agent external:client" in table.stdout
    assert "outside agent (proposer not recorded)" in table.stdout
    assert "outside agent outside agent" not in table.stdout
