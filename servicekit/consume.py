"""The kit's consumers in batch and raw mode, beside `Bus.consume` (one event at a time).

Every mode polls through the kit's own consumer loop (`servicekit.polling`, `Bus.poller`) and hands
its polled batches, the records as aiokafka returns them, over through `Bus.on_polled`: a batch's
offsets are committed only once every record is handled or dead-lettered and what the handlers
published is acknowledged (`Bus.acknowledged_at_end`), gathered over `Bus.commit_interval_s`, and
the batch is rewound if the handler raises anyway.

- `consume_routes`: several topics on ONE consumer of the service's group (the group never
  rebalances against itself); each topic's events are decoded once by `Bus.decode_record` (bounds,
  contract, signature; what fails is dead-lettered alone) and handled one at a time, or, when the
  route has `handle_batch`, a polled batch at a time in one unit of work. A poll's topics are handled
  in the order of `routes`, not in the order the poll returned them: a service lists first the topics
  whose events the others build on (the policy learns a task's input before it decides the task's
  proposals). A handler that must wait for another topic's events reads that topic on another
  consumer (another group): on the same one, those events would queue behind the waiting handler.
  A batch retried by `Bus.retrying` while errors are transient, and failing for any other reason, is
  handled again one event at a time through `Bus.handle_event`, so that only the bad event is
  dead-lettered; so is a batch that published an event Kafka refuses for good (`Bus.confirm_published`),
  so that only the event whose handling publishes it is dead-lettered (`output_too_large`, `output_refused`).
- `consume_raw`: the polled records as they are, for a consumer that keeps what it cannot decode
  (the audit log records every record of every topic).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from servicekit.bus import Bus, Handler, OutputRefused, Reject
from servicekit.kafka_record import KafkaRecord
from servicekit.metrics import observe_handled
from servicekit.received import receiving
from servicekit.tracing import Attr, batch_span

__all__ = ["RawHandler", "Route", "consume_raw", "consume_routes"]

log = logging.getLogger(__name__)

BatchHandler = Callable[[list[Any]], Awaitable[Any]]
RawHandler = Callable[[Sequence[KafkaRecord]], Awaitable[Any]]


@dataclass(frozen=True)
class Route:
    """How one topic's events are handled: one at a time, or (when given) a polled batch at a time."""

    handle_one: Handler
    handle_batch: BatchHandler | None = None


def consume_routes(
    bus: Bus,
    routes: dict[str, Route],
    *,
    group_id: str,
    max_records: int = 500,
    fetch_min_bytes: int = 1,
    fetch_max_wait_ms: int | None = None,
) -> None:
    """Subscribe to every topic of `routes` with ONE consumer in `group_id` (so the group never rebalances against itself).

    The topics of a poll are handled in the order of `routes`.

    A consumer off the path from proposal to result (the approval service) can trade latency for
    larger batches: with `fetch_min_bytes` the broker holds each fetch until that much is there, or
    `fetch_max_wait_ms` passed (Kafka's `fetch.min.bytes` and `fetch.max.wait.ms`).
    """
    names = {bus.topic(name): name for name in routes}
    title = f"{bus.service}:{','.join(routes)}"
    bus.subscriptions.extend(routes)
    poller = bus.poller(
        title,
        topics=list(names),
        group_id=group_id,
        max_records=max_records,
        fetch_min_bytes=fetch_min_bytes,
        fetch_max_wait_ms=fetch_max_wait_ms,
    )

    async def handle(polled: Sequence[KafkaRecord]) -> None:
        by_topic: dict[str, list[Any]] = {}
        for record in polled:
            by_topic.setdefault(names[record.topic], []).append(record)
        for name, route in routes.items():  # the order of `routes`: what the later topics build on first
            if (records := by_topic.get(name)) is None:
                continue
            async with bus.acknowledged_at_end():  # what the handlers publish is acknowledged before the records count as handled
                if route.handle_batch is None:
                    for record in records:
                        await bus.handle_record(name, record, route.handle_one)
                else:
                    with bus.liveness.running():
                        await _handle_batch(bus, name, records, route.handle_batch, route.handle_one)
            for record in records:
                bus.mark_handled(record)

    bus.on_polled(poller, handle, name=title)


async def _handle_batch(bus: Bus, topic: str, records: Sequence[KafkaRecord], handle_batch: BatchHandler, handle_one: Handler) -> None:
    events, kept = [], []
    for record in records:
        event = await bus.decode_record(topic, record)  # None: dead-lettered alone, with the reason
        if event is not None:
            events.append(event)
            kept.append(record)
    if not events:
        return
    started = time.perf_counter()
    attributes = {Attr.SERVICE: bus.service, Attr.TOPIC: topic, Attr.BATCH_SIZE: len(events)}
    alone = False
    try:  # one span for the batch, linked to every event's trace; work done per event opens spans in the event's trace
        links = [e.traceparent for e in events]
        # `receiving`: a handler that keeps a signed event as it came finds its bytes (`servicekit.received`)
        with batch_span(f"{bus.service} handle batch {topic}", attributes=attributes, links=links), receiving(events, kept):
            await bus.retrying(f"a batch of {len(events)} from {topic}", lambda: handle_batch(events))
    except Reject as refused:  # a handler's refusal of one event (an agent's reused action id): expected input, not a fault
        what = f"{refused.code}: {refused.message}"[:300]
        log.info("%s: batch of %d from %s refused one event (%s); handling it one event at a time", bus.service, len(events), topic, what)
        alone = True
    except Exception:  # one bad event must not hold the others: fall back to one at a time
        log.exception("%s: batch of %d from %s failed; handling it one event at a time", bus.service, len(events), topic)
        alone = True
    try:  # which event published what Kafka refuses for good is known only one event at a time
        await bus.confirm_published()
    except OutputRefused as refused:
        log.warning("%s: Kafka refuses %s, published by a batch from %s; handling it one event at a time", bus.service, refused, topic)
        alone = True
    if alone:
        for record, event in zip(kept, events, strict=True):  # what the batch published is not published again, but the refused
            await bus.handle_event(record, event, handle_one)
        return
    share = (time.perf_counter() - started) / len(events)
    for event in events:
        observe_handled(bus.service, event.type, share, "ok")


def consume_raw(
    bus: Bus,
    handler: RawHandler,
    *,
    pattern: str,
    group_id: str,
    max_records: int,
    batch_timeout_ms: int,
    max_partition_fetch_bytes: int,
    title: str,
    fetch_min_bytes: int = 1,
    fetch_max_wait_ms: int | None = None,
    metadata_max_age_ms: int = 300_000,
    on_assigned: Callable[[AIOKafkaConsumer, set[TopicPartition]], Awaitable[None]] | None = None,
) -> None:
    """Hand every polled batch of the topics matching `pattern` to `handler` as raw records; committed after it returns.

    A batch that is not full waits `batch_timeout_ms` once for more records before it is handed over.
    With `fetch_min_bytes` the broker holds each fetch until that much is there, or `fetch_max_wait_ms`
    passed: a consumer of every topic then pays one fetch (requests and answers naming every
    partition) and one batch per interval, not per event. A topic created later that matches
    `pattern` is read within `metadata_max_age_ms`. `on_assigned` is awaited whenever the consumer is given partitions,
    before it fetches from them: it may seek them to where the handler's own store says to start (the group's committed
    offsets are only where to start otherwise).
    """
    poller = bus.poller(
        title,
        pattern=pattern,
        group_id=group_id,
        max_records=max_records,
        linger_ms=batch_timeout_ms,
        max_partition_fetch_bytes=max_partition_fetch_bytes,
        fetch_min_bytes=fetch_min_bytes,
        fetch_max_wait_ms=fetch_max_wait_ms,
        metadata_max_age_ms=metadata_max_age_ms,
    )
    poller.on_assigned = on_assigned

    async def handle(records: Sequence[KafkaRecord]) -> None:
        with bus.liveness.running():
            async with bus.acknowledged_at_end():
                await handler(records)
        for record in records:
            bus.mark_handled(record)

    bus.on_polled(poller, handle, name=title)
