"""`tidegate tasks` over the real database: what each open task waits on, the stale ones, and the hand-offs (no psql)."""

from __future__ import annotations

import asyncio
import json
import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from typer.testing import CliRunner

import schemas as s
from servicekit import REPO_ROOT, KitSettings, SigningKey, create_pool
from servicekit.db import apply_migrations
from servicekit.dbroles import service_database_url
from services.audit.app import MIGRATIONS as AUDIT_MIGRATIONS
from services.audit.records import observe
from services.audit.repository import PostgresAuditLog
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


def _state(task_id: str, status: str, step_status: str, action_id: str, **step: Any) -> TaskState:
    planned = PlannedStep(tool="issue_refund", args={"amount_usd": 899})
    record = StepRecord(step=4, action_id=action_id, tool="issue_refund", args=planned.args, status=step_status, planned=planned, **step)
    counts = s.ActionCounts(proposed=4, escalated=1, **({step_status: 1} if step_status in ("expired", "rejected") else {}))
    return TaskState(
        task_id=task_id, tenant_id="acme", workflow="support_triage", mode="draft", requested_by="demo@acme.example", strategy="playbook",
        status=status, steps=[record], counts=counts, started_at=NOW - timedelta(hours=1),
        ended_at=NOW if status == "completed" else None, summary="support_triage: issue_refund " + step_status,
    )  # fmt: skip


async def _fill(database_url: str, prefix: str, ids: dict[str, str]) -> None:
    pool = await create_pool(database_url, max_size=2)
    try:
        for schema in ("planner", "executor"):
            await apply_migrations(pool, schema, REPO_ROOT / "services" / schema / "migrations")
        repo = PostgresTaskRepository(pool, CostRates(), seal=SEAL, prefix=prefix)
        states = [
            _state(ids["human"], "waiting_human", "escalated", ids["human"] + ":4", approval_id="ap-h"),
            _state(ids["retry"], "running", "allowed", ids["retry"] + ":4", waiting_since=NOW - timedelta(minutes=20)),
            _state(ids["call"], "running", "allowed", ids["call"] + ":4", waiting_since=NOW - timedelta(minutes=1)),
            _state(ids["expired"], "completed", "expired", ids["expired"] + ":4", reasons=["approval_expired"]),
            _state(ids["done"], "completed", "succeeded", ids["done"] + ":4"),
        ]
        for state in states:
            await repo.apply(f"ev-{state.task_id}", state.tenant_id, state.task_id, lambda _old, state=state: Transition(state=state))
        for key, status, retry_at, started in (
            ("retry", "waiting", NOW + timedelta(seconds=40), NOW - timedelta(minutes=19)),
            ("call", "running", None, NOW - timedelta(seconds=50)),
        ):
            await pool.execute(
                "INSERT INTO executor.actions (action_id, event_id, tenant_id, task_id, step, tool, args, action_digest, status, "
                "attempts, retry_at, started_at, topic_prefix) "
                "VALUES ($1, $2, 'acme', $3, 4, 'issue_refund', '{}', 'd', $4, 2, $5, $6, $7)",
                ids[key] + ":4", f"au-{ids[key]}", ids[key], status, retry_at, started, prefix,
            )  # fmt: skip
    finally:
        await pool.close()
    log = await PostgresAuditLog.connect(database_url)
    try:
        await apply_migrations(log.pool, "audit", AUDIT_MIGRATIONS)
        data = s.ApprovalData(
            approval_id="ap-h", action_id=ids["human"] + ":4", task_id=ids["human"], tenant_id="acme", tool="issue_refund",
            args={"amount_usd": 899}, action_digest="d", expires_at=NOW + timedelta(minutes=10), requested_by="demo@acme.example",
        )  # fmt: skip
        event = s.ApprovalRequested.build(data, source="tidegate/approval")
        asked_ms = int((NOW - timedelta(minutes=30)).timestamp() * 1000)
        await log.append(
            [observe(topic=prefix + "approvals", partition=0, offset=0, timestamp_ms=asked_ms, timestamp_type=0, key=event.key,
                     value=s.encode(event), headers=[], prefix=prefix)]
        )  # fmt: skip
    finally:
        await log.close()


async def _tasks(env: dict[str, str], *args: str) -> list[dict[str, Any]]:
    result = await asyncio.to_thread(CliRunner().invoke, cli, ["tasks", *args, "--json"], env=env)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


async def test_open_tasks_say_what_they_wait_on_and_since_when(infra: Any, prefix: str, tmp_path: Path) -> None:
    ids = {k: f"{k}-{uuid.uuid4().hex[:8]}" for k in ("human", "retry", "call", "expired", "done")}
    await _fill(infra.database_url, prefix, ids)
    env = {"TIDEGATE_DATABASE_URL": infra.database_url, "TIDEGATE_TOPIC_PREFIX": prefix, "TIDEGATE_KEYS_DIR": str(tmp_path / "keys")}

    found = {t["task_id"]: t for t in await _tasks(env) if not t["outside_agent"]}  # other tests' outside agents share the database
    assert set(found) == {ids["human"], ids["retry"], ids["call"]}  # closed tasks are not open
    human = found[ids["human"]]
    assert (human["waits"], human["approval_id"]) == ("human", "ap-h")
    assert human["waits_on"] == "a human's approval ap-h of issue_refund"
    assert datetime.fromisoformat(human["expires_at"]) == NOW + timedelta(minutes=10)  # from the recorded request
    assert datetime.fromisoformat(found[ids["retry"]]["retry_at"]) > NOW
    assert found[ids["retry"]]["waits_on"] == "a retry of issue_refund (attempt 2 failed)"
    assert found[ids["call"]]["waits_on"] == "the call of issue_refund in progress (attempt 2)"

    stale = {t["task_id"] for t in await _tasks(env, "--stale", "15m") if not t["outside_agent"]}
    assert stale == {ids["human"], ids["retry"]}  # asked 30 min ago, retrying for 20 min; the call started 50 s ago is not

    handed = await _tasks(env, "--handoffs", "--since", "1h")
    assert [(t["task_id"], t["outcome"], t["refused"]) for t in handed] == [
        (ids["expired"], "completed_with_handoff", ["issue_refund expired (approval_expired)"])
    ]


async def test_a_task_state_of_the_wrong_shape_is_left_out_and_the_others_are_listed(
    infra: Any, kit: KitSettings, prefix: str, tmp_path: Path
) -> None:
    """The planner's database login rewrites one open task's state (`steps` a text) and one closed task's count (`denied`).

    Before, `tidegate tasks` failed whole on each (`list_type`; PostgreSQL's `invalid input syntax for type integer`): the
    on-call saw no stuck task at all.
    """
    ids = {k: f"{k}-{uuid.uuid4().hex[:8]}" for k in ("human", "retry", "call", "expired", "done")}
    await _fill(infra.database_url, prefix, ids)
    env = {"TIDEGATE_DATABASE_URL": infra.database_url, "TIDEGATE_TOPIC_PREFIX": prefix, "TIDEGATE_KEYS_DIR": str(tmp_path / "keys")}
    login = await asyncpg.connect(service_database_url(kit, "planner"))
    kept = await login.fetch(
        "SELECT task_id, state::text, counts::text FROM planner.tasks WHERE task_id = ANY($1::text[]) AND topic_prefix = $2",
        [ids["retry"], ids["expired"]],
        prefix,
    )
    try:
        steps = "UPDATE planner.tasks SET state = jsonb_set(state::jsonb, '{steps}', '\"many\"')::json "
        steps += "WHERE task_id = $1 AND topic_prefix = $2"
        await login.execute(steps, ids["retry"], prefix)
        await login.execute(
            'UPDATE planner.tasks SET counts = counts || \'{"denied": "many"}\' WHERE task_id = $1 AND topic_prefix = $2',
            ids["expired"],
            prefix,
        )
        found = {t["task_id"] for t in await _tasks(env) if not t["outside_agent"]}
        assert found == {ids["human"], ids["call"]}
        handed = await _tasks(env, "--handoffs", "--since", "1h")
        assert [t["task_id"] for t in handed] == [ids["expired"]]  # its other counts still say it was handed off
    finally:  # the rows as the planner wrote them (the session's database is shared)
        for row in kept:
            await login.execute(
                "UPDATE planner.tasks SET state = $2::json, counts = $3::jsonb WHERE task_id = $1 AND topic_prefix = $4",
                row["task_id"], row["state"], row["counts"], prefix,
            )  # fmt: skip
        await login.close()
