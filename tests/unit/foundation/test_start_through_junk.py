"""A start that reads a `control` long with junk is slow, never cut off while it reads (reviewer F6, bounds F1).

Whoever holds only `ops.properties` appended 100,000 unsigned records to `control` in 3 s; `control` is kept forever and
every service reads it from the start before serving. Each start waited a fixed 30 s for it, dead-lettered ~30,000
records, gave up, and its supervisor's next try read them all again: no service could ever start. A start now gives up
only after 30 s in which it handled nothing of the topic; a wait before each call (the executor's) keeps its fixed bound.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import TopicPartition

from servicekit import Bus
from tests.fake_producer import FakeRecord, KeepingProducer
from tests.unit.foundation.test_bus import make_bus

END = 1000  # the junk's end offset


class Ends:
    """The end-offsets reader: `control` ends at END."""

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(tps, END)


def reading_slowly(bus: Bus, per_step: int, step_s: float) -> asyncio.Task[None]:
    """The bus handling `per_step` junk records every `step_s`, until the end (what dead-lettering them at start does)."""
    full = bus.topic("control")
    bus._end_partitions[full] = [TopicPartition(full, 0)]

    async def ends_reader() -> Any:
        return Ends()

    bus._ends_reader = ends_reader  # type: ignore[method-assign]

    async def handle() -> None:
        while bus.positions.get((full, 0), 0) < END:
            await asyncio.sleep(step_s)
            bus.positions[(full, 0)] = min(END, bus.positions.get((full, 0), 0) + per_step)

    return asyncio.create_task(handle())


async def test_a_start_reading_junk_longer_than_the_deadline_still_starts() -> None:
    bus, _ = make_bus()
    reading = reading_slowly(bus, per_step=50, step_s=0.05)  # ~1 s of reading, the deadline 0.3 s
    await bus.wait_caught_up("control", timeout_s=0.3, while_progressing=True)
    assert bus.positions[(bus.topic("control"), 0)] == END
    await reading


async def test_a_start_that_handles_nothing_still_gives_up() -> None:
    bus, _ = make_bus()
    reading = reading_slowly(bus, per_step=0, step_s=0.05)  # stuck
    with pytest.raises(TimeoutError, match=r"nothing of it handled for 0\.3s"):
        await bus.wait_caught_up("control", timeout_s=0.3, while_progressing=True)
    reading.cancel()


async def test_a_wait_before_a_call_keeps_its_fixed_bound() -> None:
    bus, _ = make_bus()
    reading = reading_slowly(bus, per_step=50, step_s=0.05)
    with pytest.raises(TimeoutError, match=r"not caught up after 0\.3s"):
        await bus.wait_caught_up("control", timeout_s=0.3)
    reading.cancel()


class SlowAcks(KeepingProducer):
    """A broker that acknowledges each record `ack_s` after it is sent (a loaded machine: ~1.8 s each was seen)."""

    def __init__(self, ack_s: float) -> None:
        super().__init__()
        self.ack_s = ack_s

    async def send(self, topic: str, value: bytes, *, key: bytes | None, headers: list[tuple[str, bytes]]) -> None:
        await asyncio.sleep(self.ack_s)
        await super().send(topic, value, key=key, headers=headers)


async def test_a_start_whose_one_polled_batch_of_junk_outlasts_the_deadline_still_starts() -> None:
    """flakehunt F2: positions move only once a polled batch is handled and its dead letters acknowledged.

    One batch of junk whose dead letters each wait for the broker's ack took longer than the deadline under load; the
    start saw no progress, was cut off ("nothing of it handled for 30.0s") and its next try read it all again. Each
    record read counts now.
    """
    broker = SlowAcks(ack_s=0.03)
    bus = Bus(broker, "policy", "unused:1", "p.")
    full = bus.topic("control")
    bus._end_partitions[full] = [TopicPartition(full, 0)]

    class Twenty:
        async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
            return dict.fromkeys(tps, 20)

    async def ends_reader() -> Any:
        return Twenty()

    bus._ends_reader = ends_reader  # type: ignore[method-assign]
    batch = [FakeRecord(full, b"junk %d" % i, offset=i) for i in range(20)]  # ~0.6 s of dead letters, the deadline 0.3 s

    async def handler(event: Any) -> None:
        raise AssertionError("junk reached a handler")

    async def one_polled_batch() -> None:  # as the kit's consumer handles a batch (`Bus._subscribe`)
        await asyncio.sleep(0.05)
        async with bus.acknowledged_at_end():
            for record in batch:
                await bus.handle_record("control", record, handler)
        for record in batch:
            bus.mark_handled(record)

    reading = asyncio.create_task(one_polled_batch())
    await bus.wait_caught_up("control", timeout_s=0.3, while_progressing=True)
    await reading
    assert bus.positions[(full, 0)] == 20
    assert len([t for t, _ in broker.published if t == "p.deadletter"]) == 20
