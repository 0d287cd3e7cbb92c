"""The whole database restored from a backup taken mid-task: after `tidegate db catch-up` the task carries on, no call runs twice.

The real planner, policy and executor run in process on a database of this test's own (the session's is shared by the
other tests), against the real broker. Demo ticket T-1001 (tag, note, look up the order, refund it, reply): with the
executor stopped, the policy allows the first step; the database is dumped whole (`pg_dump`, every schema); the
executor starts and the task completes (the refund paid). Everything stops; the database is dropped and restored from the
dump, as an operator would; `tidegate db catch-up` runs (refused while a planner runs): it hands the planner's own
handlers again the events its restored tasks had not seen, in the order the broker appended them, and the task is
`completed` before any service starts, not `step_timeout`; the three start again, and no call is made again (its tool
is not called). The restored payments system holds no refund (the one paid was after the backup, and nothing paid it again).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from planner_restore_helpers import dump, restore
from signers import SigningBus

from schemas import TaskSubmitted
from servicekit import KitSettings, create_pool
from services.executor.app import build as build_executor
from services.planner import PlannerSettings
from services.planner.app import build as build_planner
from services.policy.app import build as build_policy
from systems.seed import TICKETS
from tidegate.demo.tickets import ticket_task
from tidegate.ops.catch_up import NotCaughtUp, catch_up

pytestmark = pytest.mark.timeout(240)  # three services started twice on two shared cores; polls end at the first answer

# Short steps: a task the restore left behind fails `step_timeout` within seconds of the planner's start, not minutes.
SHORT_STEPS = PlannerSettings(step_timeouts_s={}, step_timeout_default_s=20.0, step_timeout_check_s=0.5)


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
    backup = tmp_path / "backup.dump"
    try:
        await policy.start()
        await planner.start()
        await client.publish("tasks", TaskSubmitted.build(task, source="tidegate/test"))
        step = "SELECT status FROM planner.steps WHERE tenant_id = 'acme' AND task_id = $1 AND step = $2"
        await wait_for(lambda: _allowed(pool, step, task.task_id), what="the first step allowed (no executor runs)", timeout=60)
        dump(admin_url, backup)

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

    restore(admin_url, backup)
    pool = await create_pool(kit.operator_database_url, max_size=2)
    assert (await pool.fetchrow(done, task.task_id))["status"] == "running"  # as the backup held it
    running = build_planner(kit, SHORT_STEPS)  # an operator who skipped `tidegate down` for the planner
    await running.start()
    try:
        with pytest.raises(NotCaughtUp, match=r"planner: consumer group .* has members"):
            await catch_up(kit, say=lambda _: None)
    finally:
        await running.stop()
    said: list[str] = []
    caught = await catch_up(kit, say=said.append)
    assert caught.counts["planner events handed again"] >= 1, said
    assert caught.counts["planner tasks moved on"] == 1, said
    assert any(line.startswith("  planner: actions.results[") for line in said), said
    # Caught up before any service starts: the planner's own handlers moved the task on, in the order the bus holds.
    assert (await pool.fetchrow(done, task.task_id))["status"] == "completed"
    again = await catch_up(kit, say=said.append)  # idempotent: every event is applied already
    assert again.counts["planner tasks moved on"] == 0

    policy, planner, executor = build_policy(kit), build_planner(kit, SHORT_STEPS), build_executor(kit)
    try:
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
