"""How the kit's consumers poll: they wait for records inside the fetch, never in a sleep between polls."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import ConsumerRecord, TopicPartition
from faststream.kafka import KafkaBroker

from servicekit.rawbatch import POLL_WAIT_MS, raw_decoder, wait_in_fetch


def _record(partition: int, offset: int) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord("tidegate.tasks", partition, offset, 0, 0, None, b"{}", None, 0, 2, [])


class _Consumer:
    """Answers `getmany` from a script of polls, and keeps the arguments of each call."""

    def __init__(self, *polls: dict[TopicPartition, list[Any]]) -> None:
        self.polls = list(polls)
        self.calls: list[tuple[int, int]] = []

    async def getmany(self, *, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        self.calls.append((timeout_ms, max_records))
        return self.polls.pop(0) if self.polls else {}


def _subscriber() -> Any:
    broker = KafkaBroker("127.0.0.1:1")
    return broker.subscriber("tidegate.tasks", group_id="g", batch=True, max_records=10, batch_timeout_ms=POLL_WAIT_MS)


@pytest.fixture
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []

    async def sleep(delay: float) -> None:
        slept.append(delay)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    return slept


async def test_a_poll_waits_in_the_fetch_and_returns_what_it_found_without_sleeping(no_sleep: list[float]) -> None:
    subscriber = _subscriber()
    wait_in_fetch(subscriber, max_records=10)
    first, second = _record(0, 5), _record(0, 6)
    consumer = _Consumer({TopicPartition("tidegate.tasks", 0): [first, second]}, {})

    assert await subscriber.get_msg(consumer) == (first, second)
    assert await subscriber.get_msg(consumer) == ()  # nothing came within the long wait: poll again, no sleep
    assert consumer.calls == [(POLL_WAIT_MS, 10), (POLL_WAIT_MS, 10)]
    assert POLL_WAIT_MS >= 500  # an idle consumer wakes up rarely
    assert no_sleep == []


async def test_a_lingering_batch_waits_once_for_more_and_keeps_each_partitions_order(no_sleep: list[float]) -> None:
    subscriber = _subscriber()
    wait_in_fetch(subscriber, max_records=10, linger_ms=100)
    p0, p1 = TopicPartition("tidegate.tasks", 0), TopicPartition("tidegate.tasks", 1)
    consumer = _Consumer({p0: [_record(0, 1)], p1: [_record(1, 7)]}, {p0: [_record(0, 2)], p1: [_record(1, 8)]})

    records = await subscriber.get_msg(consumer)

    assert [(r.partition, r.offset) for r in records if r.partition == 0] == [(0, 1), (0, 2)]
    assert [(r.partition, r.offset) for r in records if r.partition == 1] == [(1, 7), (1, 8)]
    assert no_sleep == [0.1]
    assert consumer.calls == [(POLL_WAIT_MS, 10), (0, 8)]  # the second poll takes what is there, up to a full batch


async def test_a_full_batch_does_not_linger(no_sleep: list[float]) -> None:
    subscriber = _subscriber()
    wait_in_fetch(subscriber, max_records=2, linger_ms=100)
    consumer = _Consumer({TopicPartition("tidegate.tasks", 0): [_record(0, 1), _record(0, 2)]})

    assert len(await subscriber.get_msg(consumer)) == 2
    assert no_sleep == []
    assert len(consumer.calls) == 1


async def test_the_handler_gets_the_polled_records_whatever_faststream_hands_over() -> None:
    one, two = _record(0, 1), _record(0, 2)

    class _Message:
        raw_message: Any

    batch, single = _Message(), _Message()
    batch.raw_message, single.raw_message = [one, two], one
    assert await raw_decoder(batch) == (one, two)
    assert await raw_decoder(single) == (one,)
