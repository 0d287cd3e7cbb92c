"""Placing observed records in their hash chains: pure, so both repositories share it exactly."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from services.audit.rows import GENESIS, Fingerprint, LogRow, Observed, linked

__all__ = ["AppendResult", "Conflict", "Head", "Logged", "RecordedConflict", "chain_batch", "chain_records"]


@dataclass(frozen=True, slots=True)
class Head:
    """The last row of one topic-partition chain."""

    seq: int
    hash: bytes
    offset: int


EMPTY = Head(seq=0, hash=GENESIS, offset=-1)
_EMPTY = (EMPTY.seq, EMPTY.hash, EMPTY.offset)


@dataclass(frozen=True)
class Logged:
    """What a chain holds at the offsets of a batch that are behind its head: to tell a redelivery from a conflict.

    Read only for the chains a batch reaches behind (a redelivery, or tampering: rare), never for a batch past the head.
    """

    kept_from: int
    """The offset of the chain's first row in the database: the rows before were pruned into an archive."""
    rows: dict[int, tuple[int, Fingerprint]] = field(default_factory=dict)
    """offset -> (seq, fingerprint) of the rows the chain holds at those offsets."""


@dataclass(frozen=True)
class Conflict:
    """A record the bus delivered at a position the log is past, that the log does not hold as delivered: evidence of tampering.

    Either the row at that position holds other content (written by someone other than the audit service: the
    genuine record never reached the log), or there is no row there though the chain is past it (a row was
    inserted ahead of the genuine records, which the service would otherwise take as already recorded).
    """

    record: Observed
    """The record as the bus delivered it (the genuine one: the bus is out of reach of the database's logins)."""
    seq: int | None
    """The row the log holds at that position (None: no row, though the chain is past it)."""
    differs: tuple[str, ...]
    """What differs (`Fingerprint.differences`); empty when there is no row."""

    def describe(self) -> str:
        """One line for a person (and the log)."""
        r = self.record
        where = f"{r.topic}[{r.partition}] offset {r.kafka_offset}"
        if self.seq is None:
            return f"{where}: the bus delivered a record where the log holds no row, though the chain is past that offset (row put ahead?)"
        return (
            f"{where}: the record the bus delivered differs from the logged row seq {self.seq} ({', '.join(self.differs)}): "
            "the row was not written from this record (tampering?)"
        )


@dataclass(frozen=True)
class RecordedConflict:
    """A conflict as `audit.conflicts` keeps it (the genuine record's bytes stay in the table; verify names the position)."""

    topic: str
    partition: int
    kafka_offset: int
    logged_seq: int | None
    differs: list[str]
    record_sha256: bytes
    detected_at: datetime
    stored_sha256: bytes | None = None
    """The digest of the record the row stores, re-derived when read (None: the store keeps no record to re-derive it from)."""

    @property
    def forged(self) -> bool:
        """True when the row's `record_sha256` is not its stored record's digest: no conflict the service recorded."""
        return self.stored_sha256 is not None and self.stored_sha256 != self.record_sha256

    def problem(self) -> str:
        """What `verify` says of it."""
        when = self.detected_at.strftime("%Y-%m-%d %H:%M:%S")
        if self.logged_seq is None:
            what = (
                "the bus delivered a record here and the log has no row at this offset, though its chain is past it (a row inserted ahead?)"
            )
        else:
            what = f"the record the bus delivered differs from the logged row seq {self.logged_seq} ({', '.join(self.differs)})"
        return (
            f"conflict recorded at {when}: {what}; the genuine record is in audit.conflicts "
            f"(record_sha256 {self.record_sha256.hex()[:16]}…): the log was written by someone other than the audit service"
        )


@dataclass
class AppendResult:
    """What one batch did to the log."""

    rows: list[LogRow] = field(default_factory=list)
    already_recorded: int = 0
    duplicates: int = 0
    conflicts: list[Conflict] = field(default_factory=list)


def chain_records(
    records: Iterable[Observed],
    heads: Mapping[tuple[str, int], Head],
    known_event_ids: set[str],
    recorded_at: datetime,
    result: AppendResult,
    logged: Mapping[tuple[str, int], Logged] | None = None,
) -> Iterator[tuple[Observed, LogRow]]:
    """Rows to append for `records` (each with the record it was made of), lazily (so COPY can stream them), counting into `result`.

    A record at or below its chain head's offset is a redelivery (after a crash or a rebalance) when the
    row at its position holds it (`logged`: the same `Fingerprint`), and is skipped. Any other record
    there is a `Conflict` (the row holds other content, or there is none though the chain is past it):
    not appended (the position is taken), and never dropped silently: it is in `result.conflicts`.
    A record before the chain's first kept row was pruned into an archive: skipped as recorded.
    A valid event whose id is already logged is appended flagged `duplicate`: the log keeps every
    record of the bus, and an event counts once.
    """
    # Each chain's head as (seq, hash, offset) while the batch is placed: a `Head` made for every row cost more than its hash's copy.
    current = {tp: (h.seq, h.hash, h.offset) for tp, h in heads.items()}
    seen = set(known_event_ids)
    rows = result.rows
    for obs in records:
        tp = (obs.topic, obs.partition)
        seq, prev_hash, offset = current.get(tp, _EMPTY)
        if obs.kafka_offset <= offset:
            conflict = _behind_head(obs, (logged or {}).get(tp))
            if conflict is None:
                result.already_recorded += 1
            else:
                result.conflicts.append(conflict)
            continue
        duplicate = False
        if obs.valid and obs.event_id:
            duplicate = obs.event_id in seen
            seen.add(obs.event_id)
            result.duplicates += duplicate
        row = linked(obs, seq + 1, prev_hash, duplicate, recorded_at)
        current[tp] = (seq + 1, row.hash, obs.kafka_offset)
        rows.append(row)
        yield obs, row


def _behind_head(obs: Observed, logged: Logged | None) -> Conflict | None:
    """None when the log holds `obs` at its position (a redelivery) or pruned it; else the conflict."""
    if logged is not None and obs.kafka_offset < logged.kept_from:
        return None  # archived: the chain in the database starts after it
    stored = logged.rows.get(obs.kafka_offset) if logged is not None else None
    if stored is None:
        return Conflict(obs, None, ())
    seq, fingerprint = stored
    differs = Fingerprint.of(obs).differences(fingerprint)
    return Conflict(obs, seq, tuple(differs)) if differs else None


def chain_batch(
    records: Iterable[Observed],
    heads: Mapping[tuple[str, int], Head],
    known_event_ids: set[str],
    recorded_at: datetime,
    logged: Mapping[tuple[str, int], Logged] | None = None,
) -> AppendResult:
    """`chain_records`, all at once: the rows to append are in the result's `rows`, the conflicts in its `conflicts`."""
    result = AppendResult()
    for _ in chain_records(records, heads, known_event_ids, recorded_at, result, logged):
        pass
    return result
