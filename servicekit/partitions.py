"""The partitions of topics as the broker has them now, read through a consumer.

aiokafka has no public call that refreshes what a consumer knows of the cluster: a consumer that subscribed to nothing
knows no topic until asked, and `partitions_for_topic` reads only what it already knows. This module is the one place
the kit and the CLI reach into aiokafka's client for it (`AIOKafkaConsumer._client`), so an aiokafka that moves it breaks
here, and tests/integration/foundation/test_partitions.py says so. (The client, `tidegate.client`, imports no servicekit
and keeps its own.)
"""

from __future__ import annotations

from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.cluster import ClusterMetadata

__all__ = ["cluster_now", "partitions_of"]


async def partitions_of(consumer: AIOKafkaConsumer, topics: Iterable[str]) -> list[TopicPartition]:
    """Every partition of `topics` (full names), in order, after refreshing the consumer's metadata.

    A topic the broker does not show this login (not made yet, or not its to describe) has none. The refresh is the
    consumer's own metadata, so what it assigns next has its leaders known. A consumer that reads some topics already
    asks the broker only for those: `topics` are added to what it tracks first, or they would stay unknown to it.
    """
    topics = list(topics)
    tracked = {tp.topic for tp in consumer.assignment()} | set(consumer.subscription())
    consumer._client.set_topics(tracked | set(topics) if tracked else ())  # none: the whole cluster, as at start
    await consumer._client.force_metadata_update()
    return [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]


async def cluster_now(consumer: AIOKafkaConsumer) -> ClusterMetadata:
    """A fresh copy of every topic's metadata this login may see, whatever the consumer is assigned.

    Topics made since the consumer started are in it; the consumer's own metadata is left as it was.
    """
    return await consumer._client.fetch_all_metadata()
