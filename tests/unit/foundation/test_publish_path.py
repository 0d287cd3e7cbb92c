"""The kit's one publish path: inside a polled batch, a batch counts as handled only once the broker acknowledged what it published."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaTimeoutError, OutOfOrderSequenceNumber
from fake_producer import FakeProducer, make_bus

import schemas as s
from servicekit import Bus, Recorded, SigningKey, encode_signed, once_delivered, once_delivered_together, span


def proposal(traceparent: str | None = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01") -> s.ActionProposed:
    data = s.ActionProposedData(
        action_id="a-1", task_id="t-1", tenant_id="acme", step=1, tool="tag_ticket", args={"ticket_id": "T-1"}, proposer="planner"
    )
    return s.ActionProposed.build(data, source="tidegate/planner", traceparent=traceparent)


async def test_a_batch_is_handled_only_once_the_broker_acknowledged_what_it_published() -> None:
    bus, producer = make_bus()
    left = asyncio.Event()

    async def batch() -> None:
        async with bus.acknowledged_at_end():
            await bus.publish("actions.proposed", proposal())
            await bus.publish("actions.proposed", proposal())
            assert len(producer.sent) == 2  # both queued without waiting for the first ack
        left.set()

    handling = asyncio.create_task(batch())
    await asyncio.sleep(0)
    for _ in range(5):
        await asyncio.sleep(0)
    assert not left.is_set()  # no ack yet: the batch is not handled, its offsets are not committed
    producer.ack_all()
    await asyncio.wait_for(handling, 5)
    assert left.is_set()


async def test_the_record_sent_is_the_envelope_with_its_traceparent_as_header() -> None:
    bus, producer = make_bus()
    event = proposal()
    async with bus.acknowledged_at_end():
        await bus.publish("actions.proposed", event)
        producer.ack_all()
    [(topic, value, key, headers)] = producer.sent
    assert topic == "p.actions.proposed"
    assert key == b"t-1"
    assert s.decode("actions.proposed", value) == event
    assert dict(headers) == {"content-type": s.CONTENT_TYPE.encode(), "traceparent": event.traceparent.encode()}  # type: ignore[union-attr]


async def test_a_failed_delivery_fails_the_batch_so_it_is_rewound_not_committed() -> None:
    bus, producer = make_bus()

    async def batch() -> None:
        async with bus.acknowledged_at_end():
            await bus.publish("actions.proposed", proposal())
            await bus.publish("actions.proposed", proposal())
            producer.deliveries[0].set_exception(KafkaTimeoutError())
            producer.deliveries[1].set_result(None)

    with pytest.raises(KafkaTimeoutError):
        await batch()


async def test_a_producer_that_can_no_longer_deliver_stops_the_process_and_holds_the_batch() -> None:
    bus, producer = make_bus()

    async def batch() -> None:
        async with bus.acknowledged_at_end():
            await bus.publish("actions.proposed", proposal())
            producer.deliveries[0].set_exception(OutOfOrderSequenceNumber())

    handling = asyncio.create_task(batch())
    await asyncio.wait_for(bus.failed.wait(), 5)
    assert not handling.done()  # held, uncommitted, until the process stops
    handling.cancel()
    with pytest.raises(asyncio.CancelledError):
        await handling


async def test_outside_a_batch_publish_returns_once_acknowledged() -> None:
    bus, producer = make_bus()
    publishing = asyncio.create_task(bus.publish("actions.proposed", proposal()))
    for _ in range(5):
        await asyncio.sleep(0)
    assert producer.sent
    assert not publishing.done()
    producer.ack_all()
    await asyncio.wait_for(publishing, 5)


def recorded(n: int) -> list[Recorded]:
    """Stored events, as the policy keeps its decisions: bytes whose spacing no encoder of ours would produce."""
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    return [Recorded("actions.decided", f"t-{i}".encode(), f'{{"id":  "e-{i}"}}'.encode(), tp if i else None) for i in range(n)]


async def test_recorded_events_go_out_byte_for_byte_with_their_traceparent_and_count_once_acknowledged() -> None:
    bus, producer = make_bus()
    left = asyncio.Event()

    async def batch() -> None:
        async with bus.acknowledged_at_end():
            await bus.publish_many(recorded(3))
            assert len(producer.sent) == 3  # all queued together, none waited for
        left.set()

    handling = asyncio.create_task(batch())
    for _ in range(5):
        await asyncio.sleep(0)
    assert not left.is_set()  # not acknowledged yet: the batch is not handled
    producer.ack_all()
    await asyncio.wait_for(handling, 5)
    assert [(topic, value, key) for topic, value, key, _ in producer.sent] == [("p.actions.decided", r.value, r.key) for r in recorded(3)]
    assert dict(producer.sent[0][3]) == {"content-type": s.CONTENT_TYPE.encode()}  # no trace context: no header
    assert dict(producer.sent[1][3])["traceparent"] == recorded(3)[1].traceparent.encode()  # type: ignore[union-attr]


async def test_outside_a_batch_publish_many_returns_once_all_are_acknowledged() -> None:
    bus, producer = make_bus()
    publishing = asyncio.create_task(bus.publish_many(recorded(2)))
    for _ in range(5):
        await asyncio.sleep(0)
    assert len(producer.sent) == 2
    producer.deliveries[0].set_result(None)
    for _ in range(5):
        await asyncio.sleep(0)
    assert not publishing.done()  # one still unacknowledged
    producer.ack_all()
    await asyncio.wait_for(publishing, 5)


async def test_a_recorded_event_the_broker_refused_fails_its_batch() -> None:
    bus, producer = make_bus()

    async def batch() -> None:
        async with bus.acknowledged_at_end():
            await bus.publish_many(recorded(2))
            producer.deliveries[0].set_result(None)
            producer.deliveries[1].set_exception(KafkaTimeoutError())

    with pytest.raises(KafkaTimeoutError):  # rewound, not committed
        await batch()


async def test_a_dead_letter_inside_a_batch_is_written_before_the_handler_goes_on() -> None:
    bus, producer = make_bus()
    record = SimpleNamespace(topic="p.actions.proposed", partition=0, offset=7, key=b"t-1", value=b"{oops", headers=())

    async def batch() -> None:
        async with bus.acknowledged_at_end():
            await bus.handle_record("actions.proposed", record, lambda e: None)  # type: ignore[arg-type, return-value]

    handling = asyncio.create_task(batch())
    for _ in range(5):
        await asyncio.sleep(0)
    assert [t for t, *_ in producer.sent] == ["p.deadletter"]
    assert not handling.done()  # the dead letter's own ack is awaited in place
    producer.ack_all()
    await asyncio.wait_for(handling, 5)


async def test_what_waits_for_delivery_runs_only_after_the_broker_acknowledged() -> None:
    """An outbox entry marked delivered when its record was only queued is lost if the delivery then fails."""
    bus, producer = make_bus()
    marked: list[str] = []

    async def mark() -> None:
        marked.append("outbox entry delivered")

    async def batch() -> None:
        async with bus.acknowledged_at_end():
            await bus.publish("actions.proposed", proposal())
            await once_delivered(mark)
            assert marked == []  # queued, not stored yet

    handling = asyncio.create_task(batch())
    for _ in range(5):
        await asyncio.sleep(0)
    assert marked == []
    producer.ack_all()
    await asyncio.wait_for(handling, 5)
    assert marked == ["outbox entry delivered"]


async def test_a_failed_delivery_leaves_the_outbox_entry_for_the_redelivery() -> None:
    bus, producer = make_bus()
    marked: list[str] = []

    async def mark() -> None:
        marked.append("delivered")

    async def batch() -> None:
        async with bus.acknowledged_at_end():
            await bus.publish("actions.proposed", proposal())
            await once_delivered(mark)
            producer.deliveries[0].set_exception(KafkaTimeoutError())

    with pytest.raises(KafkaTimeoutError):
        await batch()
    assert marked == []  # the batch is rewound and its redelivery publishes the entry again


async def test_outside_a_batch_what_waits_for_delivery_runs_at_once() -> None:
    marked: list[str] = []

    async def mark() -> None:
        marked.append("delivered")

    await once_delivered(mark)
    assert marked == ["delivered"]


def _recording_marks() -> tuple[list[list[int]], Callable[[list[int]], Awaitable[None]]]:
    calls: list[list[int]] = []

    async def forget(ids: list[int]) -> None:
        calls.append(list(ids))

    return calls, forget


async def test_marks_of_a_whole_batch_run_once_together_after_the_acknowledgements() -> None:
    """Outbox entries of every event of a batch are deleted in one go, once the broker has stored everything the batch published."""
    bus, producer = make_bus()
    calls, forget = _recording_marks()

    async def batch() -> None:
        async with bus.acknowledged_at_end():
            await bus.publish("actions.proposed", proposal())
            await once_delivered_together("outbox", [1, 2], forget)
            await bus.publish("actions.proposed", proposal())
            await once_delivered_together("outbox", [3], forget)
            producer.deliveries[0].set_result(None)
            assert calls == []

    handling = asyncio.create_task(batch())
    for _ in range(5):
        await asyncio.sleep(0)
    assert calls == []  # one record is still unacknowledged
    producer.ack_all()
    await asyncio.wait_for(handling, 5)
    assert calls == [[1, 2, 3]]
    await once_delivered_together("outbox", [4], forget)  # outside a batch the publish has waited: at once
    assert calls == [[1, 2, 3], [4]]


async def test_a_failed_batch_marks_nothing_of_what_it_gathered() -> None:
    bus, producer = make_bus()
    calls, forget = _recording_marks()

    async def failing() -> None:
        async with bus.acknowledged_at_end():
            await bus.publish("actions.proposed", proposal())
            await once_delivered_together("outbox", [1], forget)
            producer.deliveries[0].set_exception(KafkaTimeoutError())

    with pytest.raises(KafkaTimeoutError):
        await failing()
    async with bus.acknowledged_at_end():  # the redelivery gathers afresh
        await bus.publish("actions.proposed", proposal())
        await once_delivered_together("outbox", [2], forget)
        producer.ack_all()
    assert calls == [[2]]


async def test_an_event_redelivered_inside_the_same_batch_is_published_once() -> None:
    """A source event read twice in one poll hands its not-yet-marked outbox entries over twice: one record goes out."""
    bus, producer = make_bus()
    event = proposal()
    async with bus.acknowledged_at_end():
        await bus.publish("actions.proposed", event)
        await bus.publish("actions.proposed", event)
        producer.ack_all()
    assert len(producer.sent) == 1


@pytest.mark.parametrize("path", ["publish", "publish_many"])
async def test_a_send_that_raised_is_made_again_by_the_handler_s_retry_in_the_same_batch(path: str) -> None:
    """The event was marked sent before its send: a send refused at once (a full buffer, a record too large) was skipped
    by the handler's retry inside the same batch, and the batch was committed with the event never published."""
    bus, producer = make_bus()
    event = proposal()
    refused = [KafkaTimeoutError()]
    queue = producer.send

    async def send_once_refused(topic: str, value: bytes, *, key: bytes | None, headers: list[tuple[str, bytes]]) -> Any:
        if refused:
            raise refused.pop()
        return await queue(topic, value, key=key, headers=headers)

    producer.send = send_once_refused  # type: ignore[method-assign]

    async def handler() -> None:
        if path == "publish":
            await bus.publish("actions.proposed", event)
        else:
            await bus.publish_many([bus.record("actions.proposed", event)])

    async with bus.acknowledged_at_end():
        await bus.retrying("a handler", handler)  # the one layer that retries handlers
        producer.ack_all()
    assert len(producer.sent) == 1


async def test_the_next_batch_publishes_an_event_again_when_its_source_is_redelivered() -> None:
    """Only inside one batch: after a rewind, the redelivery must publish it again (its first delivery may have failed)."""
    bus, producer = make_bus()
    event = proposal()
    for _ in range(2):
        async with bus.acknowledged_at_end():
            await bus.publish("actions.proposed", event)
            producer.ack_all()
    assert len(producer.sent) == 2


TP = TopicPartition("p.actions.results", 0)


class GroupConsumer(AIOKafkaConsumer):
    """A consumer of group `g` that connects nowhere: it records the offsets committed."""

    def __init__(self) -> None:  # no super().__init__: nothing connects
        self._group_id = "g"
        self.commits: list[dict[TopicPartition, int]] = []

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    async def commit(self, offsets: Any = None) -> None:
        self.commits.append(dict(offsets))


async def test_in_a_batch_whose_offsets_are_committed_at_intervals_the_marks_wait_for_that_commit() -> None:
    """The planner's outbox delete rides on its consumer's next commit: one statement for every batch since the last."""
    bus, producer = make_bus()
    calls, forget = _recording_marks()
    consumer = GroupConsumer()
    handlers: list[Callable[[Any], Awaitable[None]]] = []

    class Subscriber:
        def __init__(self) -> None:
            self.consumer = consumer

        def __call__(self, handler: Callable[[Any], Awaitable[None]]) -> None:
            handlers.append(handler)

    async def handle(records: list[SimpleNamespace]) -> None:
        async with bus.acknowledged_at_end():
            await bus.publish("actions.proposed", proposal())
            await once_delivered_together("outbox", [r.offset for r in records], forget)
            producer.ack_all()

    bus.commit_interval_s = 60.0
    bus.on_polled(Subscriber(), handle, name="planner results")
    [on_batch] = handlers

    def polled(*offsets: int) -> list[SimpleNamespace]:
        return [SimpleNamespace(topic=TP.topic, partition=TP.partition, offset=o) for o in offsets]

    await on_batch(polled(0, 1))
    assert (calls, consumer.commits) == ([[0, 1]], [{TP: 2}])  # the first batch is committed at once, its marks just before
    await on_batch(polled(2))
    await on_batch(polled(3))
    assert (calls, consumer.commits) == ([[0, 1]], [{TP: 2}])  # handled, acknowledged: marks and offsets wait together
    await bus.stop()  # a graceful stop commits what is handled, what must precede it first
    assert (calls, consumer.commits) == ([[0, 1], [2, 3]], [{TP: 2}, {TP: 4}])


async def test_the_end_of_a_batch_whose_records_are_acknowledged_takes_no_turn_of_the_event_loop_per_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At a steady rate each record's batch pays its end alone: waiting for 50 answers already in must not schedule 50 callbacks."""
    bus, producer = make_bus()
    loop = asyncio.get_running_loop()
    scheduled = 0
    call_soon = loop.call_soon

    def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal scheduled
        scheduled += 1
        return call_soon(*args, **kwargs)

    async with bus.acknowledged_at_end():
        for _ in range(50):
            await bus.publish("actions.proposed", proposal())
        producer.ack_all()
        monkeypatch.setattr(loop, "call_soon", counted)
    monkeypatch.undo()
    assert len(producer.sent) == 50
    assert scheduled < 5, scheduled  # gathered, the answers scheduled one callback (and a turn of the loop) each


async def test_a_delivery_cancelled_under_the_batch_fails_it_and_a_batch_cancelled_while_it_waits_is_cancelled() -> None:
    bus, producer = make_bus()

    async def batch(cancel_delivery: bool) -> None:
        async with bus.acknowledged_at_end():
            await bus.publish("actions.proposed", proposal())
            await bus.publish("actions.proposed", proposal())
            producer.deliveries[-2].set_result(None)
            if cancel_delivery:  # a producer that stopped under it: never counted as acknowledged
                producer.deliveries[-1].cancel()

    with pytest.raises(asyncio.CancelledError):
        await batch(cancel_delivery=True)
    waiting = asyncio.create_task(batch(cancel_delivery=False))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not waiting.done()  # its second record is not acknowledged
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert producer.deliveries[-1].cancelled()  # as when gathered: the wait it was in is cancelled with it


@pytest.mark.parametrize("signed", [True, False])
async def test_an_event_published_in_a_span_carries_that_trace_context_signed_and_is_not_copied_for_it(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, signed: bool
) -> None:
    """A handler's publish sets the span's `traceparent` in what it signs and sends; copying the whole event for it was CPU for nothing."""
    producer = FakeProducer()
    key = SigningKey.load_or_create(tmp_path, "planner") if signed else None
    bus = Bus(producer, "planner", "unused:1", "p.", signer=key)
    event = proposal(traceparent=None)
    copies = 0
    model_copy = s.ActionProposed.model_copy

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal copies
        copies += 1
        return model_copy(self, *args, **kwargs)

    with span("planner handle action.decided", parent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"):
        monkeypatch.setattr(s.ActionProposed, "model_copy", counted)
        async with bus.acknowledged_at_end():
            await bus.publish("actions.proposed", event)
            producer.ack_all()
        monkeypatch.undo()
    [(_, value, key_bytes, headers)] = producer.sent
    sent = s.decode("actions.proposed", value)
    assert sent.traceparent is not None
    assert sent.traceparent.startswith("00-0af7651916cd43dd8448eb211c80319c-")
    assert dict(headers)["traceparent"] == sent.traceparent.encode()
    assert key_bytes == b"t-1"
    assert sent.model_copy(update={"keyid": None, "signature": None}) == event.model_copy(update={"traceparent": sent.traceparent})
    if key is not None:  # signed over the document with its trace context, as the consumers' check reads it
        assert sent.keyid == key.key_id
        assert value == encode_signed(event.model_copy(update={"traceparent": sent.traceparent}), key)
        assert copies == 0
    else:
        assert sent.signature is None
