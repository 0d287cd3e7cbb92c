"""The bytes an event being handled was decoded from: for a handler that keeps a producer's signed event as it came.

A signature covers the document as its producer sent it, so only those bytes verify again later (an event decoded
and dumped again loses what this release does not know of it). The consume paths say which bytes each event came
from: `Bus.handle_event` through `publishing_for` (the record its handler runs for), a polled batch through
`receiving` (`servicekit.consume`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from aiokafka import ConsumerRecord

from servicekit.deliveries import publishing_for

__all__ = ["received", "receiving"]

# The records of the polled batch being handled, by the identity of the event each was decoded into.
_batch: ContextVar[dict[int, ConsumerRecord[Any, Any]] | None] = ContextVar("tidegate_received_batch", default=None)


@contextmanager
def receiving(events: Sequence[Any], records: Sequence[ConsumerRecord[Any, Any]]) -> Iterator[None]:
    """While a batch handler runs: `events[i]` was decoded from `records[i]`."""
    token = _batch.set({id(event): record for event, record in zip(events, records, strict=True)})
    try:
        yield
    finally:
        _batch.reset(token)


def received(event: Any) -> bytes | None:
    """The bytes `event` was decoded from, while its handler runs; None outside a consume path (a test, a replay)."""
    batch = _batch.get()
    record = batch.get(id(event)) if batch is not None else publishing_for.get()
    return None if record is None else record.value
