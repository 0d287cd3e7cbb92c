"""What Kafka refuses for good is the record's, and the input that published it is the one dead-lettered; the rest is transient.

The broker answers for a whole record batch: here every record the handlers published comes back refused, as when the
producer put them in one batch with the one too large, and each is then sent again alone (`Producer.send_alone`).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import (
    CorruptRecordException,
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotEnoughReplicasError,
    PolicyViolationError,
    RecordListTooLargeError,
    RequestTimedOutError,
    UnknownError,
    for_code,
)
from fake_producer import FakeRecord

import schemas as s
from servicekit import Bus, Producer, Recorded, once_delivered
from servicekit.bus import OutputRefused
from servicekit.consume import _handle_batch
from servicekit.intake import ErrorKind, classify
from servicekit.refusals import InvalidRecordError, refusal_code

BIG = b"x" * 20_000


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (MessageSizeTooLargeError(), "output_too_large"),  # larger than the topic's max.message.bytes, or the producer's limit
        (RecordListTooLargeError(), "output_too_large"),
        (for_code(87)(), "output_refused"),  # INVALID_RECORD: a compacted topic's record without a key
        (CorruptRecordException(), "output_refused"),
        (PolicyViolationError(), "output_refused"),
    ],
    ids=lambda x: type(x).__name__ if isinstance(x, Exception) else x,
)
def test_what_kafka_refuses_for_good_is_the_records_with_its_reason(error: Exception, code: str) -> None:
    assert classify(error) is ErrorKind.RECORD
    assert refusal_code(error) == code


def test_invalid_record_is_known_by_its_code_not_taken_for_an_unknown_error() -> None:
    assert for_code(87) is InvalidRecordError
    assert for_code(87).message == "INVALID_RECORD"


@pytest.mark.parametrize(
    "error", [UnknownError(), RequestTimedOutError(), NotEnoughReplicasError(), KafkaTimeoutError(), KafkaConnectionError("down")]
)
def test_what_may_pass_when_sent_again_stays_transient(error: Exception) -> None:
    assert classify(error) is ErrorKind.TRANSIENT
    assert refusal_code(error) is None


class RefusingBroker(Producer):
    """Refuses every record published in a batch as its one too large batch-mate makes the broker do; alone, only that one."""

    def __init__(self, alone: Exception | None = None) -> None:
        super().__init__("unused:1", "policy")
        self.sent: list[bytes] = []
        self.sent_alone: list[bytes] = []
        self.dead_letters: list[s.EventRejected] = []
        self.alone = alone  # what a record sent alone meets, when not refused for its size

    async def send(self, topic: str, value: bytes, *, key: bytes | None, headers: list[tuple[str, bytes]]) -> asyncio.Future[Any]:
        delivery: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if topic == "p.deadletter":
            self.dead_letters.append(s.decode("deadletter", value))
            delivery.set_result(None)
        else:
            self.sent.append(value)
            delivery.set_exception(MessageSizeTooLargeError())
        return delivery

    async def send_alone(self, topic: str, value: bytes, *, key: bytes | None, headers: list[tuple[str, bytes]]) -> asyncio.Future[Any]:
        self.sent_alone.append(value)
        delivery: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if value.startswith(BIG):
            delivery.set_exception(MessageSizeTooLargeError())
        elif self.alone is not None:
            delivery.set_exception(self.alone)
        else:
            delivery.set_result(None)
        return delivery


def proposal(n: int) -> s.ActionProposed:
    data = s.ActionProposedData(
        action_id=f"a-{n}", task_id="t-1", tenant_id="acme", step=1, tool="tag_ticket", args={"ticket_id": "T-1"}, proposer="agent"
    )
    return s.ActionProposed.build(data, source="agent")


def output(event: s.ActionProposed) -> Recorded:
    """What handling `event` publishes: too large for the topic for a-2."""
    pad = BIG if event.data.action_id == "a-2" else b""
    return Recorded("outputs", b"t-1", pad + event.id.encode(), None)


def records() -> list[FakeRecord]:
    return [FakeRecord("p.actions.proposed", s.encode(proposal(n)), offset=10 + n) for n in (1, 2, 3)]


async def test_only_the_input_whose_output_is_refused_alone_is_dead_lettered_and_its_batch_mates_are_delivered() -> None:
    broker = RefusingBroker()
    bus = Bus(broker, "policy", "unused:1", "p.")
    marked: list[str] = []

    async def handle(event: s.ActionProposed) -> None:
        await bus.publish_many([output(event)])
        await once_delivered(lambda: _mark(marked, event.data.action_id))

    async with bus.acknowledged_at_end():  # returns: the batch counts as handled, its offsets may be committed
        for record in records():
            await bus.handle_record("actions.proposed", record, handle)  # type: ignore[arg-type]

    assert len(broker.sent) == 3
    assert broker.sent_alone == broker.sent  # each sent again alone, in order: the broker answered for the whole batch
    [dead] = broker.dead_letters
    assert (dead.data.offset, dead.data.code) == (12, "output_too_large")
    assert "MESSAGE_SIZE_TOO_LARGE" in dead.data.error
    assert f"outputs ({len(BIG) + 36} bytes)" in dead.data.error
    assert marked == ["a-1", "a-2", "a-3"]  # its handling is done: dead-lettered


async def _mark(marked: list[str], action_id: str) -> None:
    marked.append(action_id)


async def test_a_record_that_fails_otherwise_when_sent_alone_rewinds_the_batch_and_dead_letters_nothing() -> None:
    broker = RefusingBroker(alone=RequestTimedOutError())
    bus = Bus(broker, "policy", "unused:1", "p.")

    async def handle(event: s.ActionProposed) -> None:
        await bus.publish_many([output(event)])

    async def batch() -> None:
        async with bus.acknowledged_at_end():
            for record in records():
                await bus.handle_record("actions.proposed", record, handle)  # type: ignore[arg-type]

    with pytest.raises(RequestTimedOutError):
        await batch()
    assert broker.dead_letters == []


async def test_a_batch_handlers_refused_output_is_owed_to_the_event_that_publishes_it_again_alone() -> None:
    broker = RefusingBroker()
    bus = Bus(broker, "policy", "unused:1", "p.")
    batch = records()
    handled_alone: list[str] = []

    async def handle_batch(events: list[s.ActionProposed]) -> None:
        await bus.publish_many([output(e) for e in events])

    async def handle_one(event: s.ActionProposed) -> None:
        handled_alone.append(event.data.action_id)
        await bus.publish_many([output(event)])

    async with bus.acknowledged_at_end():
        await _handle_batch(bus, "actions.proposed", batch, handle_batch, handle_one)  # type: ignore[arg-type]

    assert handled_alone == ["a-1", "a-2", "a-3"]
    assert len(broker.sent) == 4  # the batch's three, then only the refused one again: its batch-mates were delivered alone
    [dead] = broker.dead_letters
    assert (dead.data.offset, dead.data.code) == (12, "output_too_large")


async def test_a_refused_output_no_one_input_published_rewinds_the_batch() -> None:
    broker = RefusingBroker()
    bus = Bus(broker, "audit", "unused:1", "p.")

    async def batch() -> None:
        async with bus.acknowledged_at_end():
            await bus.publish_many([Recorded("outputs", b"t-1", BIG, None)])

    with pytest.raises(OutputRefused, match="MESSAGE_SIZE_TOO_LARGE"):
        await batch()
    assert broker.dead_letters == []
