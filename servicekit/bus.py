"""The Kafka bus every service uses: broker factory, publishing, and consumers that never die.

A consumer here validates each message against the topic's contract; what it cannot accept goes to
`deadletter` with the reason and consumption goes on. Offsets are committed only after a batch is
handled, so delivery is at least once and handlers are idempotent. This module is the one layer
that retries a handler: transient infrastructure errors (database or broker unreachable) are
retried with capped backoff, forever, blocking the partition rather than losing the event.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from faststream import AckPolicy, BaseMiddleware
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware
from pydantic import ValidationError

from schemas import Envelope, EventRejected, EventRejectedData, ReasonCode, decode, encode, headers_for
from servicekit import metrics
from servicekit.authority import Authority, sign_event
from servicekit.signing import SigningKey
from servicekit.tracing import Attr, current_traceparent, span

__all__ = ["Bus", "Handler", "Reject", "make_broker"]

log = logging.getLogger(__name__)

RAW_LIMIT = 64 * 1024
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ConnectionError,
    asyncio.TimeoutError,
    KafkaError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
)

Handler = Callable[[Any], Awaitable[None]]
# The envelope's trace context rides to the inner middleware under this header, which becomes `traceparent` again.
_ENVELOPE_TRACEPARENT = "x-tidegate-traceparent"


class EnvelopeTraceparent(BaseMiddleware):  # type: ignore[type-arg]
    """Publish middleware inside the telemetry one: the `traceparent` header is the envelope's, as the contract says.

    FastStream's telemetry middleware writes its own publish span into `traceparent`; the envelope
    (signed) carries the producing handler's. Consumers see one trace context, in both places.
    """

    async def publish_scope(self, call_next: Callable[[Any], Awaitable[Any]], cmd: Any) -> Any:
        """Put the envelope's trace context back in the header (or none when the envelope has none)."""
        envelope_tp = cmd.headers.pop(_ENVELOPE_TRACEPARENT, None)
        if envelope_tp:
            cmd.headers["traceparent"] = envelope_tp
        else:
            cmd.headers.pop("traceparent", None)
        return await call_next(cmd)


class Reject(Exception):
    """Raised by a handler for an event it will not accept; the event goes to `deadletter`."""

    def __init__(self, code: ReasonCode | str, message: str) -> None:
        super().__init__(message)
        self.code = str(code)
        self.message = message


def make_broker(bootstrap: str, service: str, **kwargs: Any) -> KafkaBroker:
    """A FastStream Kafka broker: idempotent producer, acks=all, OpenTelemetry middleware installed."""
    return KafkaBroker(
        bootstrap,
        client_id=f"tidegate-{service}",
        acks="all",
        enable_idempotence=True,
        allow_auto_create_topics=False,
        middlewares=[KafkaTelemetryMiddleware(), EnvelopeTraceparent],  # the first listed is the outermost
        graceful_timeout=10.0,
        log_level=logging.DEBUG,
        **kwargs,
    )


def _text(raw: bytes | None) -> str:
    return raw.decode("utf-8", errors="replace") if raw is not None else ""


@dataclass(frozen=True)
class _Route:
    topic: str
    handler: Handler
    group_id: str | None
    max_records: int
    concurrency: int
    from_latest: bool


@dataclass
class Bus:
    """A service's view of the bus: its prefix, its name, its broker."""

    broker: KafkaBroker
    service: str
    bootstrap: str
    prefix: str = "tidegate."
    signer: SigningKey | None = None  # signs every event this bus publishes (docs/security/signatures.md)
    authority: Authority | None = None  # checks every event's signature before a handler sees it
    rejected: int = field(default=0, init=False)
    positions: dict[tuple[str, int], int] = field(default_factory=dict, init=False)
    subscriptions: list[str] = field(default_factory=list, init=False)
    _routes: list[_Route] = field(default_factory=list, init=False)
    _started: bool = field(default=False, init=False)
    # Subscribers that read only what comes after start, with their topics.
    _from_latest: list[tuple[Any, list[str]]] = field(default_factory=list, init=False)

    def topic(self, name: str) -> str:
        """Full topic name of catalog topic `name`."""
        return f"{self.prefix}{name}"

    async def publish(self, topic: str, event: Envelope) -> None:
        """Publish `event` on catalog topic `topic`, signed, carrying the current trace context if it has none.

        An unsigned event published outside any span (a client's task) gets a publish span of its own,
        so it starts a trace. A signed event is sent exactly as signed. The `traceparent` header is
        always the envelope's.
        """
        if event.signature is None and event.traceparent is None and current_traceparent() is None:
            with span(f"{self.service} publish {event.type.removeprefix('tidegate.')}", attributes={Attr.SERVICE: self.service}):
                await self._publish(topic, event)
            return
        await self._publish(topic, event)

    def sign(self, event: Envelope) -> Envelope:
        """`event` signed with this bus's key (unchanged without a key)."""
        return sign_event(event, self.signer) if self.signer is not None else event

    async def _publish(self, topic: str, event: Envelope) -> None:
        if event.signature is None:
            if event.traceparent is None:
                tp = current_traceparent()
                if tp:
                    event = event.model_copy(update={"traceparent": tp})
            event = self.sign(event)
        headers = headers_for(event)
        if event.traceparent:
            headers[_ENVELOPE_TRACEPARENT] = event.traceparent
        await self.broker.publish(encode(event), topic=self.topic(topic), key=event.key, headers=headers)
        metrics.observe_published(self.service, event)

    async def dead_letter(self, record: ConsumerRecord[Any, Any], topic: str, code: str, error: str) -> None:
        """Send an unacceptable message to `deadletter` with the reason; never raises on bad input."""
        raw = _text(record.value)
        tenant, task = "unknown", None
        try:
            doc = json.loads(raw)
            if isinstance(doc, dict):
                tenant = str(doc.get("tenantid") or (doc.get("data") or {}).get("tenant_id") or "unknown")[:100] or "unknown"
                task = doc.get("subject") or (doc.get("data") or {}).get("task_id")
                task = str(task)[:200] if task else None
        except (ValueError, AttributeError):
            pass
        data = EventRejectedData(
            tenant_id=tenant,
            task_id=task,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=_text(record.key) if record.key is not None else None,
            raw_value=raw[:RAW_LIMIT],
            truncated=len(raw) > RAW_LIMIT,
            code=code,
            error=error[:4000],
            service=self.service,
        )
        self.rejected += 1
        log.warning("rejected %s[%d]@%d: %s: %s", record.topic, record.partition, record.offset, code, error[:300])
        event = EventRejected.build(data, source=f"tidegate/{self.service}", subject=task)
        await self.publish("deadletter", event)

    async def handle_record(self, topic: str, record: ConsumerRecord[Any, Any], handler: Handler) -> None:
        """Decode one record, run the handler under a span; dead-letter what cannot be accepted."""
        try:
            event = decode(topic, record.value or b"")
        except ValidationError as exc:
            await self.dead_letter(record, topic, ReasonCode.INVALID_EVENT, _describe(exc))
            return
        if self.authority is not None and (refusal := self.authority.check(record.value or b"", event)) is not None:
            await self.dead_letter(record, topic, refusal.code, refusal.message)
            return
        header_tp = next((_text(v) for k, v in (record.headers or ()) if k == "traceparent"), None)
        attrs = {
            Attr.SERVICE: self.service,
            Attr.TOPIC: record.topic,
            Attr.EVENT_ID: event.id,
            Attr.EVENT_TYPE: event.type,
            Attr.TENANT: event.tenantid,
            Attr.TASK: event.subject,
        }
        delay = 0.1
        started = time.perf_counter()
        while True:
            try:
                with span(
                    f"{self.service} handle {event.type.removeprefix('tidegate.')}", parent=event.traceparent or header_tp, attributes=attrs
                ) as s:
                    try:
                        await handler(event)
                    except Reject as rej:
                        s.set_attribute(Attr.REJECTED, rej.code)
                        await self.dead_letter(record, topic, rej.code, rej.message)
                        metrics.observe_handled(self.service, event.type, time.perf_counter() - started, "rejected")
                        return
                metrics.observe_handled(self.service, event.type, time.perf_counter() - started, "ok")
                return
            except TRANSIENT_ERRORS as exc:
                log.warning("%s: transient error on %s@%d, retrying in %.1fs: %r", self.service, record.topic, record.offset, delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            except Exception as exc:  # a bug must not kill the consumer; the event is kept with the reason
                log.exception("%s: handler failed on %s@%d", self.service, record.topic, record.offset)
                await self.dead_letter(record, topic, ReasonCode.HANDLER_ERROR, f"{type(exc).__name__}: {exc}")
                metrics.observe_handled(self.service, event.type, time.perf_counter() - started, "error")
                return

    def consume(
        self,
        topic: str,
        handler: Handler,
        *,
        group_id: str | None,
        max_records: int = 200,
        concurrency: int = 1,
        from_latest: bool = False,
    ) -> None:
        """Subscribe `handler` to catalog topic `topic` in consumer group `group_id`.

        Subscriptions of one group share one Kafka consumer (one group per service, as the design
        says), created when the bus starts. With `group_id=None` the topic is read by this process
        alone, without committing offsets: from the beginning (how every service reads `control`),
        or from the end with `from_latest` (replies that matter only to calls waiting now).

        With `concurrency` > 1 a polled batch is handled in lanes, one per Kafka key (the task id):
        a key's records stay in order, records of different keys overlap, at most `concurrency` at
        a time. Offsets are still committed only after the whole batch is handled.
        """
        if self._started:
            raise RuntimeError("subscribe before the bus starts")
        self.subscriptions.append(topic)
        self._routes.append(_Route(topic, handler, group_id, max_records, concurrency, from_latest))

    def _register(self) -> None:
        groups: dict[str, list[_Route]] = {}
        for route in self._routes:
            if route.group_id is None:
                self._subscribe([route], None)
            else:
                groups.setdefault(route.group_id, []).append(route)
        for group, routes in groups.items():
            self._subscribe(routes, group)

    def _subscribe(self, group_routes: list[_Route], group_id: str | None) -> None:
        routes = {self.topic(r.topic): (r.topic, r.handler) for r in group_routes}
        slots = asyncio.Semaphore(max(r.concurrency for r in group_routes))
        lanes = any(r.concurrency > 1 for r in group_routes)

        from_latest = any(r.from_latest for r in group_routes)
        subscriber = self.broker.subscriber(
            *routes,
            group_id=group_id,
            batch=True,
            max_records=max(r.max_records for r in group_routes),
            batch_timeout_ms=100,
            auto_offset_reset="latest" if from_latest else "earliest",
            ack_policy=AckPolicy.ACK if group_id else AckPolicy.MANUAL,
            title=f"{self.service}:{','.join(t for t, _ in routes.values())}",
        )
        if from_latest:
            self._from_latest.append((subscriber, sorted(routes)))

        @subscriber
        async def _on_batch(msg: KafkaMessage) -> None:
            raw = msg.raw_message
            records: Sequence[Any] = raw if isinstance(raw, tuple | list) else (raw,)
            if lanes:
                await self.handle_in_lanes(records, routes, slots)
            else:
                for record in records:
                    topic, handler = routes[record.topic]
                    await self.handle_record(topic, record, handler)
                    self.positions[(record.topic, record.partition)] = record.offset + 1

    async def handle_in_lanes(self, records: Sequence[Any], routes: dict[str, tuple[str, Handler]], slots: asyncio.Semaphore) -> None:
        """Handle one polled batch: records of one key in order, different keys concurrently within `slots`."""
        by_key: dict[bytes | None, list[Any]] = {}
        for record in records:
            by_key.setdefault(record.key, []).append(record)

        async def run(lane: list[Any]) -> None:
            for record in lane:
                topic, handler = routes[record.topic]
                async with slots:
                    await self.handle_record(topic, record, handler)

        await asyncio.gather(*(run(lane) for lane in by_key.values()))
        for record in records:
            position = (record.topic, record.partition)
            self.positions[position] = max(self.positions.get(position, 0), record.offset + 1)

    async def start(self, *, timeout_s: float = 30.0) -> None:
        """Create the subscribers and connect (producer and consumers).

        Returns once every `from_latest` consumer knows where "latest" is: Kafka resolves that lazily,
        and a record that arrived in between (a tool's reply to a call made right after start) would
        be skipped, not read.
        """
        if not self._started:
            self._register()
            self._started = True
        await self.broker.start()
        deadline = asyncio.get_running_loop().time() + timeout_s
        for subscriber, topics in self._from_latest:
            consumer = getattr(subscriber, "consumer", None)  # None under FastStream's in-memory test broker
            if consumer is None:
                continue
            while not consumer.assignment():
                if asyncio.get_running_loop().time() > deadline:
                    raise TimeoutError(f"{self.service}: no partitions assigned for {', '.join(topics)} after {timeout_s}s")
                await asyncio.sleep(0.02)
            for tp in consumer.assignment():
                remaining = max(0.1, deadline - asyncio.get_running_loop().time())
                await asyncio.wait_for(consumer.position(tp), remaining)

    async def stop(self) -> None:
        """Finish in-flight batches, commit, disconnect."""
        await self.broker.stop()

    async def wait_caught_up(self, topic: str, *, timeout_s: float = 30.0) -> None:
        """Wait until this process has handled `topic` up to its end offsets as of now."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            full = self.topic(topic)
            await consumer._client.force_metadata_update()
            tps = [TopicPartition(full, p) for p in consumer.partitions_for_topic(full) or ()]
            ends = await consumer.end_offsets(tps) if tps else {}
        finally:
            await consumer.stop()
        deadline = asyncio.get_running_loop().time() + timeout_s
        while any(self.positions.get((tp.topic, tp.partition), 0) < end for tp, end in ends.items()):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{self.service}: {topic} not caught up after {timeout_s}s")
            await asyncio.sleep(0.05)


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:10]:
        loc = ".".join(str(p) for p in err["loc"])
        parts.append(f"{loc or '(event)'}: {err['msg']}")
    return "invalid event: " + "; ".join(parts)
