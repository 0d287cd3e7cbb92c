"""How the kit's consumers poll, and a polled batch handed to a handler as raw aiokafka records, whatever their headers hold.

FastStream's batch parser decodes every header value as UTF-8: one binary header from a plain Kafka
client would fail the whole batch before any handler runs (and, since a failed batch is rewound,
forever). Every consumer of the kit and the audit uses these instead, and `wait_in_fetch`.
"""

from __future__ import annotations

import asyncio
import dataclasses
from itertools import chain
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord

__all__ = ["POLL_WAIT_MS", "raw_decoder", "tolerant_parser", "wait_in_fetch"]

# How long one poll waits for records when there are none. aiokafka's `getmany` returns as soon as a
# record is fetched, so this costs no latency; it only bounds how often an idle consumer wakes up.
POLL_WAIT_MS = 1_000


def wait_in_fetch(subscriber: Any, *, max_records: int, linger_ms: int = 0) -> None:
    """Make a FastStream batch subscriber wait for records inside the fetch, never in a sleep between short polls.

    FastStream's batch loop polls with `getmany(timeout_ms=batch_timeout_ms)` and sleeps as long
    again after a poll that found nothing: a short timeout wakes an idle consumer ~50 times a second
    (most of a service's idle CPU), a long one makes a record that arrives during the sleep wait it
    out. aiokafka's `getmany` returns as soon as any record is fetched, so the kit's consumers poll
    with a long `POLL_WAIT_MS` and no sleep. With `linger_ms`, a batch that is not full waits that
    long once for more records (the audit writes fewer, larger transactions); records keep their
    order per partition.
    """

    async def get_msg(consumer: AIOKafkaConsumer) -> tuple[ConsumerRecord[Any, Any], ...]:
        polled = await consumer.getmany(timeout_ms=POLL_WAIT_MS, max_records=max_records)
        records = tuple(chain.from_iterable(polled.values()))
        if records and linger_ms > 0 and len(records) < max_records:
            await asyncio.sleep(linger_ms / 1000)
            more = await consumer.getmany(timeout_ms=0, max_records=max_records - len(records))
            records += tuple(chain.from_iterable(more.values()))
        return records

    subscriber.get_msg = get_msg  # FastStream's consume loop calls `self.get_msg(consumer)`


def _utf8(value: bytes | None) -> bool:
    if value is None:
        return False
    try:
        value.decode()
    except UnicodeDecodeError:
        return False
    return True


async def tolerant_parser(records: Any, original: Any) -> Any:
    """Parse a batch whose headers may not be UTF-8, keeping the real records raw.

    FastStream's batch parser decodes header values as UTF-8 and would fail the whole batch on one
    binary header; it parses a copy with such headers blanked instead.
    """
    try:
        return await original(records)  # the common case, without scanning every header first
    except (UnicodeDecodeError, AttributeError):  # a binary header, or a header without a value
        pass
    batch = records if isinstance(records, tuple | list) else (records,)
    safe = tuple(dataclasses.replace(r, headers=[(k, v if _utf8(v) else b"") for k, v in r.headers]) for r in batch)
    message = await original(safe)
    message.raw_message = records
    return message


async def raw_decoder(message: Any) -> Any:
    """The polled records as they are (a tuple): what the kit's batch handlers take as their one argument.

    FastStream's default decoder would also decode headers as UTF-8. And a handler that took the
    message through FastStream's context (`msg: KafkaMessage`) would pay a worker-thread round trip
    per batch: fast_depends resolves a `Context` field, a plain function, with `anyio.to_thread`.
    """
    raw = message.raw_message
    return tuple(raw) if isinstance(raw, tuple | list) else (raw,)
