"""A busy consumer's fetches are held for the short wait, an idle one's for the long one, as the broker receives them.

`servicekit.polling.FetchPace` sets aiokafka's fetcher's own wait (a private attribute, read as each
fetch request is built). This test reads the wait off the fetch requests the consumer sends to the
real broker, so an aiokafka that moves or stops reading that attribute fails here, not in silence.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from aiokafka.protocol.fetch import FetchRequest
from test_commits import task

import schemas as s
from servicekit import ADMIN, Bus, KitSettings, Producer, kafka_options
from servicekit.polling import FetchPace

IDLE_MS, BUSY_MS = 3_000, 100


async def test_a_long_batch_makes_the_next_fetches_wait_briefly_and_an_idle_spell_restores_the_long_wait(
    kit: KitSettings, wait_for: Any
) -> None:
    bus = Bus(
        Producer(kit.kafka_bootstrap, "pace", **kafka_options(kit, ADMIN)),
        "pace",
        kit.kafka_bootstrap,
        kit.topic_prefix,
        fetch_max_wait_ms=IDLE_MS,
        busy_fetch_max_wait_ms=BUSY_MS,
    )
    handled: list[str] = []

    async def on_task(event: s.TaskSubmitted) -> None:
        if not handled:
            await asyncio.sleep(FetchPace.BUSY_BATCH_S * 3)  # the first batch is a long one
        handled.append(event.data.task_id)

    bus.consume("tasks", on_task, group_id=f"{kit.topic_prefix}pace-{uuid.uuid4().hex[:6]}")
    await bus.start()
    try:
        [poller] = bus.pollers
        consumer = poller.consumer
        pace = poller.pace
        assert consumer is not None
        assert pace is not None
        waits: list[tuple[int, int]] = []  # (records handled when the request was sent, its max wait)
        send = consumer._client.send

        async def recording(node_id: int, request: Any, **kw: Any) -> Any:
            if isinstance(request, FetchRequest):
                waits.append((len(handled), request._max_wait_ms))
            return await send(node_id, request, **kw)

        consumer._client.send = recording
        run = f"t-{uuid.uuid4().hex[:8]}"
        first, second = f"{run}-1", f"{run}-2"
        await bus.publish("tasks", task(1, run))
        await wait_for(lambda: handled == [first], what="the long batch handled")
        await bus.publish("tasks", task(2, run))
        await wait_for(lambda: handled == [first, second], what="the next record handled")
        assert {w for n, w in waits if n == 0} <= {IDLE_MS}  # before any long batch: the idle wait
        assert BUSY_MS in {w for n, w in waits if n >= 1}  # after it: the broker was asked to hold fetches briefly

        sent = len(waits)
        await wait_for(lambda: pace.current_ms == IDLE_MS, timeout=FetchPace.BUSY_FOR_S + 5, what="idle again")
        await wait_for(lambda: len(waits) > sent and waits[-1][1] == IDLE_MS, timeout=IDLE_MS / 1000 + 5, what="a fetch with the long wait")
    finally:
        await bus.stop()
