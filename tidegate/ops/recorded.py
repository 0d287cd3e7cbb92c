"""Recorded traffic: the events of a time window, read back from the topics (offsets found by timestamp).

Replay, what-if and costs all start here. Reading never joins a consumer group and never commits,
so it cannot disturb a running service. A message that is not a usable event (invalid JSON, wrong
shape, unknown type, NaN, too large or deep), or whose signature the deployment's keys refuse as a
service would (unsigned, forged, an unknown key, a signer not allowed to produce it), is counted by
reason in `Window.skipped` and skipped: no topic is trusted, and history is no exception.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer

from schemas import Envelope
from servicekit.authority import Authority, appended_ms, deployment_authority
from servicekit.bus_auth import kafka_options
from servicekit.bus_rights import OPS
from servicekit.partitions import partitions_of
from servicekit.settings import KitSettings
from servicekit.unreadable import Skipped, Unreadable, read_event

__all__ = [
    "WINDOW_TOPICS",
    "BadTime",
    "Recorded",
    "Window",
    "kafka_ms",
    "parse_time",
    "read_audit_window",
    "read_window",
    "recorded_window",
]

E = TypeVar("E", bound=Envelope)

WINDOW_TOPICS = ("tasks", "actions.proposed", "actions.decided", "approvals", "actions.authorized", "actions.results", "tasks.outcomes")
"""The topics that tell a task's story (control, deadletter and checkpoints are not part of it)."""

_RELATIVE = re.compile(r"^-?(\d+(?:\.\d+)?)\s*([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


class BadTime(ValueError):
    """A time given on the command line that is none of the forms `parse_time` reads (the message says which are)."""


def parse_time(text: str, *, now: datetime | None = None) -> datetime:
    """`now`, an ISO 8601 time (UTC if no zone), or a duration ago: `15m`, `-2h`, `1d`; raises `BadTime` for anything else."""
    now = now or datetime.now(UTC)
    text = text.strip()
    if text == "now":
        return now
    match = _RELATIVE.match(text)
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadTime(f"cannot read the time {text!r}: give `now`, a duration ago (`15m`, `2h`, `1.5d`) or an ISO 8601 time") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def kafka_ms(moment: datetime) -> int:
    """`moment` at the precision of a Kafka timestamp: whole milliseconds since the epoch, rounded down (exactly, no float).

    A window's bounds are taken at this precision on the bus and in the audit log alike: a record stamped in the
    millisecond a window starts is in it, wherever it is read from (in the log, `kafka_ts` holds only milliseconds).
    """
    return (moment - _EPOCH) // _MS


def _at_kafka_precision(moment: datetime | None) -> datetime | None:
    return None if moment is None else _EPOCH + kafka_ms(moment) * _MS


@dataclass(frozen=True)
class Recorded:
    """One recorded event and where it was on the bus."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    event: Envelope


@dataclass
class Window:
    """Every event of the window, in timestamp order, with what could not be read."""

    events: list[Recorded] = field(default_factory=list)
    skipped: Skipped = field(default_factory=Skipped)

    @property
    def unreadable(self) -> int:
        """How many recorded values were skipped."""
        return self.skipped.total

    def of(self, *types: type[E]) -> list[E]:
        """The events of the given types, in order."""
        return [r.event for r in self.events if isinstance(r.event, types)]

    def task_ids(self) -> list[str]:
        """Task ids seen in the window, in order of first appearance."""
        seen: dict[str, None] = {}
        for r in self.events:
            task = getattr(r.event.data, "task_id", None)
            if task:
                seen.setdefault(task, None)
        return list(seen)


def _matches(event: Envelope, tenant: str | None, task: str | None) -> bool:
    data = event.data
    if tenant and getattr(data, "tenant_id", None) != tenant:
        return False
    return not (task and getattr(data, "task_id", None) != task)


async def read_window(
    bootstrap: str,
    prefix: str,
    start: datetime | None,
    end: datetime | None,
    *,
    authority: Authority,
    topics: Iterable[str] = WINDOW_TOPICS,
    tenant: str | None = None,
    task: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    decode_events: bool = True,
    client_options: dict[str, Any] | None = None,
) -> Window:
    """Read the events of `topics` (catalog names) under `prefix` whose timestamps fall in [start, end) (`kafka_ms`).

    Args:
        bootstrap: Kafka bootstrap servers.
        prefix: Topic prefix of the deployment (`tidegate.`).
        start: First timestamp (None: from the beginning).
        end: Timestamp where reading stops, exclusive (None: the end of each partition as of now).
        authority: Who may have signed what (`deployment_authority(kit, history=True)`: a retired key counts for what
            the broker appended within its grace, as in the audit log); an event it refuses is skipped under its reason code.
        topics: Catalog topic names to read.
        tenant: Keep only this tenant's events.
        task: Keep only this task's events.
        progress: Called with (messages read, messages in the window) as reading goes.
        decode_events: False keeps the raw bytes only (benchmarks measuring the read alone).
        client_options: How to log in (`kafka_options(kit, OPS)` for the operator tools).
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None, max_poll_records=2000, **(client_options or {})
    )
    window = Window()
    try:
        await consumer.start()  # inside: a broker not reached still closes the client (no "Unclosed AIOKafkaConsumer" after the error)
        names = {f"{prefix}{t}": t for t in topics}
        tps = await partitions_of(consumer, names)
        if not tps:
            return window
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        begins = await consumer.beginning_offsets(tps)
        first = dict(begins)
        if start is not None:
            found = await consumer.offsets_for_times({tp: kafka_ms(start) for tp in tps})
            first = {tp: (found[tp].offset if found.get(tp) else ends[tp]) for tp in tps}
        stop = dict(ends)
        if end is not None:
            found = await consumer.offsets_for_times({tp: kafka_ms(end) for tp in tps})
            stop = {tp: (found[tp].offset if found.get(tp) else ends[tp]) for tp in tps}
        pending = {tp for tp in tps if first[tp] < stop[tp]}
        total = sum(max(0, stop[tp] - first[tp]) for tp in tps)
        for tp in tps:
            consumer.seek(tp, first[tp])
        for tp in set(tps) - pending:
            consumer.pause(tp)
        read = 0
        while pending:
            batches = await consumer.getmany(*pending, timeout_ms=1000)
            for tp, records in batches.items():
                for record in records:
                    if record.offset >= stop[tp]:
                        break
                    read += 1
                    if decode_events:
                        try:
                            event = read_event(names[tp.topic], record.value)
                        except Unreadable as exc:
                            window.skipped.add(exc.reason, f"{tp.topic}[{tp.partition}]@{record.offset}", exc.detail)
                            continue
                        if not _matches(event, tenant, task):
                            continue
                        if (refusal := authority.check(record.value, event, appended_ms=appended_ms(record))) is not None:
                            window.skipped.add(refusal.code.value, f"{tp.topic}[{tp.partition}]@{record.offset}", refusal.message)
                            continue
                    else:
                        event = record.value
                    window.events.append(Recorded(names[tp.topic], tp.partition, record.offset, record.timestamp, event))
                if await consumer.position(tp) >= stop[tp]:
                    pending.discard(tp)
                    consumer.pause(tp)
            if progress is not None:
                progress(read, total)
    finally:
        await consumer.stop()
    window.events.sort(key=lambda r: (r.timestamp_ms, r.topic, r.partition, r.offset))
    return window


async def recorded_window(
    kit: KitSettings, start: datetime | None, end: datetime | None, *, principal: str = OPS, **options: Any
) -> Window:
    """`read_window` of `kit`'s deployment, logged in as `principal` (the operator tools: `ops`), checked against its keys.

    A retired key verifies what the broker appended within its grace after the retirement, whenever it is read: the
    verdict the audit service recorded (`read_audit_window` reads that).
    """
    authority = deployment_authority(kit, history=True)
    client_options = kafka_options(kit, principal)
    return await read_window(
        kit.kafka_bootstrap, kit.topic_prefix, start, end, authority=authority, client_options=client_options, **options
    )


async def read_audit_window(
    database_url: str,
    prefix: str,
    start: datetime | None,
    end: datetime | None,
    *,
    tenant: str | None = None,
    limit: int = 5_000_000,
    progress: Callable[[int, int], None] | None = None,
) -> Window:
    """The same window, read from the audit service's log in PostgreSQL (its own reading functions).

    Non-duplicate rows of the deployment's topics are decoded by their topic; a row that is not a
    usable event, or one the audit service recorded as not valid (its signature refused, or not an event
    of its topic), is counted in `skipped` under the reason the audit recorded. `progress` is called with
    (rows decoded, rows read) as decoding goes, as `read_window` reports.
    """
    from services.audit import PostgresAuditLog, SearchFilters

    log = await PostgresAuditLog.connect(database_url, max_size=2)
    window = Window()
    try:
        since, until = _at_kafka_precision(start), _at_kafka_precision(end)  # as `read_window` reads the bus
        rows = await log.search(SearchFilters(tenant=tenant, since=since, until=until, topic_prefix=prefix), limit=limit)
    finally:
        await log.close()
    wanted = set(WINDOW_TOPICS)
    if progress is not None:
        progress(0, len(rows))
    for done, row in enumerate(rows, 1):
        if progress is not None and (done % _AUDIT_PROGRESS_EVERY == 0 or done == len(rows)):
            progress(done, len(rows))
        name = row.topic.removeprefix(prefix)
        if name not in wanted or row.duplicate:
            continue
        where = f"{row.topic}[{row.partition}]@{row.kafka_offset}"
        try:
            event = read_event(name, row.value)
        except Unreadable as exc:
            window.skipped.add(exc.reason, where, exc.detail)
            continue
        if not row.valid:  # readable, but the audit service refused it as the services do (its signature, above all)
            reason = _recorded_reason(row.invalid_reason)  # the detail is the rest: the code is said once
            window.skipped.add(reason, where, (row.invalid_reason or "").removeprefix(f"{reason}: "))
            continue
        ts = kafka_ms(row.kafka_ts)
        window.events.append(Recorded(name, row.partition, row.kafka_offset, ts, event))
    window.events.sort(key=lambda r: (r.timestamp_ms, r.topic, r.partition, r.offset))
    return window


_AUDIT_PROGRESS_EVERY = 2000  # rows between two progress reports of `read_audit_window` (as a poll of `read_window` holds)

_REASON = re.compile(r"^([a-z_]+): ")


def _recorded_reason(invalid_reason: str | None) -> str:
    """The reason code the audit recorded for a row it marked not valid (`signature_missing: …`), else `invalid_event`."""
    match = _REASON.match(invalid_reason or "")
    return match.group(1) if match else "invalid_event"
