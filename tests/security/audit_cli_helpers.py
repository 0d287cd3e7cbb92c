"""Helpers of the audit's security tests: `tidegate audit …` as an operator runs it, what the bus holds to compare with, the
audit's own database login as an attacker uses it, and what the log holds."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from typer.testing import CliRunner

from servicekit import ADMIN, KitSettings, kafka_options
from servicekit.dbroles import service_database_url
from tidegate.cli import app as cli

__all__ = ["as_audit_login", "audit_cli", "bus_records", "logged_offsets", "rows"]


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


async def as_audit_login(kit: KitSettings, sql: str, *args: Any) -> str:
    """Run `sql` as the audit service's own database login, as the service writes (its writer role): its status."""
    conn = await asyncpg.connect(service_database_url(kit, "audit"))
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL ROLE tidegate_audit_writer")
            return str(await conn.execute(sql, *args))
    finally:
        await conn.close()


async def rows(kit: KitSettings, sql: str, *args: Any) -> list[asyncpg.Record]:
    """What `sql` reads, as the operator."""
    conn = await asyncpg.connect(kit.database_url)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def logged_offsets(kit: KitSettings, topic: str) -> list[int]:
    """The offsets of `topic` the log holds, in chain order (tests write partition 0 only)."""
    return [r["kafka_offset"] for r in await rows(kit, "SELECT kafka_offset FROM audit.log WHERE topic = $1 ORDER BY seq", topic)]


async def offsets_logged(kit: KitSettings, topic: str, expected: list[int]) -> bool:
    """Whether the log holds exactly the offsets `expected` of `topic`, in chain order (a condition to wait for)."""
    return await logged_offsets(kit, topic) == expected
