"""`tidegate audit verify --content`: every row whose offset the bus still holds holds the bus's record there.

The chains prove rows were not changed after they were written, and `--complete` that every offset has a row;
neither proves who wrote a row. The audit's database login may INSERT: a row of its own content, correctly
chained, at an offset the service had not reached yet is intact and complete. This compares each row with the
record the bus holds at its offset (`Fingerprint`: timestamp and type, key, headers, value), chain by chain, and
names a row that differs, and a row at an offset the bus holds no record at (before its end: compacted away,
or never written; at or after it: the bus never had it). It reads every record the bus keeps: slower than
`--complete`, which reads only the offsets with no row. Records with no row are `--complete`'s to name.
A row that differs from the bus's record where an operator acknowledged the conflict of that very record and row
(`acknowledgements.py`) is listed apart, not a mismatch: it is the row the acknowledged conflict named.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Collection
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import BaseModel, ConfigDict

from services.audit.completeness import Offsets, bus_offsets, pruned_through
from services.audit.records import kafka_fingerprint
from services.audit.repository import AuditLog
from services.audit.rows import Fingerprint

__all__ = ["ContentReport", "Mismatch", "check_content"]

_EVERY = 5000  # records between two progress reports


class Mismatch(BaseModel):
    """A row that does not hold what the bus holds at its offset."""

    model_config = ConfigDict(frozen=True)

    topic: str
    partition: int
    seq: int
    offset: int
    problem: str

    def describe(self) -> str:
        """One line for a person."""
        return f"{self.topic}[{self.partition}] seq {self.seq} (offset {self.offset}): {self.problem}"


class ContentReport(BaseModel):
    """What was compared, and the rows that differ from the bus (empty when every compared row holds the bus's record)."""

    model_config = ConfigDict(frozen=True)

    partitions: int
    compared: int
    seconds: float
    mismatches: list[Mismatch]
    not_on_bus: int = 0
    """Rows of chains whose partition the bus does not have (a topic deleted, or made up): not compared."""
    acknowledged: list[Mismatch] = []
    """Rows that differ from the bus's record where an operator acknowledged that conflict (the record and the row): not mismatches."""

    @property
    def ok(self) -> bool:
        """True when every row the bus can vouch for holds the bus's record."""
        return not self.mismatches


async def _bus_records(
    consumer: AIOKafkaConsumer, topic: str, partition: int, begin: int, end: int, timeout_s: float
) -> AsyncIterator[tuple[int, Fingerprint]]:
    """(offset, fingerprint) of every record of one partition in [begin, end), in order (`consumer` is assigned it alone)."""
    if begin >= end:
        return
    tp = TopicPartition(topic, partition)
    consumer.assign([tp])
    consumer.seek(tp, begin)
    deadline = time.monotonic() + timeout_s
    while await consumer.position(tp) < end:
        batch = await consumer.getmany(tp, timeout_ms=1000)
        if batch.get(tp):
            deadline = time.monotonic() + timeout_s
        elif time.monotonic() > deadline:
            raise TimeoutError(f"{topic}[{partition}]: no progress reading offsets {begin}..{end - 1} in {timeout_s}s")
        for r in batch.get(tp, []):
            if r.offset < end:
                yield (
                    r.offset,
                    kafka_fingerprint(
                        timestamp_ms=r.timestamp, timestamp_type=r.timestamp_type, key=r.key, value=r.value, headers=r.headers
                    ),
                )


Acknowledged = Collection[tuple[str, int, int, bytes, int]]
"""(topic, partition, offset, the bus record's digest, the logged row's seq) of each conflict an operator acknowledged."""


async def _compare_chain(
    log: AuditLog,
    bus: AsyncIterator[tuple[int, Fingerprint]],
    topic: str,
    partition: int,
    begin: int,
    end: int,
    seen: Callable[[], None],
    acknowledged: Acknowledged = (),
) -> tuple[int, list[Mismatch], list[Mismatch]]:
    """Merge one chain's rows from `begin` on with the bus's records of [begin, end).

    Returns the rows compared, those that differ, and those that differ where an operator acknowledged that conflict.
    """
    mismatches: list[Mismatch] = []
    known: list[Mismatch] = []
    compared = 0
    pending = await anext(bus, None)
    async for offset, seq, stored in log.fingerprints(topic, partition, begin):
        while pending is not None and pending[0] < offset:
            seen()
            pending = await anext(bus, None)  # a record with no row: `--complete` names it
        compared += 1
        if offset >= end:
            problem = f"the bus never had this offset (its partition ends at {end - 1}): a row the audit service did not write"
        elif pending is None or pending[0] != offset:
            problem = "the bus holds no record at this offset (compacted away, or never written): a row the audit service did not write?"
        elif differs := pending[1].differences(stored):
            problem = f"differs from the record the bus holds at this offset ({', '.join(differs)}): a row the audit service did not write"
            if acknowledged and (topic, partition, offset, pending[1].digest(), seq) in acknowledged:
                known.append(Mismatch(topic=topic, partition=partition, seq=seq, offset=offset, problem=problem + " (acknowledged)"))
                continue
        else:
            continue
        mismatches.append(Mismatch(topic=topic, partition=partition, seq=seq, offset=offset, problem=problem))
    while pending is not None:
        seen()
        pending = await anext(bus, None)
    return compared, mismatches, known


async def check_content(
    log: AuditLog,
    bootstrap: str,
    prefix: str,
    *,
    client_options: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
    timeout_s: float = 30.0,
    acknowledged: Acknowledged = (),
) -> ContentReport:
    """Compare every row of the deployment `prefix` whose offset the bus still holds (or is past its end) with the bus's record.

    The rows before each chain's prune anchor are archived (`pruned_through`): compared from the anchor on, as `--complete` does.
    `progress(done, total)` is told the bus records read, of those the bus holds in the compared ranges.
    `acknowledged`: the conflicts operators acknowledged (`VerifyReport.acknowledged`); the row each names is listed apart.
    """
    started = time.perf_counter()
    held: Offsets = await bus_offsets(bootstrap, prefix, client_options=client_options)
    anchors = await pruned_through(log, prefix)
    ranges = {tp: (max(begin, min(anchors.get(tp, begin), end)), end) for tp, (begin, end) in held.items()}
    total = sum(end - begin for begin, end in ranges.values())
    done = 0

    def seen() -> None:
        nonlocal done
        done += 1
        if progress is not None and done % _EVERY == 0:
            progress(done, total)

    if progress is not None:
        progress(0, total)
    compared, mismatches, known, not_on_bus = 0, [], [], 0
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None, max_poll_records=5000, **(client_options or {})
    )
    await consumer.start()
    try:
        for topic, partition in sorted({*ranges, *await log.chains(prefix)}):
            if (topic, partition) not in ranges:
                not_on_bus += sum([1 async for _ in log.fingerprints(topic, partition, 0)])
                continue
            begin, end = ranges[(topic, partition)]
            bus = _bus_records(consumer, topic, partition, begin, end, timeout_s)
            n, found, acked = await _compare_chain(log, bus, topic, partition, begin, end, seen, acknowledged)
            if past := [m.offset for m in found if m.offset >= end]:
                # Rows of records the bus took after its ends were read (the audit records as it reads, comparing takes a
                # while): compared with the bus as it is now, and named only if it still never had them.
                tp = TopicPartition(topic, partition)
                now = (await consumer.end_offsets([tp]))[tp]
                if now > min(past):
                    again = _bus_records(consumer, topic, partition, min(past), now, timeout_s)
                    _, later, later_acked = await _compare_chain(log, again, topic, partition, min(past), now, seen, acknowledged)
                    found = [m for m in found if m.offset < min(past)] + later
                    acked += later_acked
            compared += n
            mismatches.extend(found)
            known.extend(acked)
    finally:
        await consumer.stop()
    if progress is not None:
        progress(done, total)
    return ContentReport(
        partitions=len(ranges), compared=compared, seconds=time.perf_counter() - started, mismatches=mismatches, not_on_bus=not_on_bus,
        acknowledged=known,
    )  # fmt: skip
