"""Helpers of the reliability tests: a producer that puts several records in ONE record batch, good events, the audit's view."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from signers import AdminBus, signed

from schemas import Envelope, EventRejected, encode, headers_for
from schemas.examples import sample_events
from servicekit import ADMIN, Bus, KitSettings, kafka_options

POISON = b"[" * 100_000 + b"]" * 100_000  # what made json.loads raise RecursionError in Bus.dead_letter
# Ends the sessions of one login (`$1`, a service's role) on the test database: what a restart or failover does to its pool.
KILL_ROLE_CONNECTIONS = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database() AND usename = $1"


class BatchProducer:
    """Sends records of one key as ONE record batch (`create_batch` + `send_batch`), as a plain Kafka client can."""

    def __init__(self, kit: KitSettings) -> None:
        self.kit = kit
        self.producer = AIOKafkaProducer(
            bootstrap_servers=kit.kafka_bootstrap, acks="all", max_batch_size=1024 * 1024, **kafka_options(kit, ADMIN)
        )

    async def send_batch(self, topic: str, key: bytes, values: list[bytes]) -> tuple[int, int]:
        """Send `values` in one batch on the key's partition; return (partition, base offset)."""
        full = self.kit.topic_prefix + topic
        partitions = sorted(await self.producer.partitions_for(full))
        partition = DefaultPartitioner()(key, partitions, partitions)
        batch = self.producer.create_batch()
        for value in values:
            assert batch.append(key=key, value=value, timestamp=None, headers=[("content-type", b"application/cloudevents+json")])
        metadata = await (await self.producer.send_batch(batch, full, partition=partition))
        return partition, metadata.offset


def get(url: str) -> tuple[int, dict[str, Any]]:
    """GET `url` (a service's `/health`): its status and JSON body, an error status included."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def fresh(event: Envelope, task_id: str) -> Envelope:
    """A copy of a sample event with its own event id, task and (when it has one) action id."""
    update: dict[str, Any] = {"task_id": task_id}
    if "action_id" in type(event.data).model_fields:
        update["action_id"] = f"a-{uuid.uuid4().hex[:10]}"
    data = event.data.model_copy(update=update)
    return event.model_copy(update={"id": str(uuid.uuid4()), "subject": task_id, "data": data})


def good_event(topic: str, task_id: str) -> Envelope:
    """A well-formed event for `topic` (catalog name; any `tools.*.replies` takes the sample reply)."""
    wanted = "tools.update_inventory.replies" if topic.startswith("tools.") and topic.endswith(".replies") else topic
    sample = next(e for t, e in sample_events() if t == wanted)
    return fresh(sample, task_id)


def wire(event: Envelope, kit: KitSettings) -> bytes:
    """`event` as its rightful producer would put it on the wire: signed (docs/security/signatures.md)."""
    assert headers_for(event)
    return encode(signed(event, kit))


async def audit_rows(dsn: str, topic: str, partition: int) -> dict[int, tuple[bool, str | None]]:
    """offset → (valid, invalid_reason) of what the audit log holds for one partition."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT kafka_offset, valid, invalid_reason FROM audit.log WHERE topic = $1 AND partition = $2", topic, partition
        )
    except asyncpg.UndefinedTableError:
        rows = []
    finally:
        await conn.close()
    return {r["kafka_offset"]: (r["valid"], r["invalid_reason"]) for r in rows}


async def watch_dead_letters(kit: KitSettings, rejected: list[EventRejected]) -> Bus:
    """A started bus that appends each `deadletter` record to `rejected` (stop it when done)."""
    watcher = AdminBus(kit, "watcher")

    async def on_dead(event: EventRejected) -> None:
        rejected.append(event)

    watcher.consume("deadletter", on_dead, group_id=f"{kit.topic_prefix}watcher")
    await watcher.start()
    return watcher
