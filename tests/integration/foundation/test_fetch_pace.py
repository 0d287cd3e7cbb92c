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
from signers import AdminBus
from test_commits import task

import schemas as s
from servicekit import KitSettings
from servicekit.polling import FetchPace

IDLE_MS, BUSY_MS = 3_000, 100


async def test_a_long_batch_makes_the_fetches_sent_during_and_after_it_wait_briefly_and_an_idle_spell_restores_the_long_wait(
    kit: KitSettings, wait_for: Any
) -> None:
    """What the broker is asked while a long batch is in hand, with a record arriving meanwhile (the partition-holding fetch)."""
    bus = AdminBus(kit, "pace", fetch_max_wait_ms=IDLE_MS, busy_fetch_max_wait_ms=BUSY_MS)
    handled: list[str] = []
    phase = ["before"]  # "before" the first batch, "during" it, "after" it
    run = f"t-{uuid.uuid4().hex[:8]}"
    first, second = f"{run}-1", f"{run}-2"

    async def on_task(event: s.TaskSubmitted) -> None:
        if not handled:  # the first batch is a long one, and a record arrives while it is in hand
            phase[0] = "during"
            await asyncio.sleep(FetchPace.BUSY_BATCH_S)
            await bus.publish("tasks", task(2, run))
            await asyncio.sleep(FetchPace.BUSY_BATCH_S * 6)  # long enough for aiokafka to fetch the others without it
            phase[0] = "after"
        handled.append(event.data.task_id)

    bus.consume("tasks", on_task, group_id=f"{kit.topic_prefix}pace-{uuid.uuid4().hex[:6]}")
    await bus.start()
    try:
        [poller] = bus.pollers
        consumer = poller.consumer
        pace = poller.pace
        assert consumer is not None
        assert pace is not None
        waits: list[tuple[str, int]] = []  # (the phase the request was sent in, its max wait)
        send = consumer._client.send

        async def recording(node_id: int, request: Any, **kw: Any) -> Any:
            if isinstance(request, FetchRequest):
                waits.append((phase[0], request._max_wait_ms))
            return await send(node_id, request, **kw)

        consumer._client.send = recording
        await bus.publish("tasks", task(1, run))
        await wait_for(lambda: handled == [first, second], what="both records handled")
        assert {w for p, w in waits if p == "before"} <= {IDLE_MS}  # idle: the long wait
        # The fetch aiokafka sends while the second record waits in the client (without its partition) is held
        # briefly: the partition's next fetch does not wait behind it for the idle wait.
        assert BUSY_MS in {w for p, w in waits if p == "during"}
        assert {w for p, w in waits if p == "after"} <= {BUSY_MS}

        sent = len(waits)
        await wait_for(lambda: pace.current_ms == IDLE_MS, timeout=FetchPace.BUSY_FOR_S + 5, what="idle again")
        await wait_for(lambda: len(waits) > sent and waits[-1][1] == IDLE_MS, timeout=IDLE_MS / 1000 + 5, what="a fetch with the long wait")
    finally:
        await bus.stop()
