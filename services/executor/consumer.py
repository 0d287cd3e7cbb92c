"""Consuming `actions.authorized` with calls of different tasks in flight at once.

Tool calls spend most of their time waiting (on PostgreSQL, an HTTP API, an outside service), so one
executor process runs the records of a polled batch concurrently, one lane per Kafka key (the task
id): a task's actions stay in order, different tasks overlap. Offsets are committed only after the
whole batch is handled, as with `Bus.consume`, so delivery stays at least once and the claims keep
execution at most once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from faststream import AckPolicy
from faststream.kafka.annotations import KafkaMessage

from servicekit import Bus, Handler

__all__ = ["consume_by_key", "handle_by_key"]


def consume_by_key(bus: Bus, topic: str, handler: Handler, *, group_id: str, concurrency: int, max_records: int = 500) -> None:
    """Subscribe `handler` to catalog topic `topic` in `group_id`, at most `concurrency` records at a time."""
    slots = asyncio.Semaphore(concurrency)

    @bus.broker.subscriber(
        bus.topic(topic),
        group_id=group_id,
        batch=True,
        max_records=max_records,
        batch_timeout_ms=100,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.ACK,
        title=f"{bus.service}:{topic}",
    )
    async def _on_batch(msg: KafkaMessage) -> None:
        raw: Any = msg.raw_message
        await handle_by_key(bus, topic, handler, raw if isinstance(raw, tuple | list) else (raw,), slots)


async def handle_by_key(bus: Bus, topic: str, handler: Handler, records: Sequence[Any], slots: asyncio.Semaphore) -> None:
    """Handle one polled batch: records of one key in order, different keys concurrently within `slots`."""
    lanes: dict[bytes | None, list[Any]] = {}
    for record in records:
        lanes.setdefault(record.key, []).append(record)

    async def run(lane: list[Any]) -> None:
        for record in lane:
            async with slots:
                await bus.handle_record(topic, record, handler)

    await asyncio.gather(*(run(lane) for lane in lanes.values()))
    for record in records:
        position = (record.topic, record.partition)
        bus.positions[position] = max(bus.positions.get(position, 0), record.offset + 1)
