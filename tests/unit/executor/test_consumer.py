"""Concurrent consumption: a task's authorizations run in order, different tasks overlap, positions advance."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from services.executor.consumer import handle_by_key


@dataclass(frozen=True)
class Record:
    key: bytes | None
    offset: int
    topic: str = "p.actions.authorized"
    partition: int = 0


@dataclass
class FakeBus:
    """Stands in for `Bus.handle_record`: records when each record starts and ends."""

    log: list[tuple[str, int]] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0
    positions: dict[tuple[str, int], int] = field(default_factory=dict)

    async def handle_record(self, topic: str, record: Record, handler: Any) -> None:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        self.log.append(("start", record.offset))
        await asyncio.sleep(0.01)
        self.log.append(("end", record.offset))
        self.in_flight -= 1


async def test_one_key_runs_in_order_and_keys_overlap_up_to_the_limit() -> None:
    bus = FakeBus()
    records = [Record(b"t-1", 0), Record(b"t-2", 1), Record(b"t-1", 2), Record(b"t-3", 3), Record(b"t-4", 4), Record(None, 5)]
    await handle_by_key(bus, "actions.authorized", None, records, asyncio.Semaphore(3))  # type: ignore[arg-type]
    order = [offset for what, offset in bus.log]
    assert order.index(2) > len(order) - 1 - order[::-1].index(0)  # t-1's second record started after its first ended
    assert bus.most_in_flight == 3
    assert bus.positions == {("p.actions.authorized", 0): 6}


async def test_a_limit_of_one_is_sequential() -> None:
    bus = FakeBus()
    await handle_by_key(bus, "actions.authorized", None, [Record(b"a", 0), Record(b"b", 1)], asyncio.Semaphore(1))  # type: ignore[arg-type]
    assert bus.log == [("start", 0), ("end", 0), ("start", 1), ("end", 1)]
