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
