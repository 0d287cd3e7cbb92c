"""Placing observed records in their hash chains: pure, so both repositories share it exactly."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from services.audit.records import GENESIS, LogRow, Observed

__all__ = ["AppendResult", "Head", "chain_batch", "chain_records"]


@dataclass(frozen=True, slots=True)
class Head:
    """The last row of one topic-partition chain."""

    seq: int
    hash: bytes
    offset: int


EMPTY = Head(seq=0, hash=GENESIS, offset=-1)


@dataclass
class AppendResult:
    """What one batch did to the log."""

    rows: list[LogRow] = field(default_factory=list)
    already_recorded: int = 0
    duplicates: int = 0


def chain_records(
    records: Iterable[Observed],
    heads: Mapping[tuple[str, int], Head],
    known_event_ids: set[str],
    recorded_at: datetime,
    result: AppendResult,
) -> Iterator[tuple[Observed, LogRow]]:
    """Rows to append for `records` (each with the record it was made of), lazily (so COPY can stream them), counting into `result`.

    A record at or below its chain head's offset was recorded before (a redelivery after a crash or
    a rebalance) and is skipped: Kafka delivers a partition in offset order, so that is exactly
    "this position is in the log". A valid event whose id is already logged is appended flagged
    `duplicate`: the log keeps every record of the bus, and an event counts once.
    """
    current = dict(heads)
    seen = set(known_event_ids)
    for obs in records:
        tp = (obs.topic, obs.partition)
        head = current.get(tp, EMPTY)
        if obs.kafka_offset <= head.offset:
            result.already_recorded += 1
            continue
        duplicate = False
        if obs.valid and obs.event_id:
            duplicate = obs.event_id in seen
            seen.add(obs.event_id)
        result.duplicates += duplicate
        row = LogRow.link(obs, seq=head.seq + 1, prev_hash=head.hash, duplicate=duplicate, recorded_at=recorded_at)
        current[tp] = Head(row.seq, row.hash, row.kafka_offset)
        result.rows.append(row)
        yield obs, row


def chain_batch(
    records: Iterable[Observed],
    heads: Mapping[tuple[str, int], Head],
    known_event_ids: set[str],
    recorded_at: datetime,
) -> AppendResult:
    """`chain_records`, all at once: the rows to append are in the result's `rows`."""
    result = AppendResult()
    for _ in chain_records(records, heads, known_event_ids, recorded_at, result):
        pass
    return result
