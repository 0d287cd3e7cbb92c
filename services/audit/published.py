"""The copy of the checkpoints that lives outside the database: the `audit.checkpoints` topic."""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer
from pydantic import ValidationError

from schemas import AuditCheckpoint, decode
from servicekit import Keyring
from servicekit.partitions import partitions_of
from services.audit.checkpoints import CHECKPOINT_TOPIC, Checkpoint, signature_valid

__all__ = ["LATEST_TAIL", "latest_published_checkpoint", "read_published_checkpoints"]

LATEST_TAIL = 100
"""How many of the newest records `latest_published_checkpoint` reads: only the audit publishes there, one checkpoint a record."""


async def read_published_checkpoints(
    bootstrap: str, prefix: str, *, timeout_s: float = 30.0, client_options: dict[str, Any] | None = None
) -> list[Checkpoint]:
    """Every checkpoint published on `<prefix>audit.checkpoints`, read from the beginning to the current end."""
    return await _read(bootstrap, prefix, timeout_s=timeout_s, client_options=client_options)


async def latest_published_checkpoint(
    bootstrap: str,
    prefix: str,
    keyring: Keyring,
    *,
    tail: int = LATEST_TAIL,
    timeout_s: float = 30.0,
    client_options: dict[str, Any] | None = None,
) -> Checkpoint | None:
    """The published checkpoint with the highest id among the topic's last `tail` records that a trusted audit key signed."""
    signed = [
        cp
        for cp in await _read(bootstrap, prefix, tail=tail, timeout_s=timeout_s, client_options=client_options)
        if signature_valid(keyring, cp)
    ]
    return max(signed, key=lambda cp: cp.checkpoint_id, default=None)


async def _read(
    bootstrap: str, prefix: str, *, tail: int | None = None, timeout_s: float, client_options: dict[str, Any] | None
) -> list[Checkpoint]:
    """The checkpoints on `<prefix>audit.checkpoints` by id: all of them, or those among the last `tail` records of each partition."""
    topic = prefix + CHECKPOINT_TOPIC
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest", **(client_options or {})
    )
    await consumer.start()
    found: dict[int, Checkpoint] = {}
    try:
        tps = await partitions_of(consumer, [topic])
        if not tps:
            return []
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        begins = await consumer.beginning_offsets(tps)
        for tp, end in ends.items():
            consumer.seek(tp, begins[tp] if tail is None else max(begins[tp], end - tail))
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            batches = await consumer.getmany(*tps, timeout_ms=int(timeout_s * 1000))
            if not batches:
                raise TimeoutError(f"{topic}: no progress reading checkpoints in {timeout_s}s")
            for records in batches.values():
                for record in records:
                    if (cp := _checkpoint_of(record.value, prefix)) is not None:
                        found.setdefault(cp.checkpoint_id, cp)
    finally:
        await consumer.stop()
    return [found[k] for k in sorted(found)]


def _checkpoint_of(value: bytes | None, prefix: str) -> Checkpoint | None:
    """The checkpoint a record of the topic publishes; None for anything else (the audit log records it as an invalid record)."""
    try:
        event = decode(CHECKPOINT_TOPIC, value or b"")
    except ValidationError:
        return None
    if not isinstance(event, AuditCheckpoint):
        return None
    d = event.data
    try:
        return Checkpoint(
            scope=prefix,
            checkpoint_id=d.checkpoint_id,
            taken_at=d.taken_at or event.time,
            heads=d.heads,
            rows=d.rows,
            key_id=d.key_id,
            signature=d.signature,
        )
    except ValidationError:  # heads that are not chain heads: no checkpoint the audit signed
        return None
