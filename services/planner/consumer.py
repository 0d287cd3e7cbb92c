"""The planner's consumer: a polled batch is handled task by task, different tasks concurrently.

The kit's `Bus.consume` handles a batch one event at a time; for the planner each event waits on
a few database round trips and an acknowledged publish, so the planner was the slowest stage of the
pipeline. Events of one task stay in order (grouped by Kafka key, the task id); groups of different
tasks run concurrently, bounded by `concurrency`. Each event still goes through
`Bus.handle_record`, so validation, dead-lettering and the transient-error retries of the kit apply
unchanged, and offsets are committed only after the whole batch is handled.
"""

from __future__ import annotations

import asyncio
from typing import Any

from faststream import AckPolicy
from faststream.kafka.annotations import KafkaMessage

from servicekit import Bus, Handler

__all__ = ["consume_by_task"]


def consume_by_task(bus: Bus, routes: dict[str, Handler], *, group_id: str, max_records: int, concurrency: int) -> None:
    """Subscribe to every topic of `routes` with one consumer in `group_id`; handle each batch grouped by task."""
    names = {bus.topic(name): name for name in routes}

    @bus.broker.subscriber(
        *names,
        group_id=group_id,
        batch=True,
        max_records=max_records,
        batch_timeout_ms=100,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.ACK,
        title=f"{bus.service}:{','.join(routes)}",
    )
    async def _on_batch(msg: KafkaMessage) -> None:
        raw = msg.raw_message
        records: list[Any] = list(raw) if isinstance(raw, tuple | list) else [raw]
        by_task: dict[bytes | None, list[Any]] = {}
        for record in records:
            by_task.setdefault(record.key, []).append(record)
        gate = asyncio.Semaphore(concurrency)

        async def handle(group: list[Any]) -> None:
            async with gate:
                for record in group:
                    name = names[record.topic]
                    await bus.handle_record(name, record, routes[name])

        await asyncio.gather(*(handle(group) for group in by_task.values()))
        for record in records:
            key = (record.topic, record.partition)
            bus.positions[key] = max(bus.positions.get(key, 0), record.offset + 1)
