"""The kit's librdkafka consumer on the real broker: what FastStream's loop and the kit rely on from aiokafka's consumer.

Records come out as aiokafka `ConsumerRecord`s with their keys, values and (binary) headers; a rewind reads a batch
again; commits are the offsets given, readable by the group's admin; a consumer outside any group that reads "from
the latest" does not skip a record produced right after it started; the lag the liveness check reads is right.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import ConsumerStoppedError, KafkaError

from servicekit import ADMIN, KitSettings, kafka_options
from servicekit.rdkafka import RdConsumer


@pytest.fixture
async def topic(kit: KitSettings) -> AsyncIterator[str]:
    name = f"{kit.topic_prefix}rdkafka-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kit.kafka_bootstrap, **kafka_options(kit, ADMIN))
    await admin.start()
    await admin.create_topics([NewTopic(name, 2, 1)])
    try:
        yield name
    finally:
        await admin.delete_topics([name])
        await admin.close()


async def produce(kit: KitSettings, topic: str, *records: tuple[int, bytes, list[tuple[str, bytes]]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kit.kafka_bootstrap, acks="all", **kafka_options(kit, ADMIN))
    await producer.start()
    try:
        for partition, value, headers in records:
            await producer.send_and_wait(topic, value, key=value[:3], partition=partition, headers=headers)
    finally:
        await producer.stop()


def consumer(kit: KitSettings, group: str | None, **options: Any) -> RdConsumer:
    login = kafka_options(kit, ADMIN)
    return RdConsumer(group_id=group, bootstrap_servers=kit.kafka_bootstrap, client_id="test-rdkafka", **login, **options)


async def poll_until(c: RdConsumer, count: int, timeout_s: float = 30) -> list[Any]:
    records: list[Any] = []
    deadline = asyncio.get_running_loop().time() + timeout_s
    while len(records) < count:
        assert asyncio.get_running_loop().time() < deadline, f"{len(records)} of {count} records read"
        for batch in (await c.getmany(timeout_ms=500, max_records=100)).values():
            records.extend(batch)
    return records


async def test_records_come_out_whole_a_rewind_reads_them_again_and_commits_are_the_offsets_given(kit: KitSettings, topic: str) -> None:
    await produce(kit, topic, (0, b"one", [("traceparent", b"00-ab")]), (0, b"two", [("raw", b"\xff\xfe")]), (1, b"three", []))
    group = f"{kit.topic_prefix}rdkafka-{uuid.uuid4().hex[:8]}"
    c = consumer(kit, group, auto_offset_reset="earliest", enable_auto_commit=False)
    c.subscribe([topic])
    await c.start()
    try:
        records = await poll_until(c, 3)
        by_value = {r.value: r for r in records}
        assert set(by_value) == {b"one", b"two", b"three"}
        assert by_value[b"two"].headers == [("raw", b"\xff\xfe")]  # binary headers as they are
        assert (by_value[b"one"].key, by_value[b"one"].topic) == (b"one", topic)
        assert c.assignment() == {TopicPartition(topic, 0), TopicPartition(topic, 1)}
        assert await c.waiting() == 0

        c.seek(TopicPartition(topic, 0), by_value[b"one"].offset)  # the batch was not handled: read it again
        again = await poll_until(c, 2)
        assert [r.value for r in again] == [b"one", b"two"]

        await c.commit({TopicPartition(topic, 0): 2, TopicPartition(topic, 1): 1})
        admin = AIOKafkaAdminClient(bootstrap_servers=kit.kafka_bootstrap, **kafka_options(kit, ADMIN))
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(group)
        finally:
            await admin.close()
        assert {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic} == {0: 2, 1: 1}
    finally:
        await c.stop()
    with pytest.raises(ConsumerStoppedError):  # what ends FastStream's consume loop
        await c.getmany(timeout_ms=10)


async def test_a_consumer_outside_any_group_from_the_latest_skips_what_came_before_and_reads_what_comes_after(
    kit: KitSettings, topic: str
) -> None:
    await produce(kit, topic, (0, b"before", []), (1, b"before", []))
    c = consumer(kit, None, auto_offset_reset="latest", enable_auto_commit=False)
    c.subscribe([topic])
    await c.start()
    try:
        assert {tp: await c.position(tp) for tp in c.assignment()} == {TopicPartition(topic, 0): 1, TopicPartition(topic, 1): 1}
        await produce(kit, topic, (1, b"after", []))  # right after start: must not be skipped
        records = await poll_until(c, 1)
        assert [r.value for r in records] == [b"after"]
        with pytest.raises(KafkaError, match="outside any group"):  # nothing is ever committed
            await c.commit({TopicPartition(topic, 1): 2})
    finally:
        await c.stop()


async def test_lag_counts_what_waits_on_the_assigned_partitions(kit: KitSettings, topic: str) -> None:
    group = f"{kit.topic_prefix}rdkafka-{uuid.uuid4().hex[:8]}"
    c = consumer(kit, group, auto_offset_reset="earliest", enable_auto_commit=False)
    c.subscribe([topic])
    await c.start()
    try:
        await produce(kit, topic, (0, b"a", []))
        await poll_until(c, 1)
        await produce(kit, topic, *((0, b"b%d" % i, []) for i in range(4)))
        await asyncio.sleep(1.0)  # fetched into the client's queue, not handed over
        assert await c.waiting() == 4
    finally:
        await c.stop()


def test_an_option_librdkafka_cannot_honour_is_refused_not_dropped(kit: KitSettings) -> None:
    with pytest.raises(ValueError, match="no librdkafka option for send_buffer_bytes"):
        consumer(kit, "g", send_buffer_bytes=1024)
    with pytest.raises(ValueError, match="enable_auto_commit must be off"):
        consumer(kit, "g", enable_auto_commit=True)
