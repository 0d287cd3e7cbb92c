"""Records handled in lanes per key while the consumer goes on polling (`servicekit._bus_lanes`), and the handled prefix it commits.

In memory: records are handed over as a poller would (`Lanes.take`); handlers wait on events the test sets, never on time.
What the real broker does with the same (polls after a blocked record, committed offsets, a crash): the integration test
tests/integration/foundation/test_lanes_in_flight.py.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from aiokafka import TopicPartition
from fake_producer import KeepingProducer

from servicekit import Bus
from servicekit._bus_lanes import Lanes
from servicekit.commits import Commits, Unfinished
from servicekit.parking import park

TOPIC = "p.actions.authorized"
ROUTES: dict[str, Any] = {TOPIC: ("actions.authorized", None)}


@dataclass(eq=False)
class FakeRecord:
    key: bytes | None
    offset: int
    partition: int = 0
    topic: str = TOPIC
    value: bytes = b""
    headers: tuple[tuple[str, bytes], ...] = ()


class GatedBus(Bus):
    """A bus whose `handle_record` notes when each record starts and ends; records whose key is in `gates` wait for their gate."""

    def __init__(self) -> None:
        super().__init__(KeepingProducer(), "executor", "unused:1", "p.")
        self.log: list[tuple[str, int]] = []
        self.gates: dict[bytes | None, asyncio.Event] = {}
        self.started: dict[int, asyncio.Event] = {}
        self.cancelled: list[int] = []
        self.in_flight = 0
        self.most_in_flight = 0

    def began(self, offset: int) -> asyncio.Event:
        return self.started.setdefault(offset, asyncio.Event())

    async def handle_record(self, topic: str, record: Any, handler: Any) -> None:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        self.log.append(("start", record.offset))
        self.began(record.offset).set()
        try:
            if record.key in self.gates:
                await self.gates[record.key].wait()
            elif record.key is not None and record.key.startswith(b"park"):
                await self.stopping.wait()  # as the executor waits between two attempts
                await park()
            await asyncio.sleep(0)
            self.log.append(("end", record.offset))
        except asyncio.CancelledError:
            self.cancelled.append(record.offset)
            raise
        finally:
            self.in_flight -= 1


def lanes_of(bus: Bus, *, concurrency: int, limit: int = 100) -> Lanes:
    return Lanes(bus, ROUTES, concurrency=concurrency, limit=limit, commits=Commits(0.0))


async def all_done(lanes: Lanes) -> None:
    while lanes.unfinished.count:
        await lanes._changed()


def ended(bus: GatedBus) -> list[int]:
    return [offset for what, offset in bus.log if what == "end"]


async def test_lanes_keep_one_keys_order_and_overlap_keys_up_to_the_limit() -> None:
    bus = GatedBus()
    lanes = lanes_of(bus, concurrency=3)
    gate = bus.gates[b"t-1"] = asyncio.Event()
    records = [FakeRecord(b"t-1", 0), FakeRecord(b"t-2", 1), FakeRecord(b"t-1", 2), FakeRecord(b"t-3", 3), FakeRecord(None, 4)]
    await lanes.take(None, records)
    await asyncio.wait_for(bus.began(0).wait(), 5)
    gate.set()
    await asyncio.wait_for(all_done(lanes), 5)
    order = [offset for _, offset in bus.log]
    assert order.index(2) > order.index(0)
    assert ("end", 0) in bus.log[: bus.log.index(("start", 2))]
    assert bus.most_in_flight == 3
    assert bus.positions == {(TOPIC, 0): 5}


async def test_lanes_with_a_limit_of_one_are_sequential() -> None:
    bus = GatedBus()
    lanes = lanes_of(bus, concurrency=1)
    await lanes.take(None, [FakeRecord(b"a", 0), FakeRecord(b"b", 1)])
    await asyncio.wait_for(all_done(lanes), 5)
    assert bus.log == [("start", 0), ("end", 0), ("start", 1), ("end", 1)]


async def test_records_taken_after_a_blocked_one_are_handled_and_its_partition_moves_only_up_to_it() -> None:
    """Before, the next batch was polled only once the whole batch was handled: one blocked record held every later one."""
    bus = GatedBus()
    lanes = lanes_of(bus, concurrency=4)
    gate = bus.gates[b"slow"] = asyncio.Event()
    await lanes.take(None, [FakeRecord(b"q-0", 0), FakeRecord(b"slow", 1), FakeRecord(b"q-1", 2)])
    await lanes.take(None, [FakeRecord(b"q-2", 3), FakeRecord(b"slow", 4), FakeRecord(b"q-3", 5)])  # a later poll
    while sorted(ended(bus)) != [0, 2, 3, 5]:
        await asyncio.wait_for(lanes._changed(), 5)
    assert bus.positions == {(TOPIC, 0): 1}  # not past the blocked record
    assert ("start", 4) not in bus.log  # its key's next record waits for it
    gate.set()
    await asyncio.wait_for(all_done(lanes), 5)
    assert ended(bus)[-2:] == [1, 4]
    assert bus.positions == {(TOPIC, 0): 6}


async def test_no_more_records_are_taken_while_the_window_is_full() -> None:
    bus = GatedBus()
    lanes = lanes_of(bus, concurrency=2, limit=3)
    gate = bus.gates[b"slow"] = asyncio.Event()
    await lanes.take(None, [FakeRecord(b"slow", 0), FakeRecord(b"slow", 1), FakeRecord(b"slow", 2)])
    room = asyncio.ensure_future(lanes.room())
    await asyncio.wait_for(bus.began(0).wait(), 5)
    assert not room.done()  # three records held unhandled: the poller polls no more
    gate.set()
    assert await asyncio.wait_for(room, 5) >= 1
    await asyncio.wait_for(all_done(lanes), 5)


async def test_a_stop_ends_once_only_parked_handlers_are_left_and_no_record_starts() -> None:
    """The stop does not wait its whole grace for handlers that will never finish (they park while the process stops);
    a handler still at work is not cut off, and no record starts once the process stops."""
    bus = GatedBus()
    lanes = lanes_of(bus, concurrency=3)
    work = bus.gates[b"work"] = asyncio.Event()
    records = [FakeRecord(b"work", 0), FakeRecord(b"park-1", 1), FakeRecord(b"park-2", 2), FakeRecord(b"more", 3)]
    await lanes.take(None, records)
    for offset in (0, 1, 2):
        await asyncio.wait_for(bus.began(offset).wait(), 5)
    bus.stopping.set()
    drained = asyncio.ensure_future(lanes.drain(60))
    await asyncio.sleep(0)
    assert not drained.done()  # `work` is at work: not cut off
    work.set()
    await asyncio.wait_for(drained, 5)  # then at once, not after the 60 s grace
    assert ended(bus) == [0]  # `more` never started
    assert sorted(bus.cancelled) == [1, 2]
    assert bus.positions == {(TOPIC, 0): 1}  # only what was handled counts: the next process reads the rest again


async def test_a_stop_whose_grace_runs_out_cancels_what_is_left_uncounted() -> None:
    bus = GatedBus()
    lanes = lanes_of(bus, concurrency=2)
    bus.gates[b"hung"] = asyncio.Event()
    await lanes.take(None, [FakeRecord(b"hung", 0), FakeRecord(b"quick", 1)])
    await asyncio.wait_for(bus.began(0).wait(), 5)
    while 1 not in ended(bus):
        await asyncio.wait_for(lanes._changed(), 5)
    bus.stopping.set()
    await asyncio.wait_for(lanes.drain(0.05), 5)
    assert bus.cancelled == [0]
    assert bus.positions == {}


async def test_a_rebalance_waits_for_what_runs_then_starts_nothing_it_held_and_moves_no_offset_after() -> None:
    bus = GatedBus()
    lanes = lanes_of(bus, concurrency=1)
    gate = bus.gates[b"a"] = asyncio.Event()
    await lanes.take(None, [FakeRecord(b"a", 0), FakeRecord(b"b", 1)])
    await asyncio.wait_for(bus.began(0).wait(), 5)
    revoking = asyncio.ensure_future(lanes.revoked())
    await asyncio.sleep(0)
    assert not revoking.done()
    gate.set()
    await asyncio.wait_for(revoking, 5)
    assert bus.positions == {(TOPIC, 0): 1}  # handled before the partitions moved: committed
    await asyncio.sleep(0)
    assert ("start", 1) not in bus.log
    assert lanes.unfinished.count == 0


def test_the_handled_prefix_moves_only_over_records_handled_and_ignores_records_of_a_forgotten_partition() -> None:
    unfinished = Unfinished()
    a = [FakeRecord(b"k", n) for n in range(4)]
    unfinished.polled(a[:3])
    assert unfinished.done(a[1]) is None  # 0 is not handled yet
    assert unfinished.done(a[0]) == (TopicPartition(TOPIC, 0), 2)
    unfinished.polled(a[3:])
    assert unfinished.done(a[3]) is None
    assert unfinished.done(a[2]) == (TopicPartition(TOPIC, 0), 4)
    old, again = FakeRecord(b"k", 4), FakeRecord(b"k", 4)
    unfinished.polled([old])
    unfinished.forget()
    unfinished.polled([again])  # read again after the rebalance
    assert unfinished.done(old) is None
    assert unfinished.holds(again)
