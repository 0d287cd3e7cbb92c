"""Helpers of the audit's security tests: `tidegate audit …` as an operator runs it, and what the bus holds to compare with."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from typer.testing import CliRunner

from servicekit import ADMIN, KitSettings, kafka_options
from tidegate.cli import app as cli

__all__ = ["audit_cli", "bus_records"]


async def audit_cli(kit: KitSettings, *args: str) -> Any:
    """`tidegate audit <args>` against `kit`'s database, broker, keys and topic prefix (the CLI's result)."""
    env = {
        "TIDEGATE_DATABASE_URL": kit.database_url,
        "TIDEGATE_KAFKA_BOOTSTRAP": kit.kafka_bootstrap,
        "TIDEGATE_KEYS_DIR": str(kit.keys_dir),
        "TIDEGATE_TOPIC_PREFIX": kit.topic_prefix,
    }
    return await asyncio.to_thread(CliRunner().invoke, cli, ["audit", *args], env=env)


async def bus_records(kit: KitSettings, topic: str) -> list[Any]:
    """The records of partition 0 of `topic` from its beginning, as the bus holds them (one fetch, up to 10 s)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=kit.kafka_bootstrap, enable_auto_commit=False, **kafka_options(kit, ADMIN))
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        return list((await consumer.getmany(tp, timeout_ms=10_000))[tp])
    finally:
        await consumer.stop()
