"""A database restored from a backup (platform5 finding 1): the executor refuses to start until `tidegate db catch-up`.

The restore is simulated as a backup taken before the call would be: the action's claim and the refund it paid are
deleted by the database's owner. The bus still holds the executor's signed result.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from restore_process import refused_start

from schemas import encode
from servicekit import ADMIN, Bus, KitSettings, kafka_options
from servicekit.bus_history import BehindTheBus
from services.executor.app import build
from tidegate.ops.catch_up import catch_up

REFUND = {"payee_id": "cus_1002", "amount_usd": 899.0, "order_id": "O-5002"}


async def _refunds(pool: asyncpg.Pool, tenant: str) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM payments.refunds WHERE tenant_id = $1", tenant))


async def _restored_before(pool: asyncpg.Pool, tenant: str, action_id: str) -> None:
    """What restoring a backup taken before the call does to the executor's claim and to the system of record."""
    await pool.execute("DELETE FROM executor.actions WHERE action_id = $1", action_id)
    await pool.execute("DELETE FROM payments.refunds WHERE tenant_id = $1", tenant)


async def _paid_once(
    kit: KitSettings, publisher: Bus, authorize: Any, listener: Any, pool: asyncpg.Pool, tenant: str, wait_for: Any
) -> Any:
    """An executor pays one refund; the executor is stopped after it. Returns the authorization."""
    svc = build(kit=kit)
    await svc.start()
    try:
        event = authorize(tenant, "issue_refund", REFUND, action_id=f"a-{uuid.uuid4().hex[:12]}")
        await publisher.publish("actions.authorized", event)
        await wait_for(lambda: listener.for_action(event.data.action_id), what="the refund's result", timeout=60)
    finally:
        await svc.stop()
    assert [r.type for r in listener.for_action(event.data.action_id)] == ["tidegate.action.succeeded"]
    assert await _refunds(pool, tenant) == 1
    return event


async def test_after_a_restore_the_executor_refuses_to_start_then_catch_up_answers_from_the_claim(
    kit: KitSettings, publisher: Bus, authorize: Any, listener: Any, pool: asyncpg.Pool, tenant: str, wait_for: Any
) -> None:
    first = await _paid_once(kit, publisher, authorize, listener, pool, tenant, wait_for)
    await _restored_before(pool, tenant, first.data.action_id)

    refused = build(kit=kit)
    with pytest.raises(BehindTheBus, match="behind the bus") as behind:
        await refused.start()
    await refused.stop()
    assert first.data.action_id in str(behind.value)
    assert "tidegate db catch-up" in str(behind.value)

    said: list[str] = []
    done = await catch_up(kit, say=said.append)
    assert done.counts["executor claims recorded"] == 1
    again = await catch_up(kit, say=said.append)  # idempotent
    assert again.counts["executor claims recorded"] == 0
    assert again.counts["executor claims already"] == 0

    svc = build(kit=kit)
    await svc.start()
    try:
        # The approval granted again after the restore: the policy authorizes the very call again, as a new event.
        reauthorized = authorize(tenant, "issue_refund", REFUND, action_id=first.data.action_id, task_id=first.data.task_id)
        await publisher.publish("actions.authorized", reauthorized)
        results = await wait_for(lambda: [r for r in listener.for_action(first.data.action_id)][1:], what="the answer", timeout=60)
    finally:
        await svc.stop()
    assert svc.executor.calls == 0  # answered from the claim: the tool was not called
    assert results[0].id == listener.for_action(first.data.action_id)[0].id  # the very result event, published again
    assert await _refunds(pool, tenant) == 0  # nothing paid again (the restored system of record has none)


async def test_an_executor_process_behind_the_bus_exits_ex_config_with_a_not_started_line(
    kit: KitSettings,
    publisher: Bus,
    authorize: Any,
    listener: Any,
    pool: asyncpg.Pool,
    tenant: str,
    wait_for: Any,
    tmp_path: Path,
) -> None:
    first = await _paid_once(kit, publisher, authorize, listener, pool, tenant, wait_for)
    await _restored_before(pool, tenant, first.data.action_id)
    last = await refused_start(kit, "executor", tmp_path)
    assert last.startswith("executor: not started: the database is behind the bus")
    assert "tidegate db catch-up" in last


async def _old_then_new(
    kit: KitSettings, publisher: Bus, authorize: Any, listener: Any, tenant: str, wait_for: Any, *, asked_again: bool
) -> tuple[Any, Any]:
    """An old call executed before the backup, then a refund of the same task after it (its claim is what the restore
    loses), and, `asked_again`, the old call authorized again, so that its kept result is published again last."""
    task = f"t-{uuid.uuid4().hex[:8]}"  # one task: one key, one partition for every result
    old = authorize(tenant, "lookup_order", {"order_id": "O-5002"}, action_id=f"old-{uuid.uuid4().hex[:8]}", task_id=task)
    new = authorize(tenant, "issue_refund", REFUND, action_id=f"new-{uuid.uuid4().hex[:8]}", task_id=task)
    svc = build(kit=kit)
    await svc.start()
    try:
        await publisher.publish("actions.authorized", old)
        await wait_for(lambda: listener.for_action(old.data.action_id), what="the old call's result", timeout=60)
        await publisher.publish("actions.authorized", new)
        await wait_for(lambda: listener.for_action(new.data.action_id), what="the refund's result", timeout=60)
        if asked_again:
            again = authorize(tenant, "lookup_order", {"order_id": "O-5002"}, action_id=old.data.action_id, task_id=task)
            await publisher.publish("actions.authorized", again)  # the agent re-proposes the old call
            await wait_for(lambda: listener.for_action(old.data.action_id)[1:], what="the old result published again", timeout=60)
    finally:
        await svc.stop()
    return old, new


async def test_an_old_result_published_again_last_does_not_hide_a_restore(
    kit: KitSettings, publisher: Bus, authorize: Any, listener: Any, pool: asyncpg.Pool, tenant: str, wait_for: Any
) -> None:
    """security6 F1, acting as the agent: after the backup, re-propose an old finished call of the same task, so that the
    executor publishes its kept result again, last on the partition; the claim of the newer refund is what the restore lost."""
    _, new = await _old_then_new(kit, publisher, authorize, listener, tenant, wait_for, asked_again=True)
    await _restored_before(pool, tenant, new.data.action_id)

    refused = build(kit=kit)
    with pytest.raises(BehindTheBus, match="behind the bus") as behind:
        await refused.start()
    await refused.stop()
    assert new.data.action_id in str(behind.value)  # found behind the old result published last


async def test_a_flood_of_old_results_published_again_does_not_hide_a_restore(
    kit: KitSettings, publisher: Bus, authorize: Any, listener: Any, pool: asyncpg.Pool, tenant: str, wait_for: Any
) -> None:
    """restore7 F2, acting as the agent: re-proposing old calls of other requesters, thousands a minute before the restore,
    makes the executor publish their kept results again until the tail a check read (1,000 records a partition) held
    nothing else; the executor then started on the restored database and paid a refund twice. The check now reads every
    result published since the newest claim its database holds, however many old ones were published again."""
    old, new = await _old_then_new(kit, publisher, authorize, listener, tenant, wait_for, asked_again=False)
    # The old result as the executor publishes it again for each re-authorization (the same signed event), 1,200 times.
    (kept,) = listener.for_action(old.data.action_id)
    producer = AIOKafkaProducer(bootstrap_servers=kit.kafka_bootstrap, acks="all", linger_ms=5, **kafka_options(kit, ADMIN))
    await producer.start()
    try:
        sent = [await producer.send(kit.topic_prefix + "actions.results", encode(kept), key=kept.key) for _ in range(1200)]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()
    await _restored_before(pool, tenant, new.data.action_id)

    refused = build(kit=kit)
    with pytest.raises(BehindTheBus, match="behind the bus") as behind:
        await refused.start()
    await refused.stop()
    assert new.data.action_id in str(behind.value)  # found behind twelve hundred old results published after it

    done = await catch_up(kit, say=lambda _: None)
    assert done.counts["executor claims recorded"] == 1
    healthy = build(kit=kit)
    await healthy.start()  # caught up: the same window, flood and all, holds nothing the database lacks
    await healthy.stop()
