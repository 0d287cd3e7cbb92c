"""The policy service's consumer: `actions.proposed` decided a polled batch at a time (one transaction, one round of publishing).

The kit's `Bus.consume` hands events to a handler one at a time, which costs a commit and two
acknowledged publishes per decision. Proposals are independent, so the policy service decides each
polled batch in one unit of work. The kit's guarantees are kept: invalid messages are dead-lettered,
transient errors are retried with capped backoff (this is the layer that retries the batch), and a
batch that fails for any other reason is handled again one event at a time through
`Bus.handle_record`, so that only the bad event is dead-lettered. `approvals` and `actions.results`
ride on the same consumer, one event at a time: a single member in the service's group, so starting
the service does not make the group rebalance against itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder
from faststream import AckPolicy
from faststream.kafka.annotations import KafkaMessage
from pydantic import ValidationError

from schemas import CONTENT_TYPE, ReasonCode, decode
from servicekit import Bus
from servicekit.bus import TRANSIENT_ERRORS
from servicekit.metrics import observe_handled, observe_published
from services.policy.service import Outgoing

__all__ = ["DecisionPublisher", "Route", "consume_routes"]

log = logging.getLogger(__name__)

CONTENT_TYPE_BYTES = CONTENT_TYPE.encode()


@dataclass(frozen=True)
class Route:
    """How one topic's events are handled: one at a time, or (when given) a polled batch at a time."""

    handle_one: Callable[[Any], Awaitable[None]]
    handle_batch: Callable[[list[Any]], Awaitable[Any]] | None = None


def consume_routes(bus: Bus, routes: dict[str, Route], *, group_id: str, max_records: int = 500) -> None:
    """Subscribe to every topic of `routes` with ONE consumer in `group_id` (so the group never rebalances against itself)."""
    names = {bus.topic(name): name for name in routes}
    bus.subscriptions.extend(routes)

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
        by_topic: dict[str, list[Any]] = {}
        for record in raw if isinstance(raw, tuple | list) else (raw,):
            by_topic.setdefault(names[record.topic], []).append(record)
        for name, records in by_topic.items():
            route = routes[name]
            if route.handle_batch is None:
                for record in records:
                    await bus.handle_record(name, record, route.handle_one)
            else:
                await _handle_batch(bus, name, records, route.handle_batch, route.handle_one)


async def _handle_batch(
    bus: Bus,
    topic: str,
    records: list[Any],
    handle_batch: Callable[[list[Any]], Awaitable[Any]],
    handle_one: Callable[[Any], Awaitable[None]],
) -> None:
    events, kept = [], []
    for record in records:
        try:
            event = decode(topic, record.value or b"")
        except ValidationError as exc:
            errors = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(event)'}: {e['msg']}" for e in exc.errors()[:10])
            await bus.dead_letter(record, topic, ReasonCode.INVALID_EVENT, f"invalid event: {errors}")
            continue
        if bus.authority is not None and (refusal := bus.authority.check(record.value or b"", event)) is not None:
            await bus.dead_letter(record, topic, refusal.code, refusal.message)
            continue
        events.append(event)
        kept.append(record)
    if not events:
        return
    delay = 0.1
    started = time.perf_counter()
    while True:
        try:
            await handle_batch(events)
            share = (time.perf_counter() - started) / len(events)
            for event in events:
                observe_handled(bus.service, event.type, share, "ok")
            return
        except TRANSIENT_ERRORS as exc:
            log.warning("%s: transient error on a batch of %d from %s, retrying in %.1fs: %r", bus.service, len(events), topic, delay, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        except Exception:  # one bad event must not hold the others: fall back to one at a time
            log.exception("%s: batch of %d from %s failed; handling it one event at a time", bus.service, len(events), topic)
            break
    for record in kept:
        await bus.handle_record(topic, record, handle_one)


class DecisionPublisher:
    """Publishes many recorded events at once on a plain idempotent producer, in record batches we fill ourselves.

    Decisions skip the broker's per-message middleware and `send`'s per-message bookkeeping: at
    hundreds of decisions per poll they cost more than the decision itself. Events are grouped by
    partition (the key's murmur2 partition, as every Kafka producer picks it, so a task's events
    keep their order), appended to record batches, and each full batch is submitted; all acks are
    awaited together. Each event still carries its `traceparent` (the evaluation span), in the event
    and in the header, so the trace chain is unbroken. The producer is created in `start`, inside
    the running event loop.
    """

    def __init__(self, bootstrap: str, prefix: str, *, service: str) -> None:
        self._service = service
        self._client_id = f"tidegate-{service}-decisions"
        self._bootstrap = bootstrap
        self._prefix = prefix
        self._producer: AIOKafkaProducer | None = None
        self._partitioner = DefaultPartitioner()

    async def start(self) -> None:
        """Connect the producer (acks from all replicas, idempotent)."""
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap, client_id=self._client_id, acks="all", enable_idempotence=True, linger_ms=1
        )
        await self._producer.start()

    async def stop(self) -> None:
        """Flush and close the producer."""
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def publish_many(self, events: list[Outgoing]) -> None:
        """Send `events` in order; return when the broker has acknowledged them all."""
        producer = self._producer
        if producer is None:
            raise ConnectionError("decision publisher not started")
        partitions: dict[str, list[int]] = {}
        open_batches: dict[tuple[str, int], BatchBuilder] = {}
        futures = []
        for e in events:
            topic = self._prefix + e.topic
            if topic not in partitions:
                partitions[topic] = sorted(await producer.partitions_for(topic))
            partition = self._partitioner(e.key, partitions[topic], partitions[topic])
            headers = [("content-type", CONTENT_TYPE_BYTES)] + ([("traceparent", e.traceparent.encode())] if e.traceparent else [])
            batch = open_batches.get((topic, partition))
            if batch is None:
                batch = open_batches[topic, partition] = producer.create_batch()
            if batch.append(key=e.key, value=e.value, timestamp=None, headers=headers) is None:  # full: submit it, start the next
                futures.append(await producer.send_batch(batch, topic, partition=partition))
                batch = open_batches[topic, partition] = producer.create_batch()
                batch.append(key=e.key, value=e.value, timestamp=None, headers=headers)  # a first record always fits
        for (topic, partition), batch in open_batches.items():
            futures.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*futures)
        for e in events:
            if e.event is not None:  # counted once, when decided (what `Bus.publish` does for every other event)
                observe_published(self._service, e.event)
