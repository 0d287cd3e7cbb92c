"""What the polled batch being handled has published, and what waits for the broker to acknowledge it.

Inside a polled batch (`Bus.acknowledged_at_end`) a publish returns once its record is queued: the
batch keeps each delivery (`Delivery`, owed to the input whose handler published it) and waits for
all of them as it ends. What must not happen before the broker has stored what was published (a
handler marking its outbox entries delivered) goes through `once_delivered` or
`once_delivered_together`, and runs then. A record Kafka refuses for good that no one input is known
to have published is `OutputRefused`. The batch's state reaches the publish path through context
variables, set by the bus's consume path (`servicekit._bus_handle`, `servicekit._bus_subscribe`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

from servicekit.commits import Commits
from servicekit.kafka_record import KafkaRecord
from servicekit.producer import Headers
from servicekit.refusals import refusal_name

__all__ = [
    "BatchDeliveries",
    "Delivery",
    "OutputRefused",
    "Refusal",
    "batch_commits",
    "batch_deliveries",
    "once_delivered",
    "once_delivered_together",
    "publishing_for",
]

T = TypeVar("T")


@dataclass(frozen=True)
class Delivery:
    """A record published inside a polled batch, as it was sent (to send it again alone), and the input it is owed to."""

    future: asyncio.Future[Any]  # the broker's acknowledgement
    topic: str  # catalog name
    key: bytes | None
    value: bytes
    headers: Headers
    identity: str | bytes  # the event's id, else its bytes (`Recorded.identity`)
    source: KafkaRecord | None  # the input being handled when it was published (`handle_event`), if one was


Refusal = tuple[Delivery, BaseException]  # a record Kafka refused for good, and its error


class OutputRefused(Exception):
    """Kafka refused for good what a polled batch published, and no one input is known to have published it (a batch handler's)."""

    def __init__(self, refused: Sequence[Refusal]) -> None:
        super().__init__("; ".join(_refused_text(d, exc) for d, exc in refused))
        self.refused = list(refused)


def _refused_text(delivery: Delivery, exc: BaseException) -> str:
    return f"{refusal_name(exc)} for {delivery.topic} ({len(delivery.value)} bytes)"


@dataclass
class BatchDeliveries:
    """What the polled batch being handled has published: the acknowledgements it waits for, and what waits for them."""

    unacked: list[Delivery] = field(default_factory=list)
    unowned: list[Refusal] = field(default_factory=list)  # refused for good before its input was known (`confirm_published`)
    after: list[Callable[[], Awaitable[Any]]] = field(default_factory=list)  # `once_delivered`
    sent: set[str | bytes] = field(default_factory=set)  # `Recorded.identity`: a redelivery inside the batch publishes nothing twice
    together: dict[str, tuple[Callable[[list[Any]], Awaitable[Any]], list[Any]]] = field(default_factory=dict)  # by key


batch_deliveries: ContextVar[BatchDeliveries | None] = ContextVar("tidegate_batch_deliveries", default=None)
# The offsets of the polled batch being handled, when they are committed at intervals (`Bus.on_polled`).
batch_commits: ContextVar[Commits | None] = ContextVar("tidegate_batch_commits", default=None)
# The input record whose handler runs (`Bus.handle_event`): what it publishes is owed to it.
publishing_for: ContextVar[KafkaRecord | None] = ContextVar("tidegate_publishing_for", default=None)


async def once_delivered(action: Callable[[], Awaitable[Any]]) -> None:
    """Run `action` once every event published so far is acknowledged by the broker.

    Inside a polled batch (`Bus.acknowledged_at_end`) a publish returns when its record is queued,
    so a handler that marks an outbox entry delivered right after publishing would mark it before
    the broker stored it; if the delivery then fails the batch is handled again, finds the entry
    gone and publishes nothing. Such marks go through here: in a batch they run after the
    acknowledgements and before the offsets are committed; elsewhere a publish has waited, so now.
    """
    batch = batch_deliveries.get()
    if batch is None:
        await action()
    else:
        batch.after.append(action)


async def once_delivered_together(key: str, items: Sequence[T], action: Callable[[list[T]], Awaitable[Any]]) -> None:
    """`once_delivered` for what many handlers mark: `action` runs once, with every item given under `key`.

    In a polled batch whose offsets are committed at intervals (`servicekit.commits`), the items of
    every batch since the last commit are gathered and `action` runs right before the next commit,
    after everything those batches published is acknowledged: a service that deletes its delivered
    outbox entries pays one statement per commit, not one per event at a steady rate. In any other
    batch it runs once the batch is acknowledged; outside a batch a publish has waited, so now.
    """
    batch = batch_deliveries.get()
    if batch is None:
        await action(list(items))
        return
    batch.together.setdefault(key, (action, []))[1].extend(items)
