"""Real executor processes: SIGKILL in the middle of a batch, two copies in one group, a crash mid-call."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import asyncpg

from servicekit import Bus
from tests.integration.executor.conftest import ledger_entry_tool

BATCH = 500


async def count(pool: asyncpg.Pool, sql: str, *args: Any) -> int:
    return int(await pool.fetchval(sql, *args))


async def publish_refunds(publisher: Bus, authorize: Any, pool: asyncpg.Pool, tenant: str, n: int) -> list[str]:
    """Authorize `n` refunds of 1 USD, each for an order of its own (as a day of support tickets would)."""
    orders = [f"O-7{i:05d}" for i in range(n)]
    await pool.executemany(
        "INSERT INTO payments.orders (tenant_id, order_id, customer_id, payee_id, amount_usd) VALUES ($1, $2, 'cus_1008', 'cus_1008', 25)",
        [(tenant, order) for order in orders],
    )
    events = [authorize(tenant, "issue_refund", {"payee_id": "cus_1008", "amount_usd": 1.0, "order_id": order}) for order in orders]
    await asyncio.gather(*(publisher.publish("actions.authorized", e) for e in events))
    return [e.data.action_id for e in events]


async def test_sigkill_in_the_middle_of_500_refunds_then_restart_gives_exactly_500_refunds(
    spawn_executor: Any, publisher: Bus, listener: Any, authorize: Any, pool: asyncpg.Pool, tenant: str, wait_for: Any
) -> None:
    action_ids = await publish_refunds(publisher, authorize, pool, tenant, BATCH)
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


async def test_two_executors_in_one_group_share_a_batch_and_never_run_an_action_twice(
    spawn_executor: Any, publisher: Bus, listener: Any, authorize: Any, pool: asyncpg.Pool, tenant: str, wait_for: Any
) -> None:
    await spawn_executor()
    await spawn_executor()
    n = 300
    action_ids = await publish_refunds(publisher, authorize, pool, tenant, n)
    await wait_for(
        lambda: _at_least(pool, "SELECT count(*) FROM executor.actions WHERE tenant_id = $1 AND status = 'succeeded'", tenant, n),
        timeout=90,
        what="every action succeeded",
    )
    rows = await pool.fetch("SELECT idempotency_key, count(*) AS n FROM payments.refunds WHERE tenant_id = $1 GROUP BY 1", tenant)
    assert {r["idempotency_key"] for r in rows} == set(action_ids)
    assert all(r["n"] == 1 for r in rows)
    # Each action's tool was called exactly once, and both processes did part of the work.
    assert await count(pool, "SELECT count(*) FROM executor.actions WHERE tenant_id = $1 AND attempts <> 1", tenant) == 0
    owners = await pool.fetch("SELECT owner, count(*) AS n FROM executor.actions WHERE tenant_id = $1 GROUP BY 1", tenant)
    assert len(owners) == 2, owners
    print(f"\nshare of {n} actions per executor process: {sorted(r['n'] for r in owners)}")


async def test_a_crash_in_the_middle_of_a_non_idempotent_call_ends_unknown_and_is_never_repeated(
    spawn_executor: Any, http_stub: Any, make_tools_dir: Any, publisher: Bus, listener: Any, authorize: Any, tenant: str, wait_for: Any
) -> None:
    arrived = asyncio.Event()

    async def hang(request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        arrived.set()
        await asyncio.sleep(3600)  # the ledger takes the money and never answers
        return 200, {}

    ledger = await http_stub(hang)
    tools = make_tools_dir(ledger_entry_tool(ledger.url, timeout_s=60))
    first = await spawn_executor(tools)
    event = authorize(tenant, "post_ledger_entry", {"amount_usd": 250.0})
    await publisher.publish("actions.authorized", event)
    await asyncio.wait_for(arrived.wait(), timeout=30)
    first.kill()

    await spawn_executor(tools)
    results = await wait_for(lambda: listener.for_action(event.data.action_id), timeout=60, what="the unknown outcome")
    assert {r.type for r in results} == {"tidegate.action.unknown"}
    assert results[0].data.error.type == "interrupted"
    assert results[0].data.attempts == 1
    # The redelivered authorization is answered from the record: the ledger was called once, never again.
    await wait_for(lambda: len(listener.for_action(event.data.action_id)) >= 2, timeout=30, what="the redelivery's answer")
    assert len(ledger.requests) == 1
    assert ledger.requests[0]["headers"]["idempotency-key"] == event.data.action_id


async def test_a_keyed_call_killed_mid_way_and_expired_before_the_restart_ends_unknown_and_is_not_dead_lettered(
    spawn_executor: Any, http_stub: Any, make_tools_dir: Any, publisher: Bus, listener: Any, authorize: Any, tenant: str, wait_for: Any
) -> None:
    """Safe to call again, but the authorization expired while the executor was down: the interrupted call ends as such.

    Its authorization was used by the first attempt: the audit gets no `authorization_expired` refusal for it.
    """
    arrived = asyncio.Event()

    async def hang(request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        arrived.set()
        await asyncio.sleep(3600)
        return 200, {}

    payments = await http_stub(hang)
    tools = make_tools_dir(
        {
            "name": "post_keyed_payment",
            "description": "Post a payment (takes an idempotency key: safe to call again).",
            "risk": "financial",
            "kind": "http",
            "url": f"{payments.url}/payments",
            "timeout_s": 60,
            "accepts_idempotency_key": True,
            "args_schema": {"type": "object", "properties": {"amount_usd": {"type": "number"}}},
        }
    )
    first = await spawn_executor(tools)
    event = authorize(tenant, "post_keyed_payment", {"amount_usd": 250.0}, ttl_s=10)
    await publisher.publish("actions.authorized", event)
    await asyncio.wait_for(arrived.wait(), timeout=10)
    first.kill()
    await asyncio.sleep(max(0.0, (event.data.authorization.expires_at - datetime.now(UTC)).total_seconds()))  # until the expiry

    await spawn_executor(tools)
    [result] = await wait_for(lambda: listener.for_action(event.data.action_id), timeout=60, what="the interrupted outcome")
    assert (result.type, result.data.error.type, result.data.attempts) == ("tidegate.action.unknown", "interrupted", 1)
    assert "since then: authorization expired at" in result.data.error.message
    assert len(payments.requests) == 1  # never called again
    # A dead letter of this one would have gone out before the executor handles a later one: wait for that one's, then look.
    later = authorize(tenant, "post_keyed_payment", {"amount_usd": 1.0}, ttl_s=-1)
    await publisher.publish("actions.authorized", later)
    await wait_for(lambda: listener.dead_codes(later.data.action_id), timeout=60, what="the later authorization's dead letter")
    assert listener.dead_codes(event.data.action_id) == []
