"""The whole database restored from a backup taken mid-task: after `tidegate db catch-up` the task carries on, no call runs twice.

The real planner, policy and executor run in process on a database of this test's own (the session's is shared by the
other tests), against the real broker. Demo ticket T-1001 (tag, note, look up the order, refund it, reply): with the
executor stopped, the policy allows the first step; the database is dumped whole (`pg_dump`, every schema); the
executor starts and the task completes (the refund paid). Everything stops; the database is dropped and restored from the
dump, as an operator would; `tidegate db catch-up` runs; the three start again. The planner, moved back to what its
restored tasks had not seen, handles those events again: each step's call is proposed again under the same action id, the
policy answers with its recorded decision, the executor with its kept result (its tool is not called), and the task
ends `completed`, not `step_timeout`. The restored payments system holds no refund (the one paid was after the backup,
and nothing paid it again).
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from signers import SigningBus

from schemas import TaskSubmitted
from servicekit import KitSettings, create_pool
from servicekit.dbroles import with_database
from services.executor.app import build as build_executor
from services.planner import PlannerSettings
from services.planner.app import build as build_planner
from services.policy.app import build as build_policy
from systems.seed import TICKETS, seed_demo
from tidegate.database import migrate
from tidegate.demo.tickets import ticket_task
from tidegate.ops.catch_up import NotCaughtUp, catch_up

pytestmark = pytest.mark.timeout(240)  # three services started twice on two shared cores; polls end at the first answer

# Short steps: a task the restore left behind fails `step_timeout` within seconds of the planner's start, not minutes.
SHORT_STEPS = PlannerSettings(step_timeouts_s={}, step_timeout_default_s=20.0, step_timeout_check_s=0.5)


def _psql(admin_url: str, sql: str) -> None:
    subprocess.run(["psql", admin_url, "-qc", sql], check=True, capture_output=True)


@pytest.fixture
async def own_database(infra: Any, kit: KitSettings) -> AsyncIterator[tuple[KitSettings, str]]:
    """A database of this test's own, migrated as `tidegate db migrate` does and seeded with the demo: restored whole, it
    touches no other test's rows. The kit on it, and its superuser URL (what `pg_dump` and `pg_restore` log in as)."""
    name = f"tidegate_h61_{uuid.uuid4().hex[:8]}"
    _psql(infra.admin_database_url, f"CREATE DATABASE {name} OWNER tidegate")
    own = kit.model_copy(update={"database_url": with_database(infra.database_url, name)})
    try:
        await migrate(own, role_prefix=infra.role_prefix)
        pool = await create_pool(own.operator_database_url, max_size=1)
        try:
            await seed_demo(pool, ("acme",))
        finally:
            await pool.close()
        yield own, with_database(infra.admin_database_url, name)
    finally:
        _psql(infra.admin_database_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _restore(admin_url: str, dump: Path) -> None:
    """Drop the database and restore it whole from `dump`, as an operator restores last night's backup."""
    name = admin_url.split("?")[0].rsplit("/", 1)[1]
    other = with_database(admin_url, "postgres")
    _psql(other, f"DROP DATABASE {name} WITH (FORCE)")
    _psql(other, f"CREATE DATABASE {name} OWNER tidegate")
    subprocess.run(["pg_restore", "--exit-on-error", "-d", admin_url, str(dump)], check=True, capture_output=True)


async def _row(pool: asyncpg.Pool, sql: str, *args: Any) -> Any:
    return await pool.fetchrow(sql, *args)


async def test_a_task_the_restore_took_back_carries_on_after_the_catch_up_and_no_call_runs_twice(
    own_database: tuple[KitSettings, str], wait_for: Any, tmp_path: Path
) -> None:
    kit, admin_url = own_database
    task = ticket_task(next(t for t in TICKETS if t.ticket_id == "T-1001"), task_id=f"restore-{uuid.uuid4().hex[:8]}")
    pool = await create_pool(kit.operator_database_url, max_size=2)
    client = SigningBus(kit, "restore-test")
    await client.start()
    policy, planner = build_policy(kit), build_planner(kit, SHORT_STEPS)
    executor = build_executor(kit)
    dump = tmp_path / "backup.dump"
    try:
        await policy.start()
        await planner.start()
        await client.publish("tasks", TaskSubmitted.build(task, source="tidegate/test"))
        step = "SELECT status FROM planner.steps WHERE tenant_id = 'acme' AND task_id = $1 AND step = $2"
        await wait_for(lambda: _allowed(pool, step, task.task_id), what="the first step allowed (no executor runs)", timeout=60)
        subprocess.run(["pg_dump", "-Fc", "-d", admin_url, "-f", str(dump)], check=True, capture_output=True)  # the backup

        await executor.start()
        done = "SELECT status, reason FROM planner.tasks WHERE tenant_id = 'acme' AND task_id = $1"
        ended = await wait_for(lambda: _ended(pool, done, task.task_id), what="the task ended before the restore", timeout=90)
        assert (ended["status"], ended["reason"]) == ("completed", None)
        paid = "SELECT count(*) FROM payments.refunds WHERE tenant_id = 'acme' AND order_id = $1"
        assert await pool.fetchval(paid, task.input["order_id"]) == 1
    finally:
        for svc in (executor, planner, policy):
            await svc.stop()
        await pool.close()

    _restore(admin_url, dump)
    running = build_planner(kit, SHORT_STEPS)  # an operator who skipped `tidegate down` for the planner
    await running.start()
    try:
        with pytest.raises(NotCaughtUp, match=r"planner: consumer group .* has members"):
            await catch_up(kit, say=lambda _: None)
    finally:
        await running.stop()
    said: list[str] = []
    caught = await catch_up(kit, say=said.append)
    assert caught.counts["planner partitions moved back"] >= 1, said
    assert any(line.startswith("  planner: actions.results[") for line in said), said
    again = await catch_up(kit, say=said.append)  # idempotent: the offsets are where the first run put them
    assert again.counts["planner partitions moved back"] == 0

    pool = await create_pool(kit.operator_database_url, max_size=2)
    policy, planner, executor = build_policy(kit), build_planner(kit, SHORT_STEPS), build_executor(kit)
    try:
        assert (await _row(pool, done, task.task_id))["status"] == "running"  # as the backup held it
        for svc in (policy, executor, planner):
            await svc.start()
        ended = await wait_for(lambda: _ended(pool, done, task.task_id), what="the task ended after the restore", timeout=90)
        assert (ended["status"], ended["reason"]) == ("completed", None)  # not step_timeout
        assert executor.executor.calls == 0  # every call answered from its kept result: none made again
        assert await pool.fetchval(paid, task.input["order_id"]) == 0  # the restored payments hold none: none paid again
        steps = await pool.fetch(
            "SELECT tool, status FROM planner.steps WHERE tenant_id = 'acme' AND task_id = $1 ORDER BY step",
            task.task_id,
        )
        assert [(s["tool"], s["status"]) for s in steps] == [
            ("tag_ticket", "succeeded"),
            ("add_internal_note", "succeeded"),
            ("lookup_order", "succeeded"),
            ("issue_refund", "succeeded"),
            ("draft_reply", "succeeded"),
        ]
    finally:
        await client.stop()
        for svc in (planner, executor, policy):
            await svc.stop()
        await pool.close()


async def _allowed(pool: asyncpg.Pool, sql: str, task_id: str) -> bool:
    return await pool.fetchval(sql, task_id, 1) == "allowed"


async def _ended(pool: asyncpg.Pool, sql: str, task_id: str) -> Any:
    row = await pool.fetchrow(sql, task_id)
    return row if row is not None and row["status"] in ("completed", "failed") else None
