"""Helpers of the planner's restore tests: a database of the test's own, dumped and restored whole as an operator would."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from servicekit import ADMIN, KitSettings, kafka_options
from servicekit.bus_history import handled_offsets
from servicekit.dbroles import with_database
from services.planner.app import READS, consumer_group

# The task's row as the planner ends it: compared before the restore and after the catch-up.
TASK = "SELECT status, reason, counts, human_touches, summary FROM planner.tasks WHERE tenant_id = 'acme' AND task_id = $1"
STEPS = (
    "SELECT step, action_id, tool, status, decision, approval_id FROM planner.steps WHERE tenant_id = 'acme' AND task_id = $1 ORDER BY step"
)
PAID = "SELECT count(*) FROM payments.refunds WHERE tenant_id = 'acme' AND order_id = $1"


def psql(admin_url: str, sql: str) -> None:
    subprocess.run(["psql", admin_url, "-qc", sql], check=True, capture_output=True)


def dump(admin_url: str, to: Path) -> None:
    """The backup: the database whole (`pg_dump`, every schema)."""
    subprocess.run(["pg_dump", "-Fc", "-d", admin_url, "-f", str(to)], check=True, capture_output=True)


def restore(admin_url: str, dump: Path) -> None:
    """Drop the database and restore it whole from `dump`, as an operator restores last night's backup."""
    name = admin_url.split("?")[0].rsplit("/", 1)[1]
    other = with_database(admin_url, "postgres")
    psql(other, f"DROP DATABASE {name} WITH (FORCE)")
    psql(other, f"CREATE DATABASE {name} OWNER tidegate")
    subprocess.run(["pg_restore", "--exit-on-error", "-d", admin_url, str(dump)], check=True, capture_output=True)


async def ended(pool: asyncpg.Pool, task_id: str) -> Any:
    """The task's row once it has ended (completed or failed), else None."""
    row = await pool.fetchrow(TASK, task_id)
    return row if row is not None and row["status"] in ("completed", "failed") else None


async def as_ended(pool: asyncpg.Pool, task_id: str) -> tuple[Any, ...]:
    """What the planner holds of an ended task: its row and each step, as plain values."""
    row = await pool.fetchrow(TASK, task_id)
    steps = await pool.fetch(STEPS, task_id)
    return (tuple(row.values()) if row else None, [tuple(s.values()) for s in steps])


async def planner_caught_up(kit: KitSettings) -> bool:
    """Whether the planner's group has committed every topic it reads up to its end: nothing is left for it to handle."""
    options = kafka_options(kit, ADMIN)
    consumer = AIOKafkaConsumer(bootstrap_servers=kit.kafka_bootstrap, enable_auto_commit=False, **options)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()  # no public metadata refresh in aiokafka
        for name in READS:
            group = consumer_group(kit.topic_prefix)
            handled = await handled_offsets(kit.kafka_bootstrap, kit.topic_prefix, name, group, client_options=options)
            tps = [TopicPartition(kit.topic_prefix + name, p) for p in consumer.partitions_for_topic(kit.topic_prefix + name) or ()]
            ends = await consumer.end_offsets(tps)
            if any(handled.get(tp.partition, 0) < end for tp, end in ends.items()):
                return False
        return True
    finally:
        await consumer.stop()
