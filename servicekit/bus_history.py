"""What a topic already holds, read without a consumer group: its last signed events (a start's check), or all of it (a catch-up).

A service's database restored from a backup is behind the bus: the events it signed since the backup are on the bus,
and the rows they came from are not in the database. The services that must never act twice (the executor, the
policy, the approval service) look at start at the events they signed since the newest row their database holds
(`signed_since`; the approval service at the last it signed, `last_signed`) and refuse to start when their database
does not hold what those events say (`BehindTheBus`); `tidegate db catch-up` reads the topics whole (`signed_events`)
and writes back what the database lost. Only events the deployment's `Authority` verifies count: a topic is never trusted.
A consumer's restored database (the planner's) is caught up from what its group had handled (`group_offsets`): the events
before those offsets are handed to it again (`signed_events(until=…)`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import GroupAuthorizationFailedError, TopicAuthorizationFailedError
from pydantic import ValidationError

from schemas import Envelope
from schemas.serialization import decode_document
from servicekit.authority import Authority, appended_ms
from servicekit.partitions import cluster_now

__all__ = [
    "CLOCK_SKEW_S",
    "BehindTheBus",
    "GroupInUse",
    "HistoryNotReadable",
    "SignedEvent",
    "group_offsets",
    "handled_offsets",
    "last_signed",
    "signed_events",
    "signed_since",
]

log = logging.getLogger(__name__)

LAST_TAIL = 50  # records read back from each partition's end: the last one its producer signed is among them, unless forged ones crowd it
CLOCK_SKEW_S = 60.0  # how far the database's clock and the broker's may differ: a start's check reads from this far before its newest row


D = TypeVar("D")


class HistoryNotReadable(RuntimeError):
    """The service's login may not read a topic its start must check (its rights predate the release that added the read).

    `run_service` prints it as a `not started` line and exits `EX_CONFIG`, as for `BehindTheBus`: restarting cannot fix it,
    `tidegate topics ensure` (which grants each service its rights) can.
    """


class BehindTheBus(RuntimeError):
    """The service's database is older than what the service itself published: restored from a backup. It must not start.

    Starting, it would act again on what it already did (run a paid call twice, offer a decided approval again).
    `run_service` prints it as a `not started` line and exits `EX_CONFIG`: restarting cannot fix it, `tidegate db catch-up` can.
    """


@dataclass(frozen=True)
class SignedEvent:
    """One event of a topic that verified, with where it is and its text exactly as it was published."""

    event: Envelope
    text: str
    topic: str
    partition: int
    offset: int
    appended_ms: int | None

    def data(self, kind: type[D]) -> D:
        """The event's data as `kind`, its topic's data class; TypeError for another (a reader asked the wrong topic).

        Every event of a catalog topic carries its topic's: `ActionResultData` on `actions.results`, `ApprovalData` on `approvals`.
        """
        data = getattr(self.event, "data", None)
        if not isinstance(data, kind):
            raise TypeError(f"{self.topic}[{self.partition}]@{self.offset}: {self.event.type} carries no {kind.__name__}")
        return data


def _verified(name: str, record: Any, authority: Authority) -> SignedEvent | str:
    """The record as a SignedEvent when it decodes as an event of catalog topic `name` and verifies; else why not."""
    topic = record.topic
    try:
        text = (record.value or b"").decode()
        event, document = decode_document(name, text)
    except (UnicodeDecodeError, ValueError, ValidationError) as exc:
        return f"not an event of {name} ({type(exc).__name__})"
    at = appended_ms(record)
    refusal = authority.check(text, event, document, appended_ms=at)
    if refusal is not None:
        return f"{refusal.code}: {refusal.message}"
    return SignedEvent(event, text, topic, record.partition, record.offset, at)


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """The topic's partitions as this login sees them; none, with a WARNING, when it sees no such topic.

    Kafka shows a login only the topics it may describe: a topic not made yet and one the login may not read (its rights
    predate the release: `tidegate topics ensure` grants them) look alike, and neither holds anything it can check.
    """
    partitions = sorted((await cluster_now(consumer)).partitions_for_topic(topic) or ())
    if not partitions:
        log.warning(
            "%s is not there for this login (not made yet, or this login may not read it): nothing of it was checked; "
            "`tidegate topics ensure` makes the catalog's topics and grants each service its rights",
            topic,
        )
    return [TopicPartition(topic, p) for p in partitions]


async def _records(
    consumer: AIOKafkaConsumer, starts: dict[TopicPartition, int], ends: dict[TopicPartition, int], timeout_s: float
) -> AsyncIterator[Any]:
    """Every record from `starts` to `ends` (exclusive), partition by partition; TimeoutError when the broker gives none in time.

    HistoryNotReadable when the login may not read the topic (it sees it because it may write it).
    """
    try:
        async for record in _read(consumer, starts, ends, timeout_s):
            yield record
    except TopicAuthorizationFailedError as exc:
        topics = sorted({tp.topic for tp in starts})
        raise HistoryNotReadable(
            f"this service's Kafka login may not read {', '.join(topics)} ({type(exc).__name__}), which its start checks: its rights "
            "predate this release; run `tidegate topics ensure` (it grants each service its rights), then start it again"
        ) from exc


async def _read(
    consumer: AIOKafkaConsumer, starts: dict[TopicPartition, int], ends: dict[TopicPartition, int], timeout_s: float
) -> AsyncIterator[Any]:
    for tp, start in starts.items():
        if start >= ends[tp]:
            continue
        consumer.assign([tp])
        consumer.seek(tp, start)
        while await consumer.position(tp) < ends[tp]:
            batches = await consumer.getmany(tp, timeout_ms=int(timeout_s * 1000))
            if not batches:
                raise TimeoutError(
                    f"{tp.topic}[{tp.partition}]: no record read in {timeout_s:.0f} s at offset {await consumer.position(tp)}"
                )
            for records in batches.values():
                for record in records:
                    if record.offset < ends[tp]:
                        yield record


def _consumer(bootstrap: str, client_options: dict[str, Any] | None) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest", **(client_options or {}))


async def last_signed(
    bootstrap: str,
    prefix: str,
    name: str,
    authority: Authority,
    *,
    client_options: dict[str, Any] | None = None,
    tail: int = LAST_TAIL,
    timeout_s: float = 30.0,
) -> list[SignedEvent]:
    """Per partition of `prefix` + `name` (a catalog topic), the last event among its last `tail` records that verifies.

    An empty partition (or one whose last `tail` records none verifies) gives none.

    Cheap: at most `tail` records a partition, read from `end - tail`.
    """
    consumer = _consumer(bootstrap, client_options)
    try:
        await consumer.start()  # in the try: a consumer that fails to start (no broker) is closed too, not left for the GC to name
        tps = await _partitions(consumer, prefix + name)
        if not tps:
            return []
        ends = await consumer.end_offsets(tps)
        begins = await consumer.beginning_offsets(tps)
        starts = {tp: max(begins[tp], ends[tp] - tail) for tp in tps}
        last: dict[int, SignedEvent] = {}
        async for record in _records(consumer, starts, ends, timeout_s):
            if isinstance(found := _verified(name, record, authority), SignedEvent):
                last[found.partition] = found  # in each partition's order: its last wins
        return [last[p] for p in sorted(last)]
    finally:
        await consumer.stop()


async def signed_events(
    bootstrap: str,
    prefix: str,
    name: str,
    authority: Authority,
    *,
    since_ms: int | None = None,
    client_options: dict[str, Any] | None = None,
    timeout_s: float = 30.0,
    progress: Callable[[int, int], None] | None = None,
    refused: Callable[[Any, str], None] | None = None,
    until: Mapping[int, int] | None = None,
) -> AsyncGenerator[SignedEvent, None]:
    """Every event `prefix` + `name` (a catalog topic) holds now that verifies, in each partition's order.

    From the earliest record retained, or from `since_ms`; `until`: only the partitions it names, each up to its offset
    (exclusive: a consumer group's committed offsets, `group_offsets`).

    `progress(read, total)` is called as records are read; `refused(record, why)` for each record that does not verify.
    Records appended after the call began are not read: the catch-up covers what the bus held when it started.
    """
    topic = prefix + name
    consumer = _consumer(bootstrap, client_options)
    try:
        await consumer.start()  # in the try: a consumer that fails to start (no broker) is closed too, not left for the GC to name
        tps = [tp for tp in await _partitions(consumer, topic) if until is None or tp.partition in until]
        if not tps:
            return
        ends = await consumer.end_offsets(tps)
        if until is not None:
            ends = {tp: min(end, until[tp.partition]) for tp, end in ends.items()}
        starts = await consumer.beginning_offsets(tps)
        if since_ms is not None:
            found = await consumer.offsets_for_times({tp: since_ms for tp in tps})
            starts = {tp: (found[tp].offset if found[tp] is not None else ends[tp]) for tp in tps}
        total, read = sum(max(0, ends[tp] - starts[tp]) for tp in tps), 0
        async for record in _records(consumer, starts, ends, timeout_s):
            read += 1
            if progress is not None and (read % 1000 == 0 or read == total):
                progress(read, total)
            event = _verified(name, record, authority)
            if isinstance(event, SignedEvent):
                yield event
            elif refused is not None:
                refused(record, event)
    finally:
        await consumer.stop()


async def signed_since(
    bootstrap: str,
    prefix: str,
    name: str,
    authority: Authority,
    newest: datetime | None,
    *,
    client_options: dict[str, Any] | None = None,
    chunk: int = 1000,
    timeout_s: float = 30.0,
) -> AsyncGenerator[list[SignedEvent], None]:
    """The events of `prefix` + `name` that verify, appended since `newest` less `CLOCK_SKEW_S`, in chunks of `chunk`, in order.

    `newest`: the newest row the service's database holds (None: it holds none, and the whole topic is read). A start's
    check reads this window whole, not a tail of so many records a partition: a tail can be filled with old events a
    service publishes again (a redelivered proposal's kept decision, a re-authorized call's kept result), which an agent
    can cause at will, and then hides what the service signed after the backup (restore7 F2). What the window holds is
    everything published since the database's last write: little on a healthy restart, everything since the backup after
    a restore (a check stops at the first event its database lacks). Close the generator (`contextlib.aclosing`) when
    stopping early.
    """
    since_ms = None if newest is None else int((newest.timestamp() - CLOCK_SKEW_S) * 1000)
    batch: list[SignedEvent] = []
    events = signed_events(bootstrap, prefix, name, authority, since_ms=since_ms, client_options=client_options, timeout_s=timeout_s)
    try:
        async for event in events:
            batch.append(event)
            if len(batch) >= chunk:
                yield batch
                batch = []
        if batch:
            yield batch
    finally:
        await events.aclose()


async def handled_offsets(
    bootstrap: str, prefix: str, name: str, group: str, *, client_options: dict[str, Any] | None = None
) -> dict[int, int]:
    """Per partition of `prefix` + `name`, the offset consumer group `group` (full name) has committed: what it handled is before it.

    A partition the group never committed is absent (none of it handled). Read without joining the group: a start's
    check tells an event its service has handled (its row should be there) from one still in its backlog (delivered after start).
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False, **(client_options or {}))
    try:
        await consumer.start()  # in the try: a consumer that fails to start (no broker) is closed too, not left for the GC to name
        committed = {}
        for tp in await _partitions(consumer, prefix + name):
            try:
                offset = await consumer.committed(tp)
            except GroupAuthorizationFailedError as exc:
                raise _group_refused(group, exc) from exc
            if offset is not None:
                committed[tp.partition] = offset
        return committed
    finally:
        await consumer.stop()


class GroupInUse(RuntimeError):
    """The consumer group asked about has members (its service is running): what it committed may still move."""


async def group_offsets(
    bootstrap: str, prefix: str, names: list[str], group: str, *, client_options: dict[str, Any] | None = None
) -> dict[str, dict[int, int]]:
    """Per catalog topic of `names`, per partition, the offset group `group` (full name) has committed; `GroupInUse` if it has members.

    What the group's service has handled is before those offsets, its backlog from them. Asked of the group's coordinator
    without joining the group (`client_options`: a login that may describe it, the service's own); a partition the group
    never committed is absent.
    """
    committed: dict[str, dict[int, int]] = {}
    for name in names:  # a topic not made (a deployment that never ran) has none: nothing to ask its group
        if offsets := await handled_offsets(bootstrap, prefix, name, group, client_options=client_options):
            committed[name] = offsets
    if not committed:
        return committed
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **(client_options or {}))
    try:
        await admin.start()  # in the try: a client that fails to start (no broker) is closed too
        for described in await admin.describe_consumer_groups([group]):
            for _error, _name, state, _protocol_type, _protocol, members, *_ in described.groups:
                if members:
                    raise GroupInUse(f"consumer group {group} has members ({len(members)}, {state}): stop its service first")
    except GroupAuthorizationFailedError as exc:
        raise _group_refused(group, exc) from exc
    finally:
        await admin.close()
    return committed


def _group_refused(group: str, exc: Exception) -> HistoryNotReadable:
    return HistoryNotReadable(
        f"this Kafka login may not describe consumer group {group} ({type(exc).__name__}): its rights predate this release, "
        "or it is another service's login; run `tidegate topics ensure` (it grants each service its rights), then again"
    )
