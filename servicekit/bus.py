"""The Kafka bus every service uses: publishing through its one producer, and consumers that never die nor skip.

A consumer here checks each record's bounds and validates it against the topic's contract; what it
cannot accept goes to `deadletter` ALONE, with the reason, its raw bytes (truncated), their size and
SHA-256, and consumption goes on with its neighbours. An offset is committed only after every record
before it is handled or dead-lettered: the batch handler returns only then (a dead letter that cannot
be written is retried, never skipped), and if it raises anyway the batch is rewound, not committed.
This module is the one layer that retries a handler (`Bus.retrying`): transient infrastructure errors
(`servicekit.intake.classify`) are retried with capped backoff, forever, blocking the partition
rather than losing the event; a dead producer makes the process exit for its supervisor to restart.
An event a handler published that Kafka refuses for good (`servicekit.refusals`: too large for the
topic, invalid) is not retried either: the input whose handling published it is dead-lettered with
the broker's reason, and its batch-mates go on (`acknowledged_at_end`).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from pydantic import ValidationError

from schemas import CONTENT_TYPE, Envelope, EventRejected, EventRejectedData, ReasonCode, decode_document, encode
from servicekit import metrics
from servicekit.authority import Authority, appended_ms, encode_signed, sign_event
from servicekit.bus_auth import kafka_options
from servicekit.commits import Commits, rewind
from servicekit.intake import TRANSIENT_ERRORS, Bounds, ErrorKind, ProducerDead, Refused, check_bounds, classify, describe_raw, text_of
from servicekit.liveness import Liveness
from servicekit.outlet import Recorded, record_event
from servicekit.parking import Parked, Parking, park, parking
from servicekit.polling import FetchPace, Poller
from servicekit.producer import Headers, Producer, servers
from servicekit.refusals import REFUSED_FOR_GOOD, refusal_code, refusal_name
from servicekit.settings import IDLE_FETCH_MAX_WAIT_MS, PARTITION_FETCH_BYTES, KitSettings
from servicekit.signing import SigningKey
from servicekit.tracing import Attr, current_traceparent, span

__all__ = [
    "TRANSIENT_ERRORS",
    "Bus",
    "Handler",
    "OutputRefused",
    "Producer",
    "Recorded",
    "Reject",
    "once_delivered",
    "once_delivered_together",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_BACKOFF_S = 5.0
Handler = Callable[[Any], Awaitable[None]]
_CONTENT_TYPE = CONTENT_TYPE.encode()


@dataclass(frozen=True)
class _Delivery:
    """A record published inside a polled batch, as it was sent (to send it again alone), and the input it is owed to."""

    future: asyncio.Future[Any]  # the broker's acknowledgement
    topic: str  # catalog name
    key: bytes | None
    value: bytes
    headers: Headers
    identity: str | bytes  # the event's id, else its bytes (`Recorded.identity`)
    source: ConsumerRecord[Any, Any] | None  # the input being handled when it was published (`handle_event`), if one was


Refusal = tuple[_Delivery, BaseException]  # a record Kafka refused for good, and its error


class OutputRefused(Exception):
    """Kafka refused for good what a polled batch published, and no one input is known to have published it (a batch handler's)."""

    def __init__(self, refused: Sequence[Refusal]) -> None:
        super().__init__("; ".join(_refused_text(d, exc) for d, exc in refused))
        self.refused = list(refused)


def _refused_text(delivery: _Delivery, exc: BaseException) -> str:
    return f"{refusal_name(exc)} for {delivery.topic} ({len(delivery.value)} bytes)"


@dataclass
class _BatchDeliveries:
    """What the polled batch being handled has published: the acknowledgements it waits for, and what waits for them."""

    unacked: list[_Delivery] = field(default_factory=list)
    unowned: list[Refusal] = field(default_factory=list)  # refused for good before its input was known (`confirm_published`)
    after: list[Callable[[], Awaitable[Any]]] = field(default_factory=list)  # `once_delivered`
    sent: set[str | bytes] = field(default_factory=set)  # `Recorded.identity`: a redelivery inside the batch publishes nothing twice
    together: dict[str, tuple[Callable[[list[Any]], Awaitable[Any]], list[Any]]] = field(default_factory=dict)  # by key


_batch: ContextVar[_BatchDeliveries | None] = ContextVar("tidegate_batch_deliveries", default=None)
# The offsets of the polled batch being handled, when they are committed at intervals (`Bus.on_polled`).
_committing: ContextVar[Commits | None] = ContextVar("tidegate_batch_commits", default=None)
# The input record whose handler runs (`Bus.handle_event`): what it publishes is owed to it.
_source: ContextVar[ConsumerRecord[Any, Any] | None] = ContextVar("tidegate_publishing_for", default=None)


async def once_delivered(action: Callable[[], Awaitable[Any]]) -> None:
    """Run `action` once every event published so far is acknowledged by the broker.

    Inside a polled batch (`Bus.acknowledged_at_end`) a publish returns when its record is queued,
    so a handler that marks an outbox entry delivered right after publishing would mark it before
    the broker stored it; if the delivery then fails the batch is handled again, finds the entry
    gone and publishes nothing. Such marks go through here: in a batch they run after the
    acknowledgements and before the offsets are committed; elsewhere a publish has waited, so now.
    """
    batch = _batch.get()
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
    batch = _batch.get()
    if batch is None:
        await action(list(items))
        return
    batch.together.setdefault(key, (action, []))[1].extend(items)


class Reject(Exception):
    """Raised by a handler for an event it will not accept; the event goes to `deadletter`."""

    def __init__(self, code: ReasonCode | str, message: str) -> None:
        super().__init__(message)
        self.code = str(code)
        self.message = message


GRACEFUL_TIMEOUT_S = 10.0  # how long a stop waits for the batch in hand to finish


async def _unless_only_parked(work: asyncio.Future[Any], lanes: Parking) -> None:
    """Await `work` (a batch's lanes), unless only parked lanes are left while the process stops: then cancel them, raise `Parked`."""
    only_parked = asyncio.ensure_future(lanes.only_parked.wait())
    try:
        await asyncio.wait({work, only_parked}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        only_parked.cancel()
        cut = not work.done()
        if cut:  # only parked lanes left, or this batch cancelled (the stop's grace ran out: that goes on as it was)
            work.cancel()
            await asyncio.wait([work])
            work.exception()  # the lanes' cancellation: retrieved, not reported
    if not cut:
        work.result()  # a lane's error, raised as `gather` raises it
        return
    raise Parked(f"{lanes.parked} handler(s) parked while the process stops: their records are left to the next process")


def _headers(traceparent: str | None) -> Headers:
    return [("content-type", _CONTENT_TYPE)] + ([("traceparent", traceparent.encode())] if traceparent else [])


async def _acknowledged(delivery: asyncio.Future[Any] | None) -> None:
    if delivery is not None:  # None: a stand-in delivered it
        await delivery


def _text(raw: bytes | None) -> str:
    return text_of(raw) if raw is not None else ""


def _utf8(text: str) -> str:
    """`text` as an event may carry it: a lone surrogate (which `json.loads` lets through) as `?`, U+0000 as U+FFFD.

    A dead letter must always build, and be read back by whoever keeps it.
    """
    return text_of(text.encode("utf-8", "replace"))


def _tenant_and_task(value: bytes | None, bounds: Bounds) -> tuple[str, str | None]:
    """Tenant and task of a value, if they can be read safely (never raises: the value may be anything)."""
    try:
        check_bounds(value, bounds)
        doc = json.loads(value or b"")
        if not isinstance(doc, dict):
            return "unknown", None
        data: dict[str, Any] = doc["data"] if isinstance(doc.get("data"), dict) else {}
        tenant = _utf8(str(doc.get("tenantid") or data.get("tenant_id") or "unknown")[:100]) or "unknown"
        task = doc.get("subject") or data.get("task_id")
        return tenant, (_utf8(str(task)[:200]) if task else None)
    except Exception:  # RecursionError, MemoryError, anything: the dead letter goes out without them
        return "unknown", None


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
    """A service's view of the bus: its prefix, its name, its producer (`servicekit.producer`), its consumers."""

    producer: Producer
    service: str
    bootstrap: str
    prefix: str = "tidegate."
    bounds: Bounds = field(default_factory=Bounds)
    signer: SigningKey | None = None  # signs every event this bus publishes (docs/security/signatures.md)
    authority: Authority | None = None  # checks every event's signature before a handler sees it
    commit_interval_s: float = 0.5  # handled offsets are committed at most this often (`servicekit.commits`)
    fetch_max_wait_ms: int = IDLE_FETCH_MAX_WAIT_MS  # how long the broker holds an idle fetch (`KitSettings.fetch_max_wait_ms`)
    busy_fetch_max_wait_ms: int = 100  # the same while a consumer's batches take long (`KitSettings.busy_fetch_max_wait_ms`)
    max_partition_fetch_bytes: int = PARTITION_FETCH_BYTES  # per partition and fetch (`KitSettings.max_partition_fetch_bytes`)
    rejected: int = field(default=0, init=False)
    liveness: Liveness = field(default_factory=Liveness, init=False)
    # Called with each transient error before the retry (the runner discards the pool's connections on a database error).
    on_transient: Callable[[BaseException], Awaitable[None]] | None = field(default=None, init=False)
    # Set when the producer can no longer deliver: the process exits for its supervisor to restart it.
    failure: BaseException | None = field(default=None, init=False)
    failed: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    # Set as `stop` begins: a handler between two steps (the executor between two attempts) starts no new one.
    stopping: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    positions: dict[tuple[str, int], int] = field(default_factory=dict, init=False)
    subscriptions: list[str] = field(default_factory=list, init=False)
    _routes: list[_Route] = field(default_factory=list, init=False)
    _commits: list[Commits] = field(default_factory=list, init=False)  # one per consumer of a group
    _started: bool = field(default=False, init=False)
    pollers: list[Poller] = field(default_factory=list, init=False)  # one per Kafka consumer, started with the bus
    # Consumers that read only what comes after start, with their topics.
    _from_latest: list[tuple[Poller, list[str]]] = field(default_factory=list, init=False)

    def client_options(self) -> dict[str, Any]:
        """Login options of the producer's principal, for the raw aiokafka clients this bus opens."""
        return self.producer.login

    def topic(self, name: str) -> str:
        """Full topic name of catalog topic `name`."""
        return f"{self.prefix}{name}"

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
            event = event.model_copy(update={"traceparent": tp})  # what `_publish` would do: the context is read once
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

    def _signed_value(self, event: Envelope) -> bytes:
        """The bytes of `self.sign(event)`, signed and encoded at once with this bus's key (`encode_signed`).

        The signed event itself is never built; a subclass that signs its own way (tests sign as each producer) goes through `sign`.
        """
        if self.signer is not None and type(self).sign is Bus.sign:
            return encode_signed(event, self.signer)
        return encode(self.sign(event))

    async def _publish(self, topic: str, event: Envelope, *, wait: bool = False) -> None:
        batch = _batch.get()
        if batch is not None and not wait and event.id in batch.sent:
            return  # the same recorded event again (its source redelivered in this batch): once is enough
        made = self.record(topic, event)
        await self._deliver(topic, made.key, made.value, made.traceparent, identity=event.id, wait=wait)
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
        batch = _batch.get()
        if delivery is None:
            return
        if batch is None or wait:
            await delivery
        else:
            batch.unacked.append(_Delivery(delivery, topic, key, value, headers, identity, _source.get()))

    async def publish_many(self, records: Sequence[Recorded]) -> None:
        """Publish recorded events in order, each as its stored bytes, through the one publish path (`publish_recorded`).

        They are queued together, so the producer puts those of one partition in one request; inside
        a polled batch they are acknowledged when the batch ends, elsewhere this returns once the
        broker acknowledged them all. Inside a batch an event is published once (a source redelivered
        in the same batch hands its stored records over again).
        """
        batch = _batch.get()
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
                batch.unacked.append(_Delivery(delivery, r.topic, r.key, r.value, headers, r.identity, _source.get()))
            batch.sent.add(r.identity)  # only once queued: a send that raised is made again by the handler's retry
        await asyncio.gather(*deliveries)
        for record in records:
            if record.event is not None:
                metrics.observe_published(self.service, record.event)

    async def _send(self, topic: str, key: bytes | None, value: bytes, headers: Headers) -> asyncio.Future[Any] | None:
        """Queue one record on the producer: its delivery (acknowledgement), or None when a stand-in delivered it."""
        if self.producer.dead():  # a send on it would wait forever (aio-libs/aiokafka#1017)
            raise ProducerDead("the producer's sender task has ended")
        return await self.producer.send(self.topic(topic), value, key=key, headers=headers)

    @asynccontextmanager
    async def acknowledged_at_end(self) -> AsyncIterator[None]:
        """Handle a polled batch: what its handlers publish is acknowledged by the broker before this returns.

        Publishing inside does not wait for each acknowledgement (records are batched per partition);
        leaving waits for all of them, so the batch's offsets are committed only after everything it
        published is stored, then runs what the handlers left for that moment (`once_delivered`). An
        event id is published once per batch: a source event redelivered inside the same batch finds
        its outbox entries not yet marked and hands them over again, and they are not sent twice. A
        delivery that failed raises here: the batch is rewound and handled again (handlers are
        idempotent); a producer that can no longer deliver stops the process.

        A record Kafka refuses for good (`servicekit.refusals`) is not a failed delivery: sent again it
        is refused again, and the batch would be handled for ever. Each record the broker refused is
        sent again alone (`_settle`: the broker answers for a whole record batch, the refused record's
        batch-mates included); the input whose handling published one it refuses again is dead-lettered
        with the broker's reason (`output_too_large`, `output_refused`), and its batch-mates count as
        handled. One no single input is known to have published raises `OutputRefused`: rewound.
        """
        batch = _BatchDeliveries()
        token = _batch.set(batch)
        try:
            yield
        except BaseException:
            _batch.reset(token)
            await asyncio.gather(*(d.future for d in batch.unacked), return_exceptions=True)  # nothing left unretrieved; rewound anyway
            raise
        _batch.reset(token)
        sent_again = {d.identity for d in batch.unacked}
        if lost := [(d, exc) for d, exc in batch.unowned if d.identity not in sent_again]:
            log.error("%s: Kafka refuses %s for good, and no input handled alone published it again", self.service, OutputRefused(lost))
            raise OutputRefused(lost)
        refused = await self._settle(batch)
        if unowned := [(d, exc) for d, exc in refused if d.source is None]:
            log.error("%s: Kafka refuses %s for good, published by no one input", self.service, OutputRefused(unowned))
            raise OutputRefused(unowned)
        await self._dead_letter_refused(refused)
        for action in batch.after:  # `once_delivered`: only now is what the batch published stored
            await self.retrying("a delivered batch's bookkeeping", action)
        commits = _committing.get()
        for key, (together, items) in batch.together.items():  # `once_delivered_together`
            if commits is not None:
                commits.before_commit(key, together, items)
            else:
                await self.retrying("a delivered batch's bookkeeping", functools.partial(together, items))

    async def confirm_published(self) -> None:
        """Inside a polled batch: wait for the broker's answer to what was published so far (`_settle`).

        Raises `OutputRefused` when Kafka refuses some of it for good, for the caller to find the input
        that published it (a batch handler handles its events again one at a time, `servicekit.consume`:
        each event's handler publishes its events again, owed to it); any other failure as at the end.
        """
        batch = _batch.get()
        if batch is None:
            return
        if refused := await self._settle(batch):
            batch.unowned += refused
            raise OutputRefused(refused)

    async def _settle(self, batch: _BatchDeliveries) -> list[Refusal]:
        """Wait for the broker's answer to what `batch` published so far; return what it refuses for good, sent alone.

        The broker answers for a whole record batch: a record of it that is too large fails every record
        the producer had put with it. Each record refused is so sent again in a batch of its own (no
        duplicate: the broker stored nothing of the refused batch); those refused again are returned, and
        no longer count as sent in `batch`, so that their input publishes them again if it is handled
        again. Any other failure raises (the polled batch is rewound); a producer that can no longer
        deliver stops the process.
        """
        pending, batch.unacked = batch.unacked, []
        answers = await asyncio.gather(*(d.future for d in pending), return_exceptions=True)
        failed = [(d, exc) for d, exc in zip(pending, answers, strict=True) if isinstance(exc, BaseException)]
        await self._unless_refused([exc for _, exc in failed])
        if not failed:
            return []
        why = refusal_name(failed[0][1])
        log.warning("%s: Kafka refused a batch of %d records (%s); each is sent again alone", self.service, len(failed), why)
        again = [await self._send_alone(d) for d, _ in failed]  # in the order they were published
        answers = await asyncio.gather(*(_acknowledged(f) for f in again), return_exceptions=True)
        refused = [(d, exc) for (d, _), exc in zip(failed, answers, strict=True) if isinstance(exc, BaseException)]
        await self._unless_refused([exc for _, exc in refused])
        for d, _ in refused:
            batch.sent.discard(d.identity)
        return refused

    async def _unless_refused(self, errors: Sequence[BaseException]) -> None:
        """Raise the first of `errors` that is not a refusal for good (a dead producer stops the process first)."""
        others = [exc for exc in errors if not isinstance(exc, REFUSED_FOR_GOOD)]
        for exc in others:
            if classify(exc) is ErrorKind.PRODUCER_DEAD:
                await self.producer_dead(exc)
        if others:
            raise others[0]

    async def _send_alone(self, delivery: _Delivery) -> asyncio.Future[Any] | None:
        if self.producer.dead():
            raise ProducerDead("the producer's sender task has ended")
        return await self.producer.send_alone(self.topic(delivery.topic), delivery.value, key=delivery.key, headers=delivery.headers)

    async def _dead_letter_refused(self, refused: Sequence[Refusal]) -> None:
        """Dead-letter each input whose handling published what Kafka refuses for good, once, with every refusal and the broker's reason."""
        owed: dict[tuple[str, int, int], list[Refusal]] = {}
        for d, exc in refused:
            assert d.source is not None
            owed.setdefault((d.source.topic, d.source.partition, d.source.offset), []).append((d, exc))
        for refusals in owed.values():
            record, first = refusals[0][0].source, refusals[0][1]
            assert record is not None
            why = f"Kafka refuses for good what handling it published: {OutputRefused(refusals)}"
            await self.dead_letter(record, record.topic.removeprefix(self.prefix), refusal_code(first) or ReasonCode.OUTPUT_REFUSED, why)

    async def dead_letter(self, record: ConsumerRecord[Any, Any], topic: str, code: str, error: str) -> None:
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
            key=_text(record.key)[:1000] if record.key is not None else None,
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

    async def producer_dead(self, exc: BaseException) -> None:
        """The producer cannot deliver again: flag the process as failed (it exits non-zero) and hold the batch, uncommitted."""
        if self.failure is None:
            log.critical("%s: producer can no longer deliver (%r); exiting for the supervisor to restart", self.service, exc)
            self.failure = exc
            self.failed.set()
        await asyncio.Event().wait()  # until the process stops and cancels this handler; nothing is committed
        raise ProducerDead(str(exc))  # pragma: no cover  (unreachable: the wait ends only by cancellation)

    async def retrying(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run `attempt` until it succeeds; transient errors are retried with capped backoff, forever.

        An error about the record itself is raised for the caller to dead-letter; a dead producer
        stops the process (`producer_dead`). This is the one layer that retries handlers.
        """
        delay = 0.1
        while True:
            try:
                return await attempt()
            except Exception as exc:
                kind = classify(exc)
                if kind is ErrorKind.RECORD:
                    raise
                if kind is ErrorKind.PRODUCER_DEAD:
                    await self.producer_dead(exc)
                if self.on_transient is not None:
                    await self.on_transient(exc)
                self.liveness.retrying(exc)
                log.warning("%s: transient error on %s, retrying in %.1fs: %r", self.service, what, delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF_S)

    async def decode_record(self, topic: str, record: ConsumerRecord[Any, Any]) -> Any | None:
        """The record's event, or None once it is dead-lettered with the reason.

        The one place where every consume path of the kit and the policy's batch path turn bytes
        into an event: bounds first, then the contract, then the producer's signature (`Authority`,
        docs/security/signatures.md), so no handler ever sees an event its signer may not produce.
        Any exception (`RecursionError`, `MemoryError`) is the record's.
        """
        code: str
        try:
            check_bounds(record.value, self.bounds)
            raw = record.value or b""
            event, document = decode_document(topic, raw)  # parsed once: the check reads the same document
            refusal = self.authority.check(raw, event, document, appended_ms=appended_ms(record)) if self.authority is not None else None
            if refusal is None:
                return event
            code, error = refusal.code, refusal.message
        except Refused as exc:
            code, error = exc.code, exc.message
        except ValidationError as exc:
            try:
                code, error = _contract_code(exc), _describe(exc)
            except Exception:  # describing it failed too: the reason is still the contract
                code, error = ReasonCode.INVALID_EVENT, "invalid event (not describable)"
        except Exception as exc:
            code, error = ReasonCode.INVALID_EVENT, f"undecodable: {type(exc).__name__}"
        await self.dead_letter(record, topic, code, error)
        return None

    async def handle_record(self, topic: str, record: ConsumerRecord[Any, Any], handler: Handler) -> None:
        """Decode one record and handle it; what cannot be accepted is dead-lettered, transient errors retried."""
        with self.liveness.running():
            event = await self.decode_record(topic, record)
            if event is not None:
                await self.handle_event(record, event, handler)

    async def handle_event(self, record: ConsumerRecord[Any, Any], event: Any, handler: Handler) -> None:
        """Run the handler on a decoded event under a span; retried while errors are transient."""
        # The envelope's (signed) trace context; the header's only for an event that carries none.
        parent = event.traceparent or next((_text(v) for k, v in (record.headers or ()) if k == "traceparent"), None)
        attrs = {
            Attr.SERVICE: self.service,
            Attr.TOPIC: record.topic,
            Attr.EVENT_ID: event.id,
            Attr.EVENT_TYPE: event.type,
            Attr.TENANT: event.tenantid,
            Attr.TASK: event.subject,
        }
        started = time.perf_counter()

        async def attempt() -> str:
            name = f"{self.service} handle {event.type.removeprefix('tidegate.')}"
            with span(name, parent=parent, attributes=attrs) as s:
                source = _source.set(record)  # what it publishes is owed to this record
                try:
                    await handler(event)
                except Reject as rej:
                    s.set_attribute(Attr.REJECTED, rej.code)
                    await self.dead_letter(record, record.topic.removeprefix(self.prefix), rej.code, rej.message)
                    return "rejected"
                finally:
                    _source.reset(source)
            return "ok"

        try:
            result = await self.retrying(f"{record.topic}@{record.offset}", attempt)
        except Exception as exc:  # a bug must not kill the consumer; the event is kept with the reason
            log.exception("%s: handler failed on %s@%d", self.service, record.topic, record.offset)
            code = refusal_code(exc) or ReasonCode.HANDLER_ERROR  # an event it published that Kafka refuses for good (at send)
            await self.dead_letter(record, record.topic.removeprefix(self.prefix), code, f"{type(exc).__name__}: {exc}")
            result = "error"
        metrics.observe_handled(self.service, event.type, time.perf_counter() - started, result)

    def mark_handled(self, record: ConsumerRecord[Any, Any]) -> None:
        """Record that `record` is handled or dead-lettered (what `wait_caught_up` and the liveness check read)."""
        position = (record.topic, record.partition)
        self.positions[position] = max(self.positions.get(position, 0), record.offset + 1)
        self.liveness.progressed()

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
        or from the end with `from_latest` (replies that matter only to calls waiting now); such
        topics share one consumer too, one for those read from the beginning and one for the rest.

        With `concurrency` > 1 a polled batch is handled in lanes, one per Kafka key (the task id):
        a key's records stay in order, records of different keys overlap, at most `concurrency` at
        a time. Offsets are still committed only after the whole batch is handled.
        """
        if self._started:
            raise RuntimeError("subscribe before the bus starts")
        self.subscriptions.append(topic)
        self._routes.append(_Route(topic, handler, group_id, max_records, concurrency, from_latest))

    def _register(self) -> None:
        """One Kafka consumer per group; one for the topics read alone from the beginning, one for those read from the end.

        Each consumer fetches, and while idle wakes, on its own; topics read alone need no consumer each.
        """
        groups: dict[str | bool, list[_Route]] = {}
        for route in self._routes:
            groups.setdefault(route.from_latest if route.group_id is None else route.group_id, []).append(route)
        for group, routes in groups.items():
            self._subscribe(routes, group if isinstance(group, str) else None)

    def _subscribe(self, group_routes: list[_Route], group_id: str | None) -> None:
        routes = {self.topic(r.topic): (r.topic, r.handler) for r in group_routes}
        slots = asyncio.Semaphore(max(r.concurrency for r in group_routes))
        lanes = any(r.concurrency > 1 for r in group_routes)

        from_latest = any(r.from_latest for r in group_routes)
        title = f"{self.service}:{','.join(t for t, _ in routes.values())}"
        max_records = max(r.max_records for r in group_routes)
        poller = self.poller(title, topics=list(routes), group_id=group_id, max_records=max_records, from_latest=from_latest)
        if from_latest:
            self._from_latest.append((poller, sorted(routes)))

        async def handle(records: Sequence[ConsumerRecord[Any, Any]]) -> None:
            if lanes:
                await self.handle_in_lanes(records, routes, slots)
                return
            async with self.acknowledged_at_end():
                for record in records:
                    topic, handler = routes[record.topic]
                    await self.handle_record(topic, record, handler)
            for record in records:  # handled, and what they published acknowledged
                self.mark_handled(record)

        self.on_polled(poller, handle, name=title)

    def poller(
        self,
        name: str,
        *,
        group_id: str | None,
        max_records: int,
        topics: Sequence[str] = (),
        pattern: str | None = None,
        linger_ms: int = 0,
        from_latest: bool = False,
        fetch_min_bytes: int = 1,
        fetch_max_wait_ms: int | None = None,
        max_partition_fetch_bytes: int | None = None,
        metadata_max_age_ms: int = 300_000,
    ) -> Poller:
        """A consumer of the full topic names `topics` (or those matching `pattern`) in `group_id`, started with the bus.

        Its offsets are the kit's to commit (`on_polled`), never aiokafka's on a timer. A group's
        partitions are spread round robin over its members. With `fetch_min_bytes` the broker holds
        each fetch until that much is there, or `fetch_max_wait_ms` passed (Kafka's `fetch.min.bytes`
        and `fetch.max.wait.ms`; unset: the bus's, which with one byte only bounds how often an idle
        consumer fetches, and the bus's busy wait replaces it while the consumer's batches take long:
        `FetchPace`); `metadata_max_age_ms` bounds how late a pattern finds a new topic, and
        `max_partition_fetch_bytes` (unset: the bus's) what it holds fetched of each partition.
        """
        idle_ms = self.fetch_max_wait_ms if fetch_max_wait_ms is None else fetch_max_wait_ms
        paced = fetch_max_wait_ms is None and fetch_min_bytes == 1 and self.busy_fetch_max_wait_ms < idle_ms
        options: dict[str, Any] = {
            "bootstrap_servers": servers(self.bootstrap),
            "client_id": f"tidegate-{self.service}",
            "group_id": group_id,
            "enable_auto_commit": False,
            "auto_offset_reset": "latest" if from_latest else "earliest",
            "fetch_min_bytes": fetch_min_bytes,
            "fetch_max_wait_ms": idle_ms,
            "max_partition_fetch_bytes": self.max_partition_fetch_bytes if max_partition_fetch_bytes is None else max_partition_fetch_bytes,
            "metadata_max_age_ms": metadata_max_age_ms,
            "partition_assignment_strategy": (RoundRobinPartitionAssignor,),
            **self.client_options(),
        }
        poller = Poller(
            functools.partial(AIOKafkaConsumer, **options),
            name=name,
            topics=topics,
            pattern=pattern,
            max_records=max_records,
            linger_ms=linger_ms,
            pace=FetchPace(idle_ms, self.busy_fetch_max_wait_ms) if paced else None,
        )
        self.pollers.append(poller)
        self.liveness.watch(poller)
        return poller

    def on_polled(self, poller: Poller, handle: Callable[[Sequence[ConsumerRecord[Any, Any]]], Awaitable[None]], *, name: str) -> None:
        """Hand `poller`'s polled batches to `handle`: the one place where a consumer's offsets move.

        `handle` returns once every record is handled or dead-lettered and what it published is
        acknowledged (and marks them handled); the batch's offsets are then committed, gathered over
        `commit_interval_s` (`servicekit.commits`), and at the latest when a rebalance takes the
        partitions away. If it raises, the batch is rewound (each partition seeks back to its first
        record) and read again.
        """
        commits = Commits(self.commit_interval_s, name=name)
        self._commits.append(commits)
        poller.before_revoke = commits.flush  # what is handled is committed before a rebalance moves its partitions

        @poller
        async def _on_batch(records: Sequence[ConsumerRecord[Any, Any]]) -> None:
            consumer = poller.consumer
            token = _committing.set(commits if commits.interval_s > 0 and Commits.commits_for(consumer) else None)
            try:
                await handle(records)
            except BaseException:
                rewind(consumer, records)
                raise
            finally:
                _committing.reset(token)
            await commits.handled(consumer, records)

    async def handle_in_lanes(self, records: Sequence[Any], routes: dict[str, tuple[str, Handler]], slots: asyncio.Semaphore) -> None:
        """Handle one polled batch: records of one key in order, different keys concurrently within `slots`."""
        by_key: dict[bytes | None, list[Any]] = {}
        for record in records:
            by_key.setdefault(record.key, []).append(record)

        lanes = Parking(running=len(by_key), stopping=self.stopping)

        async def run(lane: list[Any]) -> None:
            try:
                for record in lane:
                    topic, handler = routes[record.topic]
                    lanes.waiting += 1
                    lanes.check()
                    try:
                        await slots.acquire()
                    finally:
                        lanes.waiting -= 1
                    try:
                        if lanes.parked and self.stopping.is_set():
                            await park()  # a handler of this batch parked: none starts any more (`servicekit.parking`)
                        await self.handle_record(topic, record, handler)
                    finally:
                        slots.release()
            finally:
                lanes.lane_done()

        token = parking.set(lanes)  # the lanes' tasks, made below, see it (`servicekit.parking.park`)
        try:
            async with self.acknowledged_at_end():
                await _unless_only_parked(asyncio.gather(*(run(lane) for lane in by_key.values())), lanes)
        finally:
            parking.reset(token)
        for record in records:  # only now: lanes finish out of order
            self.mark_handled(record)

    async def start(self, *, timeout_s: float = 30.0) -> None:
        """Connect the producer, then start the consumers (subscribed before: `consume`, `servicekit.consume`).

        Returns once every `from_latest` consumer knows where "latest" is: Kafka resolves that lazily,
        and a record that arrived in between (a tool's reply to a call made right after start) would
        be skipped, not read.
        """
        if not self._started:
            self._register()
            self._started = True
        await self.producer.start()  # first: consumers' handlers publish from their first batch
        await asyncio.gather(*(poller.start() for poller in self.pollers))
        deadline = asyncio.get_running_loop().time() + timeout_s
        for poller, topics in self._from_latest:
            consumer = poller.consumer
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
        """Commit what is handled, finish in-flight batches (each committed as it ends), disconnect.

        The consumers stop together: a stop waits for the longest batch in hand (at most
        `GRACEFUL_TIMEOUT_S`), not for the sum of them.
        """
        self.stopping.set()
        for commits in self._commits:
            await commits.closing()
        await asyncio.gather(*(poller.stop(graceful_timeout_s=GRACEFUL_TIMEOUT_S) for poller in self.pollers))
        await self.producer.stop()

    async def wait_caught_up(self, topic: str, *, timeout_s: float = 30.0) -> None:
        """Wait until this process has handled `topic` up to its end offsets as of now."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False, **self.client_options())
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


def service_bus(kit: KitSettings, name: str, *, signer: SigningKey, authority: Authority | None = None) -> Bus:
    """Service `name`'s bus as the deployment's settings make it.

    Its producer logged in as the service; the prefix, bounds, commit interval and fetch wait of `kit`; every
    event it publishes signed by `signer`, every one it reads checked by `authority`.
    """
    return Bus(
        Producer(kit.kafka_bootstrap, name, **kafka_options(kit, name)),
        name,
        kit.kafka_bootstrap,
        kit.topic_prefix,
        bounds=kit.bounds,
        signer=signer,
        authority=authority,
        commit_interval_s=kit.commit_interval_s,
        fetch_max_wait_ms=kit.fetch_max_wait_ms,
        busy_fetch_max_wait_ms=kit.busy_fetch_max_wait_ms,
        max_partition_fetch_bytes=kit.max_partition_fetch_bytes,
    )


def _contract_code(exc: ValidationError) -> str:
    """`not_finite` when the contract refused a NaN or Infinity, else `invalid_event`."""
    return ReasonCode.NOT_FINITE if any(e["type"] == "finite_number" for e in exc.errors()) else ReasonCode.INVALID_EVENT


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:10]:
        loc = ".".join(str(p) for p in err["loc"])
        parts.append(f"{loc or '(event)'}: {err['msg']}")
    return "invalid event: " + "; ".join(parts)
