"""What a consumer sees of topics made after it started, through `servicekit.partitions` (the one private reach into
aiokafka's client for it), on the real broker: an aiokafka that moves that reach fails here, not in a command that then
reads nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from servicekit import ADMIN, ensure_topics, kafka_options
from servicekit.partitions import cluster_now, partitions_of
from servicekit.settings import KitSettings
from tests.conftest import delete_prefix_topics


@pytest.fixture
async def fresh(infra: Any, prefix: str) -> AsyncIterator[str]:
    """A prefix none of whose topics exist yet; deleted afterwards."""
    yield prefix
    await delete_prefix_topics(infra.kafka_bootstrap, prefix)


async def test_topics_made_after_a_consumer_started_are_seen_with_every_partition(infra: Any, fresh: str) -> None:
    await ensure_topics(infra.kafka_bootstrap, fresh, ["control"])
    consumer = AIOKafkaConsumer(bootstrap_servers=infra.kafka_bootstrap, enable_auto_commit=False, **kafka_options(KitSettings(), ADMIN))
    await consumer.start()
    try:
        consumer.assign([TopicPartition(fresh + "control", 0)])  # a consumer already reading one topic
        assert await partitions_of(consumer, [fresh + "tasks"]) == []  # not made yet: nothing, no error
        await ensure_topics(infra.kafka_bootstrap, fresh, ["tasks", "actions.proposed"], partitions=3)

        assert await partitions_of(consumer, [fresh + "tasks", fresh + "actions.proposed"]) == [
            *(TopicPartition(fresh + "tasks", p) for p in range(3)),
            *(TopicPartition(fresh + "actions.proposed", p) for p in range(3)),
        ]
        cluster = await cluster_now(consumer)
        assert {t for t in cluster.topics() if t.startswith(fresh)} == {fresh + "control", fresh + "tasks", fresh + "actions.proposed"}
        assert cluster.partitions_for_topic(fresh + "tasks") == {0, 1, 2}
        # what it found can be read: the refreshed metadata knows each partition's leader
        ends = await consumer.end_offsets(await partitions_of(consumer, [fresh + "tasks"]))
        assert sorted(ends.values()) == [0, 0, 0]
    finally:
        await consumer.stop()
