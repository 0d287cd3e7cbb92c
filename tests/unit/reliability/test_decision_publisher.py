"""The policy's DecisionPublisher replaces a producer that can no longer deliver, and the same bytes are sent again."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka.errors import OutOfOrderSequenceNumber

from services.policy.batching import DecisionPublisher
from services.policy.service import Outgoing


@dataclass
class FakeBatch:
    records: list[tuple[bytes | None, bytes]] = field(default_factory=list)

    def append(self, *, key: bytes | None, value: bytes, timestamp: Any, headers: Any) -> object:
        self.records.append((key, value))
        return object()


@dataclass
class FakeSender:
    sender_task: asyncio.Future[None] | None = None


@dataclass
class FakeProducer:
    """A producer whose sends fail with `error` (as aiokafka fails pending batches when its sender dies)."""

    error: BaseException | None = None
    sent: list[bytes] = field(default_factory=list)
    stopped: bool = False
    _sender: FakeSender = field(default_factory=FakeSender)

    async def start(self) -> None:
        self._sender.sender_task = asyncio.get_running_loop().create_future()

    async def stop(self) -> None:
        self.stopped = True

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2}

    def create_batch(self) -> FakeBatch:
        return FakeBatch()

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.error is not None:
            assert self._sender.sender_task is not None
            self._sender.sender_task.set_exception(self.error)  # the sender routine died of it
            self._sender.sender_task.exception()
            future.set_exception(self.error)
        else:
            self.sent += [value for _, value in batch.records]
            future.set_result(None)
        return future


def events() -> list[Outgoing]:
    return [Outgoing("actions.decided", f"t-{i}".encode(), f'{{"id": "e-{i}"}}'.encode(), None, None) for i in range(3)]


async def test_a_producer_dead_of_out_of_order_sequence_is_replaced_and_the_same_bytes_are_sent_again() -> None:
    dead, fresh = FakeProducer(error=OutOfOrderSequenceNumber()), FakeProducer()
    made = iter([dead, fresh])
    publisher = DecisionPublisher("unused:1", "p.", service="policy")
    publisher._new_producer = lambda: next(made)  # type: ignore[assignment, method-assign, return-value]
    await publisher.start()
    batch = events()
    with pytest.raises(ConnectionError):  # transient: the caller's retry sends again
        await publisher.publish_many(batch)
    assert dead.stopped
    assert publisher.rebuilt == 1
    await publisher.publish_many(batch)
    assert sorted(fresh.sent) == sorted(e.value for e in batch)


async def test_a_producer_whose_sender_task_ended_is_replaced_before_sending() -> None:
    first, second = FakeProducer(), FakeProducer()
    made = iter([first, second])
    publisher = DecisionPublisher("unused:1", "p.", service="policy")
    publisher._new_producer = lambda: next(made)  # type: ignore[assignment, method-assign, return-value]
    await publisher.start()
    assert first._sender.sender_task is not None
    first._sender.sender_task.cancel()  # the sender is gone: anything sent on `first` would wait forever
    await publisher.publish_many(events())
    assert first.sent == []
    assert len(second.sent) == 3
    assert publisher.rebuilt == 1
