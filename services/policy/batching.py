"""The policy service's publisher: decisions published a polled batch at a time, as the recorded bytes.

The consumer side (a polled batch of proposals decided in one unit of work) is the kit's
`servicekit.consume.consume_routes`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder

from schemas import CONTENT_TYPE
from servicekit.intake import ErrorKind, classify
from servicekit.metrics import observe_published
from services.policy.service import Outgoing

__all__ = ["DecisionPublisher"]

log = logging.getLogger(__name__)

CONTENT_TYPE_BYTES = CONTENT_TYPE.encode()


class DecisionPublisher:
    """Publishes many recorded events at once on a plain idempotent producer, in record batches we fill ourselves.

    Decisions skip the broker's per-message middleware and `send`'s per-message bookkeeping: at
    hundreds of decisions per poll they cost more than the decision itself. Events are grouped by
    partition (the key's murmur2 partition, as every Kafka producer picks it, so a task's events
    keep their order), appended to record batches, and each full batch is submitted; all acks are
    awaited together. Each event still carries its `traceparent` (the evaluation span), in the event
    and in the header, so the trace chain is unbroken. The producer is created in `start`, inside
    the running event loop.

    A producer that can no longer deliver (its sender task died of `OutOfOrderSequenceNumber` after
    a long broker outage, aio-libs/aiokafka#1017, or it was fenced) is replaced by a new one, and
    `publish_many` raises a transient `ConnectionError`: the caller's retry sends the same recorded
    bytes again (same event ids), on the new producer.
    """

    def __init__(self, bootstrap: str, prefix: str, *, service: str, client_options: dict[str, Any] | None = None) -> None:
        self._service = service
        self._client_id = f"tidegate-{service}-decisions"
        self._bootstrap = bootstrap
        self._prefix = prefix
        self._client_options = client_options or {}
        self._producer: AIOKafkaProducer | None = None
        self._partitioner = DefaultPartitioner()

    rebuilt: int = 0

    def _new_producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            client_id=self._client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=1,
            **self._client_options,
        )

    async def start(self) -> None:
        """Connect the producer (acks from all replicas, idempotent)."""
        self._producer = self._new_producer()
        await self._producer.start()

    async def _rebuild(self, cause: BaseException) -> None:
        """Replace a producer that can no longer deliver; its pending sends are failed and will be retried by the caller."""
        log.error("%s: decision producer can no longer deliver (%r); replacing it", self._service, cause)
        old, self._producer = self._producer, None
        if old is not None:
            with contextlib.suppress(Exception):  # it is dead: closing it may fail too
                await asyncio.wait_for(old.stop(), 10)
        producer = self._new_producer()
        await producer.start()  # raises (transient) while the broker is down; the next attempt rebuilds again
        self._producer = producer
        self.rebuilt += 1

    async def stop(self) -> None:
        """Flush and close the producer."""
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def publish_many(self, events: list[Outgoing]) -> None:
        """Send `events` in order; return when the broker has acknowledged them all."""
        producer = self._producer
        if producer is None or _sender_dead(producer):
            await self._rebuild(ConnectionError("decision producer missing or its sender task ended"))
        try:
            await self._send(events)
        except Exception as exc:
            if classify(exc) is not ErrorKind.PRODUCER_DEAD and not (self._producer is not None and _sender_dead(self._producer)):
                raise
            await self._rebuild(exc)
            raise ConnectionError(f"decision producer replaced after {exc!r}; send again") from exc

    async def _send(self, events: list[Outgoing]) -> None:
        producer = self._producer
        assert producer is not None
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


def _sender_dead(producer: AIOKafkaProducer) -> bool:
    """True when the producer's background sender ended: nothing sent on it would ever be delivered."""
    task = producer._sender.sender_task
    return task is not None and task.done()
