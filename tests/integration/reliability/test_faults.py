"""Bounds and faults against the real bus and database: oversized and NaN values, connections killed under load."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import asyncpg
from bus_helpers import Collector, Producer
from reliability_helpers import KILL_ROLE_CONNECTIONS, BatchProducer, good_event, watch_dead_letters, wire

import schemas as s
from servicekit import KitSettings
from servicekit.dbroles import service_role
from services.policy.app import build as build_policy


def proposal_bytes(task: str, **args: Any) -> tuple[str, bytes]:
    event = good_event("actions.proposed", task)
    doc = event.model_dump(mode="json", exclude_none=True)
    doc["data"]["args"] |= args
    return event.data.action_id, json.dumps(doc).encode()  # json.dumps writes NaN as the bare literal, as a careless client would


async def test_an_oversized_value_and_a_nan_proposal_are_dead_lettered_with_their_codes_and_their_neighbours_decided(
    kit: KitSettings, batch_producer: BatchProducer, wait_for: Any
) -> None:
    kit = kit.model_copy(update={"max_value_bytes": 64 * 1024})
    service = build_policy(kit=kit)
    rejected: list[s.EventRejected] = []
    watcher = await watch_dead_letters(kit, rejected)
    decided = Collector(kit, ["actions.decided"])
    await decided.start()
    await service.start()
    try:
        task = f"t-{uuid.uuid4().hex[:8]}"
        first, second = good_event("actions.proposed", task), good_event("actions.proposed", task)
        _, huge = proposal_bytes(task, note="x" * 100_000)
        _, nan = proposal_bytes(task, amount_usd=float("nan"))
        assert b"NaN" in nan
        partition, base = await batch_producer.send_batch(
            "actions.proposed", task.encode(), [wire(first, kit), huge, nan, wire(second, kit)]
        )
        ids = {first.data.action_id, second.data.action_id}
        await wait_for(lambda: ids <= {e.data.action_id for e in decided.events["actions.decided"]}, timeout=30, what="neighbours decided")
        codes = await wait_for(
            lambda: {r.data.offset: r.data.code for r in rejected if r.data.partition == partition} if len(rejected) >= 2 else None,
            timeout=30,
            what="two dead letters",
        )
        assert codes == {base + 1: "too_large", base + 2: "not_finite"}
    finally:
        await service.stop()
        await decided.stop()
        await watcher.stop()


async def test_connections_killed_under_load_skip_nothing(kit: KitSettings, infra: Any, wait_for: Any) -> None:
    """pg_terminate_backend on the service's connections (what a fast shutdown does to a pool), again and again under load."""
    service = build_policy(kit=kit)
    rejected: list[s.EventRejected] = []
    watcher = await watch_dead_letters(kit, rejected)
    decided = Collector(kit, ["actions.decided"])
    producer = Producer(kit)
    await decided.start()
    await producer.start()
    await service.start()
    admin = await asyncpg.connect(infra.admin_database_url)
    killed = 0
    try:
        ids = set()
        for i in range(300):
            event = good_event("actions.proposed", f"t-{uuid.uuid4().hex[:8]}")
            ids.add(event.data.action_id)
            await producer.send("actions.proposed", event)
            if i % 10 == 5:
                killed += await admin.fetchval(KILL_ROLE_CONNECTIONS, service_role("policy", infra.role_prefix))
                await asyncio.sleep(0)  # let the service run into its dead connections while more arrive
        assert killed > 0
        await wait_for(
            lambda: ids <= {e.data.action_id for e in decided.events["actions.decided"]}, timeout=90, what="every proposal decided"
        )
        assert [r for r in rejected if r.data.service == "policy"] == []
    finally:
        await admin.close()
        await service.stop()
        await producer.stop()
        await decided.stop()
        await watcher.stop()
