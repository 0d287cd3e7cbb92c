"""The copy of the checkpoints that lives outside the database: the `audit.checkpoints` topic."""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from schemas import AuditCheckpoint, decode
from services.audit.checkpoints import CHECKPOINT_TOPIC, Checkpoint

__all__ = ["read_published_checkpoints"]


async def read_published_checkpoints(
    bootstrap: str, prefix: str, *, timeout_s: float = 30.0, client_options: dict[str, Any] | None = None
) -> list[Checkpoint]:
    """Every checkpoint published on `<prefix>audit.checkpoints`, read from the beginning to the current end."""
    topic = prefix + CHECKPOINT_TOPIC
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest", **(client_options or {})
    )
    await consumer.start()
    found: dict[int, Checkpoint] = {}
    try:
        partitions = await consumer._client.fetch_all_metadata()
        tps = [TopicPartition(topic, p) for p in partitions.partitions_for_topic(topic) or ()]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            batches = await consumer.getmany(*tps, timeout_ms=int(timeout_s * 1000))
            if not batches:
                raise TimeoutError(f"{topic}: no progress reading checkpoints in {timeout_s}s")
            for records in batches.values():
                for record in records:
                    try:
                        event = decode(CHECKPOINT_TOPIC, record.value or b"")
                    except ValidationError:
                        continue  # not a checkpoint: the audit log records it as an invalid record
                    if isinstance(event, AuditCheckpoint):
                        d = event.data
                        found.setdefault(
                            d.checkpoint_id,
                            Checkpoint(
                                scope=prefix, checkpoint_id=d.checkpoint_id, taken_at=event.time, heads=d.heads, rows=d.rows,
                                key_id=d.key_id, signature=d.signature,
                            ),
                        )  # fmt: skip
    finally:
        await consumer.stop()
    return [found[k] for k in sorted(found)]
