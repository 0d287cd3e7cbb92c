"""`tidegate audit verify --complete`: every offset the bus still holds has its row in the audit log.

The hash chains prove that no recorded row was changed or removed from the middle of a chain; they
cannot show a record the audit service never wrote (it was stopped, or a row went before it was
chained). Completeness compares the other way: for every partition of every topic of the
deployment, each offset between the earliest the broker keeps (retention) and the latest must have
exactly one row (one at most is the table's UNIQUE constraint). A gap in the log is read back from
the bus, so an offset that holds no record (compacted away, a transaction marker) is not reported.
After a prune (`tidegate audit archive --prune`) each pruned chain is compared from its anchor on: the offsets
before it left the database for an archive (`verify --archive` proves those), and are counted as archived.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import BaseModel, ConfigDict

from servicekit.partitions import cluster_now
from services.audit.checkpoints import split_chain_name
from services.audit.repository import AuditLog

__all__ = ["CompletenessReport", "Missing", "bus_offsets", "check_complete", "find_missing", "recorded_missing"]

Offsets = dict[tuple[str, int], tuple[int, int]]
"""(topic, partition) -> (earliest offset the broker keeps, next offset to be written)."""


class Missing(BaseModel):
    """Offsets of one partition that hold a record on the bus and have no row in the audit log."""

    model_config = ConfigDict(frozen=True)

    topic: str
    partition: int
    first: int
    last: int
    count: int
    at_end: bool
    recorded_before: int | None = None
    """The offset the audit service's consumer group had committed in this partition, when it was asked and is past
    `first`: the service had recorded these records (it commits only what it stored), so their rows were removed."""

    def describe(self) -> str:
        """One line for a person."""
        offsets = f"offset {self.first}" if self.first == self.last else f"offsets {self.first}..{self.last}"
        if self.recorded_before is not None:
            tail = (
                f" (the audit service had recorded them: its consumer group committed offset {self.recorded_before}; "
                "their rows were removed from the log)"
            )
        else:
            tail = " (the newest: is the audit service running and caught up?)" if self.at_end else ""
        return f"{self.topic}[{self.partition}] {offsets}: {self.count} record(s) not in the audit log{tail}"


def recorded_missing(missing: list[Missing], committed: dict[tuple[str, int], int]) -> list[Missing]:
    """`missing`, each range the audit's consumer group had committed past (`committed`: per partition) marked as recorded."""
    return [
        m.model_copy(update={"recorded_before": committed[(m.topic, m.partition)]})
        if committed.get((m.topic, m.partition), -1) > m.first
        else m
        for m in missing
    ]


class CompletenessReport(BaseModel):
    """What was compared and what is missing (empty when every record of the window is in the log)."""

    model_config = ConfigDict(frozen=True)

    topics: int
    partitions: int
    offsets: int
    seconds: float
    missing: list[Missing]
    archived: int = 0  # offsets the bus still holds that a prune moved to an archive (before each chain's anchor): not compared

    @property
    def ok(self) -> bool:
        """True when every offset in the retention window has its row."""
        return not self.missing

    @property
    def missing_records(self) -> int:
        """How many records are missing in all."""
        return sum(m.count for m in self.missing)


async def bus_offsets(bootstrap: str, prefix: str, *, client_options: dict[str, Any] | None = None) -> Offsets:
    """Earliest and end offsets of every partition of every topic under `prefix`, as the broker has them now."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None, **(client_options or {}))
    await consumer.start()
    try:
        cluster = await cluster_now(consumer)
        topics = sorted(t for t in cluster.topics() if t.startswith(prefix))
        tps = [TopicPartition(t, p) for t in topics for p in sorted(cluster.partitions_for_topic(t) or ())]
        if not tps:
            return {}
        begins = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    return {(tp.topic, tp.partition): (begins[tp], ends[tp]) for tp in tps}


async def _present(
    bootstrap: str,
    gaps: Iterable[tuple[str, int, int, int]],
    *,
    timeout_s: float = 30.0,
    client_options: dict[str, Any] | None = None,
) -> dict[tuple[str, int], list[int]]:
    """The offsets inside each gap (topic, partition, first, last) that hold a record on the bus."""
    wanted = list(gaps)
    found: dict[tuple[str, int], list[int]] = {}
    if not wanted:
        return found
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None, max_poll_records=5000, **(client_options or {})
    )
    await consumer.start()
    try:
        for topic, partition, first, last in wanted:
            tp = TopicPartition(topic, partition)
            consumer.assign([tp])
            consumer.seek(tp, first)
            deadline = time.monotonic() + timeout_s
            while await consumer.position(tp) <= last:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{topic}[{partition}]: no progress reading offsets {first}..{last} in {timeout_s}s")
                batch = await consumer.getmany(tp, timeout_ms=1000)
                for record in batch.get(tp, []):
                    if first <= record.offset <= last:
                        found.setdefault((topic, partition), []).append(record.offset)
    finally:
        await consumer.stop()
    return found


def _ranges(offsets: list[int]) -> list[tuple[int, int]]:
    ranges: list[tuple[int, int]] = []
    for offset in sorted(offsets):
        if ranges and offset == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], offset)
        else:
            ranges.append((offset, offset))
    return ranges


async def find_missing(log: AuditLog, bootstrap: str, offsets: Offsets, *, client_options: dict[str, Any] | None = None) -> list[Missing]:
    """The records of `offsets` that have no row in `log`, confirmed on the bus, as ranges."""
    gaps = [(t, p, first, last) for (t, p), (begin, end) in offsets.items() for first, last in await log.offset_gaps(t, p, begin, end)]
    present = await _present(bootstrap, gaps, client_options=client_options)
    missing = []
    for (topic, partition), found in sorted(present.items()):
        end = offsets[(topic, partition)][1]
        for first, last in _ranges(found):
            missing.append(
                Missing(topic=topic, partition=partition, first=first, last=last, count=last - first + 1, at_end=last == end - 1)
            )
    return missing


async def check_complete(
    log: AuditLog,
    bootstrap: str,
    prefix: str,
    *,
    client_options: dict[str, Any] | None = None,
    catch_up_s: float = 0.0,
    waiting: Callable[[list[Missing]], None] | None = None,
) -> CompletenessReport:
    """Compare every offset of every topic of the deployment `prefix` on the bus with the audit log.

    On a live deployment the newest records of a partition may be on the bus and not yet recorded
    (the audit service is a poll behind; it also records its own checkpoints, published on a timer).
    With `catch_up_s`, records missing at the end of their partition are looked for again, every half
    second for up to that long, before they count as missing (`waiting` is told once, with them). The
    offsets compared are those of the start: what is written meanwhile is not asked for. A record
    missing before the end of its partition is not waited for: the audit service records each
    partition in order, so it is missing for good.
    """
    started = time.perf_counter()
    held = await bus_offsets(bootstrap, prefix, client_options=client_options)
    anchors = await pruned_through(log, prefix)
    offsets = {tp: (max(begin, min(anchors.get(tp, begin), end)), end) for tp, (begin, end) in held.items()}
    missing = await find_missing(log, bootstrap, offsets, client_options=client_options)
    deadline = time.monotonic() + catch_up_s
    if catch_up_s > 0 and waiting is not None and any(m.at_end for m in missing):
        waiting([m for m in missing if m.at_end])
    while (newest := {(m.topic, m.partition) for m in missing if m.at_end}) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        again = await find_missing(log, bootstrap, {tp: offsets[tp] for tp in newest}, client_options=client_options)
        missing = sorted(
            [m for m in missing if (m.topic, m.partition) not in newest] + again, key=lambda m: (m.topic, m.partition, m.first)
        )
    return CompletenessReport(
        topics=len({t for t, _ in offsets}),
        partitions=len(offsets),
        offsets=sum(end - begin for begin, end in offsets.values()),
        seconds=time.perf_counter() - started,
        missing=missing,
        archived=sum(offsets[tp][0] - begin for tp, (begin, _) in held.items()),
    )


async def pruned_through(log: AuditLog, scope: str) -> dict[tuple[str, int], int]:
    """The offset of each chain's anchor after the latest prune of `scope` (the first offset kept); empty if never pruned."""
    prunes = await log.prunes(scope)
    if not prunes:
        return {}
    latest = prunes[-1].checkpoint_id
    anchor = next((cp for cp in await log.checkpoints(scope) if cp.checkpoint_id == latest), None)
    if anchor is None:  # a prune row with no checkpoint: `verify` names it; nothing is taken as archived here
        return {}
    return {split_chain_name(name): int(head["offset"]) for name, head in anchor.heads.items()}
