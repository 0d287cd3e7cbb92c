"""An event the broker refuses for good, published while a polled batch is handled: its input is dead-lettered, the batch moves on.

The topic here takes 8 KiB a record batch (`max.message.bytes`), far below the producer's 1 MiB `max_request_size`:
the producer queues the 20 KB output, the broker answers MESSAGE_TOO_LARGE for the whole producer batch that
carries it (batch-mates included), and aiokafka's idempotent producer then had every later batch of that
partition refused as out of sequence. Before, the polled batch was rewound, handled again, and the producer taken
for dead (the process exits 75, is restarted, and meets the same record): the partition never moved on.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from reliability_helpers import BatchProducer, good_event, wire
from signers import AdminBus

import schemas as s
from servicekit import ADMIN, Bus, KitSettings, Recorded, kafka_options
from servicekit.consume import Route, consume_routes

OUTPUTS = "outputs.small"  # not a catalog topic: made by the test, under its prefix (dropped with it)
TOPIC_LIMIT = 8 * 1024
BIG = 20_000  # over the topic's limit, under the producer's 1 MiB
INPUTS = 5


@pytest.fixture
async def outputs_topic(kit: KitSettings) -> AsyncIterator[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=kit.kafka_bootstrap, **kafka_options(kit, ADMIN))
    await admin.start()
    try:
        full = kit.topic_prefix + OUTPUTS
        await admin.create_topics([NewTopic(full, 1, 1, topic_configs={"max.message.bytes": str(TOPIC_LIMIT)})])
        yield full
    finally:
        await admin.close()


def output(event: s.Envelope, size: int) -> bytes:
    return json.dumps({"from": event.id, "pad": "x" * size}).encode()


async def published(kit: KitSettings, full: str) -> list[str]:
    """The input event id of every record on the outputs topic, in order."""
    consumer = AIOKafkaConsumer(bootstrap_servers=kit.kafka_bootstrap, enable_auto_commit=False, **kafka_options(kit, ADMIN))
    await consumer.start()
    try:
        tp = TopicPartition(full, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        found: list[str] = []
        while await consumer.position(tp) < end:
            for records in (await consumer.getmany(tp, timeout_ms=1000)).values():
                found += [json.loads(r.value)["from"] for r in records]
        return found
    finally:
        await consumer.stop()


async def committed(kit: KitSettings, group: str, tp: TopicPartition) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=kit.kafka_bootstrap, **kafka_options(kit, ADMIN))
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
        return offsets[tp].offset if tp in offsets else -1
    finally:
        await admin.close()


def subscribe(bus: Bus, path: str, handle: Any, group: str) -> None:
    """`handle` on `tasks`, one record at a time (`Bus.consume`) or a polled batch in one unit of work (`consume_routes`)."""
    if path == "one at a time":
        bus.consume("tasks", handle, group_id=group)
        return

    async def handle_batch(events: list[Any]) -> None:
        for event in events:
            await handle(event)

    consume_routes(bus, {"tasks": Route(handle, handle_batch=handle_batch)}, group_id=group)


@pytest.mark.parametrize("path", ["one at a time", "batch handler"])
async def test_an_output_the_broker_refuses_as_too_large_dead_letters_its_input_and_the_batch_moves_on(
    path: str, kit: KitSettings, outputs_topic: str, batch_producer: BatchProducer, wait_for: Any
) -> None:
    key = f"t-{uuid.uuid4().hex[:8]}"
    first = good_event("tasks", f"{key}-first")  # before: the broker knows the producer's sequence on the outputs' partition
    inputs = [good_event("tasks", f"{key}-{i}") for i in range(INPUTS)]
    too_big = inputs[2]
    later = good_event("tasks", f"{key}-later")  # after: the producer still delivers there

    bus = AdminBus(kit, "planner")
    group = f"{kit.topic_prefix}planner"

    async def handle(event: Any) -> None:  # as a service publishes what it stored: an event once a batch
        await bus.publish_many([Recorded(OUTPUTS, key.encode(), output(event, BIG if event.id == too_big.id else 100), None)])

    subscribe(bus, path, handle, group)
    watcher = AdminBus(kit, "watcher")
    rejected: list[s.EventRejected] = []

    async def on_dead(event: s.EventRejected) -> None:
        rejected.append(event)

    watcher.consume("deadletter", on_dead, group_id=f"{kit.topic_prefix}watcher")
    await watcher.start()
    await bus.start()
    try:
        await batch_producer.send_batch("tasks", key.encode(), [wire(first, kit)])
        await wait_for(lambda: _when_complete(published(kit, outputs_topic), 1), timeout=30, what="the first output")
        partition, base = await batch_producer.send_batch("tasks", key.encode(), [wire(e, kit) for e in inputs])  # one poll
        [dead] = await wait_for(lambda: rejected, timeout=60, what="the dead letter of the input whose output is too large")
        assert (dead.data.topic, dead.data.partition, dead.data.offset) == (kit.topic_prefix + "tasks", partition, base + 2)
        assert dead.data.code == "output_too_large"
        assert "MESSAGE_SIZE_TOO_LARGE" in dead.data.error
        assert OUTPUTS in dead.data.error
        assert s.decode("tasks", dead.data.raw_value.encode()).id == too_big.id  # the input itself is kept

        await batch_producer.send_batch("tasks", key.encode(), [wire(later, kit)])
        tp = TopicPartition(kit.topic_prefix + "tasks", partition)
        await wait_for(lambda: _at_least(committed(kit, group, tp), base + INPUTS + 1), timeout=60, what="the offset past the batch")
        expected = [first.id] + [e.id for e in inputs if e.id != too_big.id] + [later.id]
        outs = await wait_for(lambda: _when_complete(published(kit, outputs_topic), len(expected)), timeout=30, what="the outputs")
        assert sorted(outs) == sorted(expected)  # each batch-mate's output once: none lost, none twice
        assert bus.failure is None  # the producer was never taken for dead
        assert len(rejected) == 1
    finally:
        await bus.stop()
        await watcher.stop()


async def _at_least(offset: Any, wanted: int) -> bool:
    return bool(await offset >= wanted)


async def _when_complete(found: Any, count: int) -> list[str] | None:
    ids: list[str] = await found
    return ids if len(ids) >= count else None
