"""The one way to `deadletter`: a record the bus cannot accept goes there alone, with the reason, and is never skipped.

The dead letter keeps the record's raw bytes (truncated), their size and SHA-256, and whatever of its
tenant and task can be read safely; writing it is retried until it is written, for the record's offset
must not be committed before.
"""

from __future__ import annotations

import asyncio
import json

from schemas import EventRejected, EventRejectedData
from servicekit._bus_base import MAX_BACKOFF_S, log
from servicekit._bus_publish import Publishing
from servicekit.intake import Bounds, ErrorKind, check_bounds, classify, describe_raw, named_tenant_and_task, text_of
from servicekit.kafka_record import KafkaRecord

__all__ = ["DeadLettering", "raw_text"]


def raw_text(raw: bytes | None) -> str:
    """Bytes as text an event may carry (`intake.text_of`); None as the empty text."""
    return text_of(raw) if raw is not None else ""


def _utf8(value: str) -> str:
    """`value` as an event may carry it: a lone surrogate (which `json.loads` lets through) as `?`, U+0000 as U+FFFD.

    A dead letter must always build, and be read back by whoever keeps it.
    """
    return text_of(value.encode("utf-8", "replace"))


def _tenant_and_task(value: bytes | None, bounds: Bounds) -> tuple[str, str | None]:
    """Tenant and task of a value, if they can be read safely (never raises: the value may be anything)."""
    try:
        check_bounds(value, bounds)
        tenant, task = named_tenant_and_task(json.loads(value or b""))
        return tenant or "unknown", task
    except Exception:  # RecursionError, MemoryError, anything: the dead letter goes out without them
        return "unknown", None


class DeadLettering(Publishing):
    """`Bus.dead_letter`: what cannot be accepted goes to `deadletter`, published through the bus's one publish path."""

    async def dead_letter(self, record: KafkaRecord, topic: str, code: str, error: str) -> None:
        """Send an unacceptable record to `deadletter` with the reason; never raises on bad input, never skips.

        The raw value is kept truncated to 64 KiB, with its full size and SHA-256. Publishing is retried
        until the dead letter is written: the record's offset must not be committed before.
        """
        raw = describe_raw(record.value)
        tenant, task = _tenant_and_task(record.value, self.bounds)
        data = EventRejectedData(
            tenant_id=tenant,
            task_id=task,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=raw_text(record.key)[:1000] if record.key is not None else None,
            raw_value=raw.text,
            truncated=raw.truncated,
            size=raw.size,
            sha256=raw.sha256,
            code=code,
            error=_utf8(error[:4000]),
            service=self.service,
        )
        self.rejected += 1
        log.warning("rejected %s[%d]@%d: %s: %s", record.topic, record.partition, record.offset, code, error[:300])
        event = EventRejected.build(data, source=f"tidegate/{self.service}", subject=task)
        delay = 0.1
        while True:
            try:
                await self._publish("deadletter", event, wait=True)  # written before the caller goes on, inside a batch too
                return
            except Exception as exc:  # whatever it is, the record must not be skipped: wait and try again
                if classify(exc) is ErrorKind.PRODUCER_DEAD:
                    await self.producer_dead(exc)
                where = f"{record.topic}@{record.offset}"
                log.error("%s: dead letter of %s not written, retrying in %.1fs: %r", self.service, where, delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF_S)
