"""The bus's one publish path: each event signed and encoded once, queued on the service's one producer.

The producer batches records per partition (`servicekit.producer`). Inside a polled batch a publish
returns once its record is queued, and the batch keeps its delivery (`servicekit.deliveries`) for the
batch's end to wait for (`servicekit._bus_acks`); elsewhere a publish returns once the broker
acknowledged it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from schemas import CONTENT_TYPE, Envelope, encode
from servicekit import metrics
from servicekit._bus_base import BusBase
from servicekit.authority import encode_signed, sign_event
from servicekit.deliveries import Delivery, batch_deliveries, publishing_for
from servicekit.intake import ProducerDead
from servicekit.outlet import Recorded, record_event
from servicekit.producer import Headers
from servicekit.tracing import Attr, current_traceparent, span

__all__ = ["Publishing"]

_CONTENT_TYPE = CONTENT_TYPE.encode()


def _headers(traceparent: str | None) -> Headers:
    headers: Headers = [("content-type", _CONTENT_TYPE)]
    return [*headers, ("traceparent", traceparent.encode())] if traceparent else headers


class Publishing(BusBase):
    """`Bus`'s publish path: `publish`, `record`, `publish_recorded`, `publish_many`, through the one producer."""

    async def publish(self, topic: str, event: Envelope) -> None:
        """Publish `event` on catalog topic `topic`, signed, carrying the current trace context if it has none.

        An unsigned event published outside any span (a client's task) gets a publish span of its own,
        so it starts a trace. A signed event is sent exactly as signed. The `traceparent` header is
        always the envelope's.
        """
        if event.signature is None and event.traceparent is None:
            tp = current_traceparent()
            if tp is None:
                with span(f"{self.service} publish {event.type.removeprefix('tidegate.')}", attributes={Attr.SERVICE: self.service}):
                    await self._publish(topic, event)
                return
            await self._publish(topic, event, traceparent=tp)  # the context is read once, and set as the event is signed
            return
        await self._publish(topic, event)

    def sign(self, event: Envelope) -> Envelope:
        """`event` signed with this bus's key (unchanged without a key)."""
        return sign_event(event, self.signer) if self.signer is not None else event

    def record(self, topic: str, event: Envelope) -> Recorded:
        """`event` as it goes out on catalog topic `topic` (`servicekit.outlet.Outlet`): signed, encoded once, with its trace.

        An unsigned event without a trace context takes the current one. A service that stores what
        it publishes stores these bytes and publishes them (`publish_many`) on every delivery.
        """
        return record_event(topic, event, self._signed_value)

    def _signed_value(self, event: Envelope, traceparent: str | None = None) -> bytes:
        """The bytes of `self.sign(event)`, signed and encoded at once with this bus's key (`encode_signed`).

        With `traceparent`, those of the event carrying that trace context. The signed event itself is never built, nor a
        copy to carry the context; a subclass that signs its own way (tests sign as each producer) goes through `sign`.
        """
        if self.signer is not None and type(self).sign is Publishing.sign:
            return encode_signed(event, self.signer, traceparent=traceparent)
        if traceparent is not None:
            event = event.model_copy(update={"traceparent": traceparent})
        return encode(self.sign(event))

    async def _publish(self, topic: str, event: Envelope, *, wait: bool = False, traceparent: str | None = None) -> None:
        """Publish `event` (unsigned, with `traceparent` to set as it is signed; else as `record` makes it) through `_deliver`."""
        batch = batch_deliveries.get()
        if batch is not None and not wait and event.id in batch.sent:
            return  # the same recorded event again (its source redelivered in this batch): once is enough
        if traceparent is None:
            made = self.record(topic, event)
            key, value, traceparent = made.key, made.value, made.traceparent
        else:
            key, value = event.key, self._signed_value(event, traceparent)
        await self._deliver(topic, key, value, traceparent, identity=event.id, wait=wait)
        if batch is not None and not wait:
            batch.sent.add(event.id)  # only once queued: a send that raised is made again by the handler's retry
        metrics.observe_published(self.service, event)

    async def publish_recorded(self, topic: str, key: bytes | None, value: bytes, traceparent: str | None, *, wait: bool = False) -> None:
        """Publish an encoded (signed) event's bytes as they are on catalog topic `topic`; `traceparent` is the envelope's.

        The one publish path: records go to the service's one producer, which batches them per
        partition. Inside a polled batch (`acknowledged_at_end`) this returns once the record is
        queued, and the batch is committed only after the broker acknowledged every record it
        published; elsewhere (and with `wait`) it returns once the broker acknowledged this record.
        """
        await self._deliver(topic, key, value, traceparent, identity=value, wait=wait)

    async def _deliver(
        self, topic: str, key: bytes | None, value: bytes, traceparent: str | None, *, identity: str | bytes, wait: bool
    ) -> None:
        headers = _headers(traceparent)
        delivery = await self._send(topic, key, value, headers)
        batch = batch_deliveries.get()
        if delivery is None:
            return
        if batch is None or wait:
            await delivery
        else:
            batch.unacked.append(Delivery(delivery, topic, key, value, headers, identity, publishing_for.get()))

    async def publish_many(self, records: Sequence[Recorded]) -> None:
        """Publish recorded events in order, each as its stored bytes, through the one publish path (`publish_recorded`).

        They are queued together, so the producer puts those of one partition in one request; inside
        a polled batch they are acknowledged when the batch ends, elsewhere this returns once the
        broker acknowledged them all. Inside a batch an event is published once (a source redelivered
        in the same batch hands its stored records over again).
        """
        batch = batch_deliveries.get()
        if batch is not None:
            records = [r for r in records if r.identity not in batch.sent]
        deliveries = []
        for r in records:
            headers = _headers(r.traceparent)
            delivery = await self._send(r.topic, r.key, r.value, headers)
            if batch is None:
                deliveries += [delivery] if delivery is not None else []
                continue
            if delivery is not None:
                batch.unacked.append(Delivery(delivery, r.topic, r.key, r.value, headers, r.identity, publishing_for.get()))
            batch.sent.add(r.identity)  # only once queued: a send that raised is made again by the handler's retry
        await asyncio.gather(*deliveries)
        for record in records:
            if record.event is not None and not record.again:
                metrics.observe_published(self.service, record.event)

    async def _send(self, topic: str, key: bytes | None, value: bytes, headers: Headers) -> asyncio.Future[Any] | None:
        """Queue one record on the producer: its delivery (acknowledgement), or None when a stand-in delivered it."""
        if self.producer.dead():  # a send on it would wait forever (aio-libs/aiokafka#1017)
            raise ProducerDead("the producer's sender task has ended")
        return await self.producer.send(self.topic(topic), value, key=key, headers=headers)

    async def _send_alone(self, delivery: Delivery) -> asyncio.Future[Any] | None:
        """Queue `delivery`'s record again in a record batch of its own (`Producer.send_alone`): its new delivery."""
        if self.producer.dead():
            raise ProducerDead("the producer's sender task has ended")
        return await self.producer.send_alone(self.topic(delivery.topic), delivery.value, key=delivery.key, headers=delivery.headers)
