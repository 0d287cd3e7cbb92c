"""An idle consumer's client wakes when something happens, not on a timer: about once per fetch the broker answers.

aiokafka's background fetch routine slept at most 200 ms (`consumer_timeout_ms`), so every idle consumer of every
service woke five times a second to find its fetch still held by the broker, walking every partition it holds each
time. The kit sets that sleep to `FETCHER_WAKE_MS`; what the routine acts on wakes it itself. This test counts its
turns against the fetches the real broker answered, then holds a record that arrives to being handled at once.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from aiokafka.protocol.fetch import FetchRequest
from signers import AdminBus
from test_commits import task

import schemas as s
from servicekit import KitSettings

IDLE_MS = 1_000  # the broker holds an idle fetch this long: about one answer a second
WATCHED_S = 5.0


async def test_an_idle_consumer_wakes_about_once_per_fetch_and_a_record_that_arrives_is_handled_at_once(
    kit: KitSettings, wait_for: Any
) -> None:
    bus = AdminBus(kit, "wake", fetch_max_wait_ms=IDLE_MS, busy_fetch_max_wait_ms=100)
    handled: dict[str, float] = {}
    run = f"w-{uuid.uuid4().hex[:8]}"

    async def on_task(event: s.TaskSubmitted) -> None:
        handled[event.data.task_id] = time.monotonic()

    bus.consume("tasks", on_task, group_id=f"{kit.topic_prefix}wake-{uuid.uuid4().hex[:6]}")
    await bus.start()
    try:
        [poller] = bus.pollers
        consumer = poller.consumer
        assert consumer is not None
        await bus.publish("tasks", task(0, run))  # joined, assigned and read up to the end before the idle spell is watched
        await wait_for(lambda: f"{run}-0" in handled, what="the first record")
        pace = poller.pace
        assert pace is not None
        await wait_for(lambda: pace.current_ms == IDLE_MS, timeout=10, what="the consumer idle again (its long fetch wait)")
        await asyncio.sleep(IDLE_MS / 1000)  # the last short-held fetch answered

        fetcher, client = consumer._fetcher, consumer._client
        turns, fetches = [0], [0]
        plan, send = fetcher._get_actions_per_node, client.send

        def counting_plan(assignment: Any) -> Any:  # one turn of the fetch routine: what to fetch from which node
            turns[0] += 1
            return plan(assignment)

        async def counting_send(node_id: int, request: Any, **kw: Any) -> Any:
            answer = await send(node_id, request, **kw)
            if isinstance(request, FetchRequest):
                fetches[0] += 1
            return answer

        fetcher._get_actions_per_node = counting_plan
        client.send = counting_send
        await asyncio.sleep(WATCHED_S)
        # A turn for each answered fetch (it sends the next one), and a few for the commit and the liveness checks; at
        # 200 ms the routine turned ~25 times in these 5 s for ~5 fetches.
        assert fetches[0] >= 2, fetches
        assert turns[0] <= 2 * fetches[0] + 3, (turns[0], fetches[0])

        published = time.monotonic()
        await bus.publish("tasks", task(1, run))
        await wait_for(lambda: f"{run}-1" in handled, what="the record published to the idle consumer")
        # The held fetch is answered by the record's arrival, not at the end of its wait, nor at the routine's next turn.
        assert handled[f"{run}-1"] - published < IDLE_MS / 1000 * 0.9
    finally:
        await bus.stop()
