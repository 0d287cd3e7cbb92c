"""Real executor processes: SIGKILL in the middle of a batch, two copies in one group, a crash mid-call."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg

from servicekit import Bus

BATCH = 500


async def count(pool: asyncpg.Pool, sql: str, *args: Any) -> int:
    return int(await pool.fetchval(sql, *args))


async def publish_refunds(publisher: Bus, authorize: Any, tenant: str, n: int) -> list[str]:
    events = [authorize(tenant, "issue_refund", {"payee_id": "cus_1008", "amount_usd": 1.0, "order_id": "O-5008"}) for _ in range(n)]
    await asyncio.gather(*(publisher.publish("actions.authorized", e) for e in events))
    return [e.data.action_id for e in events]


async def test_sigkill_in_the_middle_of_500_refunds_then_restart_gives_exactly_500_refunds(
    spawn_executor: Any, publisher: Bus, listener: Any, authorize: Any, pool: asyncpg.Pool, tenant: str, wait_for: Any
) -> None:
    action_ids = await publish_refunds(publisher, authorize, tenant, BATCH)
    refunds_sql = "SELECT count(*) FROM payments.refunds WHERE tenant_id = $1"

    first = await spawn_executor()
    started = time.monotonic()
    await wait_for(lambda: _at_least(pool, refunds_sql, tenant, 100), timeout=60, what="100 refunds")
    first.kill()
    done_before = await count(pool, refunds_sql, tenant)
    first_rate = done_before / (time.monotonic() - started)
    assert done_before < BATCH, "the executor finished before it could be killed; the test proves nothing"

    await spawn_executor()
    restarted = time.monotonic()
    await wait_for(lambda: _at_least(pool, refunds_sql, tenant, BATCH), timeout=90, what="all 500 refunds")
    finished = set()

    def all_answered() -> bool:
        finished.update(r.data.action_id for r in listener.results if r.data.status == "succeeded")
        return finished >= set(action_ids)

    await wait_for(all_answered, timeout=60, what="a success result for every action")
    second_rate = (BATCH - done_before) / (time.monotonic() - restarted)
    print(f"\nrefunds/s before SIGKILL: {first_rate:.0f}; after restart: {second_rate:.0f} ({done_before} done when killed)")

    rows = await pool.fetch("SELECT idempotency_key, count(*) AS n FROM payments.refunds WHERE tenant_id = $1 GROUP BY 1", tenant)
    assert len(rows) == BATCH
    assert {r["idempotency_key"] for r in rows} == set(action_ids)
    assert all(r["n"] == 1 for r in rows)
    statuses = await pool.fetch("SELECT status, count(*) AS n FROM executor.actions WHERE tenant_id = $1 GROUP BY 1", tenant)
    assert {r["status"]: r["n"] for r in statuses} == {"succeeded": BATCH}
    assert await count(pool, "SELECT coalesce(sum(amount_usd), 0)::int FROM payments.refunds WHERE tenant_id = $1", tenant) == BATCH


async def _at_least(pool: asyncpg.Pool, sql: str, tenant: str, n: int) -> bool:
    return await count(pool, sql, tenant) >= n
