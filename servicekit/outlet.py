"""Where a service's events go out: each event's bytes are made once, signed, and published as they are.

A service that keeps what it publishes (an outbox, a claim's result, an approval's announcement)
records the event first (`Outlet.record`: the current trace context set, signed by the service's
key, encoded) and stores those bytes; it then publishes the stored bytes (`Outlet.publish_many`),
on the first delivery and on every redelivery alike. The same event so goes out with the same
bytes, the same signature and the same `traceparent` each time, and is never decoded and encoded
again on its way. Stored bytes are never signed on their way out: the service's database login can
write what is stored, and a service that signed it as it published would sign what that login wrote.
`servicekit.Bus` is the outlet of a running service; `EventOutlet` is the one for code without a
broker (tests, in-process tools).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from schemas import Envelope, decode, encode
from servicekit.authority import encode_signed
from servicekit.signing import SigningKey
from servicekit.tracing import current_traceparent

__all__ = ["EventOutlet", "Outlet", "Recorded", "record_event"]


@dataclass(frozen=True)
class Recorded:
    """An encoded, signed event to publish as it is: catalog topic, Kafka key, its exact bytes, its `traceparent`.

    What a service stored goes out byte for byte (same event id, same signature) on every
    (re)delivery, never decoded and encoded again.
    """

    topic: str
    key: bytes | None
    value: bytes
    traceparent: str | None
    event: Envelope | None = None  # the event it was made from (before signing), when known: counted in the published metric
    # Published again in answer to a redelivery or a repeat (a finished action's kept result): what it says was counted
    # when it first went out, so the metrics leave it out (an agent's retries are not more refunds).
    again: bool = False

    @classmethod
    def stored(cls, topic: str, value: str | bytes) -> Recorded:
        """An event as a service stored it (its recorded JSON), to publish again byte for byte; its key and trace are read from it."""
        raw = value.encode() if isinstance(value, str) else value
        event = decode(topic, raw)  # only a redelivery comes here: its key is the event's own (`Envelope.key`)
        return cls(topic, event.key, raw, event.traceparent, event)

    @property
    def identity(self) -> str | bytes:
        """What makes two records the same event: its id when known, else its bytes."""
        return self.event.id if self.event is not None else self.value


def record_event(topic: str, event: Envelope, signed: Callable[[Envelope], bytes] | None) -> Recorded:
    """`event` as it goes out on `topic`: with the current trace context if it carries none, made into bytes once.

    `signed` makes the bytes of an unsigned event (the producer's signature; None publishes it
    unsigned); an event signed already (by its producer, elsewhere) is encoded as it is.
    """
    if event.signature is None and event.traceparent is None:
        traceparent = current_traceparent()
        if traceparent:
            event = event.model_copy(update={"traceparent": traceparent})
    value = signed(event) if signed is not None and event.signature is None else encode(event)
    return Recorded(topic, event.key, value, event.traceparent, event)


class Outlet(Protocol):
    """Makes each event's bytes once (`record`) and publishes recorded bytes as they are (`publish_many`)."""

    def record(self, topic: str, event: Envelope) -> Recorded:
        """`event` signed and encoded for catalog topic `topic`, carrying the current trace context if it has none."""
        ...

    async def publish_many(self, records: Sequence[Recorded]) -> None:
        """Publish `records` in order, each as its bytes."""
        ...


@dataclass
class EventOutlet:
    """An `Outlet` without a broker: each published record is decoded, as a consumer would, and handed to `publish`.

    For tests and in-process callers; with a `signer`, events are signed exactly as the service's bus signs them.
    """

    publish: Callable[[str, Envelope], Awaitable[Any]]
    signer: SigningKey | None = None

    def record(self, topic: str, event: Envelope) -> Recorded:
        """See `Outlet`."""
        signer = self.signer
        return record_event(topic, event, None if signer is None else lambda e: encode_signed(e, signer))

    async def publish_many(self, records: Sequence[Recorded]) -> None:
        """See `Outlet`."""
        for r in records:
            await self.publish(r.topic, decode(r.topic, r.value))
