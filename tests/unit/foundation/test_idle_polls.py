"""An idle consumer's loop waits in one long poll instead of turning every second, and a busy spell still ends on time.

Each consumer of each service polled with a 1 s wait and, finding nothing, turned its loop and polled again: a wake-up a
second per consumer for nothing (docs/benchmarks.md, 2026-12-07). A record still ends the poll at once (the fetch
returns it); the fetch pace's busy wait still returns to the idle one `BUSY_FOR_S` after the last long batch, since a
busy consumer polls only until then. No broker: a stand-in whose fetch waits as aiokafka's does.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import ConsumerRecord, TopicPartition

from servicekit.polling import FetchPace, Poller

TP = TopicPartition("tidegate.tasks", 0)
IDLE_MS, BUSY_MS = 2_000, 100


class _Fetcher:
    _fetch_max_wait_ms = IDLE_MS


class _Consumer:
    """A consumer whose fetch waits until a batch is given to it (or the poll's wait ends); it counts its polls."""

    def __init__(self) -> None:
        self.batches: asyncio.Queue[list[Any]] = asyncio.Queue()
        self.polls = 0
        self._fetcher = _Fetcher()

    def subscribe(self, *, topics: Any = (), pattern: str | None = None, listener: Any = None) -> None:
        pass

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def getmany(self, *, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        self.polls += 1
        try:
            return {TP: await asyncio.wait_for(self.batches.get(), timeout_ms / 1000)}
        except TimeoutError:
            return {}


def _record(offset: int) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord("tidegate.tasks", 0, offset, 0, 0, None, b"{}", None, 0, 2, [])


async def _started(consumer: _Consumer, handled: list[int], *, batch_s: float = 0.0) -> Poller:
    poller = Poller(lambda: consumer, name="test", topics=["tidegate.tasks"], max_records=10, pace=FetchPace(IDLE_MS, BUSY_MS))  # type: ignore[arg-type, return-value]

    @poller
    async def handle(records: Any) -> None:
        await asyncio.sleep(batch_s)
        handled.extend(r.offset for r in records)

    await poller.start()
    return poller


async def test_an_idle_consumer_waits_in_one_poll_and_a_record_ends_it_at_once() -> None:
    consumer, handled = _Consumer(), []
    poller = await _started(consumer, handled)
    try:
        await asyncio.sleep(2.5)
        assert consumer.polls == 1  # with a 1 s wait it had polled three times by now
        loop = asyncio.get_running_loop()
        given = loop.time()
        consumer.batches.put_nowait([_record(1)])
        while not handled:
            await asyncio.sleep(0.005)
        assert loop.time() - given < 0.5
    finally:
        await poller.stop()


async def test_a_busy_spell_ends_on_time_with_nothing_more_to_poll() -> None:
    consumer, handled = _Consumer(), []
    poller = await _started(consumer, handled, batch_s=FetchPace.BUSY_BATCH_S * 2)  # a long batch: the consumer is busy
    pace = poller.pace
    assert pace is not None
    try:
        consumer.batches.put_nowait([_record(1)])
        while not handled:
            await asyncio.sleep(0.005)
        assert pace.current_ms == BUSY_MS
        assert consumer._fetcher._fetch_max_wait_ms == BUSY_MS
        loop = asyncio.get_running_loop()
        busy_from = loop.time()
        while pace.current_ms != IDLE_MS and loop.time() - busy_from < FetchPace.BUSY_FOR_S + 2:
            await asyncio.sleep(0.01)
        assert pace.current_ms == IDLE_MS  # the idle wait again, about `BUSY_FOR_S` after the batch, not at a poll 30 s on
        assert consumer._fetcher._fetch_max_wait_ms == IDLE_MS
        assert loop.time() - busy_from < FetchPace.BUSY_FOR_S + 0.5
    finally:
        await poller.stop()
