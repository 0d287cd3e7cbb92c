"""Helpers of the audit's integration tests: counting what Kafka holds, a fast service (the raw `producer`: tests/conftest.py)."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from servicekit import ADMIN, KitSettings, kafka_options
from services.audit.settings import AuditSettings


@pytest.fixture
def fast_settings() -> AuditSettings:
    """Audit settings for tests: small batches, quick checkpoints and topic discovery."""
    return AuditSettings(batch_max_records=500, checkpoint_interval_s=0.3, topic_discovery_ms=2000)


class AuditProbe:
    """Compares what Kafka holds under a prefix with what the audit log recorded."""

    def __init__(self, kit: KitSettings) -> None:
        self.kit = kit

    async def kafka(self) -> dict[tuple[str, int], set[int]]:
        return await kafka_positions(self.kit.kafka_bootstrap, self.kit.topic_prefix)

    async def logged(self, dsn: str | None = None) -> dict[tuple[str, int], list[int]]:
        return await log_positions(dsn or self.kit.database_url, self.kit.topic_prefix)

    async def matches(self, dsn: str | None = None) -> bool:
        return await log_matches_kafka(self.kit, dsn)


@pytest.fixture
def probe(kit: KitSettings) -> AuditProbe:
    """An `AuditProbe` for this test's prefix."""
    return AuditProbe(kit)


async def kafka_positions(bootstrap: str, prefix: str) -> dict[tuple[str, int], set[int]]:
    """Every offset Kafka holds in the prefix's topics, per partition (no compaction or transactions here)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, **kafka_options(KitSettings(), ADMIN), enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        topics = [t for t in await consumer.topics() if t.startswith(prefix)]
        tps = [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()]
        begin = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    return {(tp.topic, tp.partition): set(range(begin[tp], end[tp])) for tp in tps if end[tp] > begin[tp]}


async def log_positions(dsn: str, prefix: str) -> dict[tuple[str, int], list[int]]:
    """Every (topic, partition) → offsets recorded in the audit log for the prefix's topics."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT topic, partition, kafka_offset FROM audit.log WHERE starts_with(topic, $1) ORDER BY topic, partition, seq", prefix
        )
    except asyncpg.UndefinedTableError:  # the service (a subprocess, say) has not migrated yet
        rows = []
    finally:
        await conn.close()
    out: dict[tuple[str, int], list[int]] = {}
    for r in rows:
        out.setdefault((r["topic"], r["partition"]), []).append(r["kafka_offset"])
    return out


async def log_matches_kafka(kit: KitSettings, dsn: str | None = None) -> bool:
    """Whether the log holds exactly the records Kafka holds, each once."""
    kafka = await kafka_positions(kit.kafka_bootstrap, kit.topic_prefix)
    logged = await log_positions(dsn or kit.database_url, kit.topic_prefix)
    return {tp: sorted(o) for tp, o in kafka.items()} == logged


def sent_count(positions: dict[Any, Any]) -> int:
    """Total records in a positions map."""
    return sum(len(v) for v in positions.values())
