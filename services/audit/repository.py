"""Where the audit log lives: a Protocol, its PostgreSQL implementation, and an in-memory twin.

Writes happen as the `tidegate_audit_writer` role (INSERT and SELECT only), one transaction per
batch, with COPY. Reads (verify, show, explain, search) go through the same Protocol so that the
reading logic in `reading.py` and `verify.py` stays pure and testable in memory.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from servicekit import create_pool
from services.audit.acknowledgements import Acknowledgement
from services.audit.chain import AppendResult, Conflict, Head, Logged, RecordedConflict, chain_batch, chain_records
from services.audit.checkpoints import Checkpoint, Prune, Restore, chain_name, split_chain_name
from services.audit.records import COLUMNS, Fingerprint, LogRow, Observed, headers_json

__all__ = ["WRITER_ROLE", "AuditLog", "InMemoryAuditLog", "PostgresAuditLog", "SearchFilters"]

WRITER_ROLE = "tidegate_audit_writer"
SCHEMA = "audit"


@dataclass(frozen=True)
class SearchFilters:
    """What `tidegate audit search` can filter on; every field is optional and they combine with AND."""

    tenant: str | None = None
    tool: str | None = None
    outcome: str | None = None
    reason: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    trace_id: str | None = None
    task_id: str | None = None
    event_type: str | None = None
    action_id: str | None = None
    topic_prefix: str = ""
    include_duplicates: bool = False

    def matches(self, row: LogRow) -> bool:
        """The in-memory equivalent of the SQL filter."""
        return (
            (self.tenant is None or row.tenant_id == self.tenant)
            and (self.tool is None or row.tool == self.tool)
            and (self.outcome is None or row.outcome == self.outcome)
            and (self.reason is None or self.reason in row.reasons)
            and (self.since is None or row.kafka_ts >= self.since)
            and (self.until is None or row.kafka_ts < self.until)
            and (self.trace_id is None or row.trace_id == self.trace_id)
            and (self.task_id is None or row.task_id == self.task_id)
            and (self.event_type is None or row.event_type == self.event_type)
            and (self.action_id is None or row.action_id == self.action_id)
            and row.topic.startswith(self.topic_prefix)
            and (self.include_duplicates or not row.duplicate)
        )


def story_key(row: LogRow) -> tuple[Any, ...]:
    """Order of a task's story: Kafka time, then event time, then position."""
    return (row.kafka_ts, row.event_time or row.kafka_ts, row.topic, row.partition, row.kafka_offset)


class AuditLog(Protocol):
    """The append-only log and its checkpoints."""

    async def append(self, records: Sequence[Observed]) -> AppendResult:
        """Append `records` (in Kafka order per partition) in one transaction; skip positions already logged."""
        ...

    async def heads(self, prefix: str = "") -> dict[tuple[str, int], Head]:
        """The head of every chain whose topic starts with `prefix`."""
        ...

    async def latest_checkpoint(self, scope: str = "") -> Checkpoint | None:
        """The checkpoint of `scope` (a topic prefix) with the highest id, if any."""
        ...

    async def add_checkpoint(self, checkpoint: Checkpoint) -> bool:
        """Store a checkpoint; False if its id is taken in its scope (another copy of the service got there first)."""
        ...

    async def checkpoints(self, scope: str = "") -> list[Checkpoint]:
        """Every checkpoint of `scope`, by id."""
        ...

    async def add_restore(self, checkpoint: Checkpoint, *, superseded_from: int) -> bool:
        """Store the checkpoint of a restore and the restore, together (`Restore`); False if the id is taken (as `add_checkpoint`)."""
        ...

    async def restores(self, scope: str = "") -> list[Restore]:
        """Every restore of `scope`, by checkpoint id."""
        ...

    async def chains(self, prefix: str = "") -> list[tuple[str, int]]:
        """Every (topic, partition) whose topic starts with `prefix` and that has rows."""
        ...

    def chain_rows(self, topic: str, partition: int, first: int = 1, last: int | None = None) -> AsyncIterator[LogRow]:
        """Rows of one chain in seq order, from seq `first` through `last` (None: to the head)."""
        ...

    async def prunes(self, scope: str = "") -> list[Prune]:
        """Every prune of `scope`, by checkpoint id (`Prune`)."""
        ...

    async def prune(self, scope: str, checkpoint_id: int, archive_sha256: str, expected_rows: int) -> int:
        """Remove every row before the heads checkpoint `checkpoint_id` signed, in one transaction, and record it; the rows removed.

        Refused (nothing removed) when the count differs from `expected_rows`, a head row is not the one signed,
        or the log is already pruned through that checkpoint.
        """
        ...

    async def task_rows(self, task_id: str, prefix: str = "") -> list[LogRow]:
        """Every row about a task (its events, and records keyed by it) in the deployment `prefix`, in story order."""
        ...

    async def search(self, filters: SearchFilters, *, limit: int = 100) -> list[LogRow]:
        """Rows matching `filters`, oldest first, at most `limit`."""
        ...

    async def offset_gaps(self, topic: str, partition: int, begin: int, end: int) -> list[tuple[int, int]]:
        """The offsets of [begin, end) with no row, as (first, last) ranges, inclusive and in order."""
        ...

    async def count(self) -> int:
        """Rows in the log."""
        ...

    async def conflicts(self, prefix: str = "") -> list[RecordedConflict]:
        """Every conflict recorded in the deployment `prefix` (`chain.Conflict`), by position."""
        ...

    def fingerprints(self, topic: str, partition: int, first_offset: int) -> AsyncIterator[tuple[int, int, Fingerprint]]:
        """(offset, seq, fingerprint) of each row of one chain from offset `first_offset` on, in offset order."""
        ...

    async def acknowledgements(self, prefix: str = "") -> list[Acknowledgement]:
        """Every acknowledgement of a conflict stored in the deployment `prefix` (`acknowledgements.py`), verified or not."""
        ...

    async def add_acknowledgement(self, ack: Acknowledgement) -> None:
        """Store an operator's acknowledgement of a conflict (the operator's login: the service's may not)."""
        ...


# --- in memory ----------------------------------------------------------------------------------


@dataclass
class InMemoryAuditLog(AuditLog):
    """The twin used by unit tests: same chaining, same dedup, no database."""

    rows: list[LogRow] = field(default_factory=list)
    stored_checkpoints: dict[tuple[str, int], Checkpoint] = field(default_factory=dict)
    stored_restores: dict[tuple[str, int], Restore] = field(default_factory=dict)
    stored_prunes: dict[tuple[str, int], Prune] = field(default_factory=dict)
    stored_conflicts: dict[tuple[str, int, int, bytes], RecordedConflict] = field(default_factory=dict)
    stored_acks: list[Acknowledgement] = field(default_factory=list)
    fail_next: list[BaseException] = field(default_factory=list)

    async def append(self, records: Sequence[Observed]) -> AppendResult:
        """See `AuditLog`."""
        if self.fail_next:
            raise self.fail_next.pop(0)
        known = {r.event_id for r in self.rows if r.valid and not r.duplicate and r.event_id}
        heads = await self.heads()
        logged = {}
        for tp, (first, last) in _batch_ranges(records).items():
            if tp in heads and first <= heads[tp].offset:
                chain = [r for r in self.rows if (r.topic, r.partition) == tp]
                held = {r.kafka_offset: (r.seq, Fingerprint.of(r)) for r in chain if first <= r.kafka_offset <= last}
                logged[tp] = Logged(min(chain, key=lambda r: r.seq).kafka_offset, held)
        result = chain_batch(records, heads, known, datetime.now(UTC), logged)
        self.rows.extend(result.rows)
        for c in result.conflicts:
            recorded = _recorded(c, datetime.now(UTC))
            self.stored_conflicts.setdefault((c.record.topic, c.record.partition, c.record.kafka_offset, recorded.record_sha256), recorded)
        return result

    async def conflicts(self, prefix: str = "") -> list[RecordedConflict]:
        """See `AuditLog`."""
        return [c for _, c in sorted(self.stored_conflicts.items()) if c.topic.startswith(prefix)]

    async def acknowledgements(self, prefix: str = "") -> list[Acknowledgement]:
        """See `AuditLog`."""
        return [a for a in self.stored_acks if a.topic.startswith(prefix)]

    async def add_acknowledgement(self, ack: Acknowledgement) -> None:
        """See `AuditLog`."""
        self.stored_acks.append(ack)

    async def fingerprints(self, topic: str, partition: int, first_offset: int) -> AsyncIterator[tuple[int, int, Fingerprint]]:
        """See `AuditLog`."""
        mine = (r for r in self.rows if r.topic == topic and r.partition == partition and r.kafka_offset >= first_offset)
        for r in sorted(mine, key=lambda r: r.kafka_offset):
            yield r.kafka_offset, r.seq, Fingerprint.of(r)

    async def heads(self, prefix: str = "") -> dict[tuple[str, int], Head]:
        """See `AuditLog`."""
        heads: dict[tuple[str, int], Head] = {}
        for r in self.rows:
            if not r.topic.startswith(prefix):
                continue
            tp = (r.topic, r.partition)
            if tp not in heads or heads[tp].seq < r.seq:
                heads[tp] = Head(r.seq, r.hash, r.kafka_offset)
        return heads

    async def latest_checkpoint(self, scope: str = "") -> Checkpoint | None:
        """See `AuditLog`."""
        mine = await self.checkpoints(scope)
        return mine[-1] if mine else None

    async def add_checkpoint(self, checkpoint: Checkpoint) -> bool:
        """See `AuditLog`."""
        key = (checkpoint.scope, checkpoint.checkpoint_id)
        if key in self.stored_checkpoints:
            return False
        self.stored_checkpoints[key] = checkpoint
        return True

    async def checkpoints(self, scope: str = "") -> list[Checkpoint]:
        """See `AuditLog`."""
        return [cp for key, cp in sorted(self.stored_checkpoints.items()) if key[0] == scope]

    async def add_restore(self, checkpoint: Checkpoint, *, superseded_from: int) -> bool:
        """See `AuditLog`."""
        if not await self.add_checkpoint(checkpoint):
            return False
        restore = Restore(checkpoint_id=checkpoint.checkpoint_id, superseded_from=superseded_from)
        self.stored_restores[(checkpoint.scope, checkpoint.checkpoint_id)] = restore
        return True

    async def restores(self, scope: str = "") -> list[Restore]:
        """See `AuditLog`."""
        return [r for key, r in sorted(self.stored_restores.items()) if key[0] == scope]

    async def chains(self, prefix: str = "") -> list[tuple[str, int]]:
        """See `AuditLog`."""
        return sorted({(r.topic, r.partition) for r in self.rows if r.topic.startswith(prefix)})

    async def chain_rows(self, topic: str, partition: int, first: int = 1, last: int | None = None) -> AsyncIterator[LogRow]:
        """See `AuditLog`."""
        mine = (
            r for r in self.rows if r.topic == topic and r.partition == partition and first <= r.seq and (last is None or r.seq <= last)
        )
        for r in sorted(mine, key=lambda r: r.seq):
            yield r

    async def prunes(self, scope: str = "") -> list[Prune]:
        """See `AuditLog`."""
        return [p for key, p in sorted(self.stored_prunes.items()) if key[0] == scope]

    async def prune(self, scope: str, checkpoint_id: int, archive_sha256: str, expected_rows: int) -> int:
        """See `AuditLog` (the checks of `audit.prune_log`, in memory)."""
        cp = self.stored_checkpoints.get((scope, checkpoint_id))
        if cp is None:
            raise LookupError(f"no checkpoint {checkpoint_id} in scope {scope!r}")
        if any(key[0] == scope and key[1] >= checkpoint_id for key in self.stored_prunes):
            raise ValueError(f"the log of scope {scope!r} is already pruned through checkpoint {checkpoint_id} or later")
        below = {split_chain_name(name): int(head["seq"]) for name, head in cp.heads.items()}
        for (topic, partition), seq in below.items():
            signed = bytes.fromhex(cp.heads[chain_name(topic, partition)]["hash"])
            if not any(r.topic == topic and r.partition == partition and r.seq == seq and r.hash == signed for r in self.rows):
                raise ValueError(f"the row at {topic}[{partition}] seq {seq} is not the head checkpoint {checkpoint_id} signed")
        kept = [r for r in self.rows if r.seq >= below.get((r.topic, r.partition), 0)]
        removed = len(self.rows) - len(kept)
        if removed != expected_rows:
            raise ValueError(f"the prune would remove {removed} rows, the archive read {expected_rows}")
        self.rows = kept
        self.stored_prunes[(scope, checkpoint_id)] = Prune(
            checkpoint_id=checkpoint_id,
            rows_removed=removed,
            archive_sha256=archive_sha256,
            pruned_at=datetime.now(UTC),
            pruned_by="memory",
        )
        return removed

    async def task_rows(self, task_id: str, prefix: str = "") -> list[LogRow]:
        """See `AuditLog`."""
        key = task_id.encode()
        mine = (r for r in self.rows if r.topic.startswith(prefix) and (r.task_id == task_id or (r.task_id is None and r.key == key)))
        return sorted(mine, key=story_key)

    async def search(self, filters: SearchFilters, *, limit: int = 100) -> list[LogRow]:
        """See `AuditLog`."""
        return sorted((r for r in self.rows if filters.matches(r)), key=story_key)[:limit]

    async def offset_gaps(self, topic: str, partition: int, begin: int, end: int) -> list[tuple[int, int]]:
        """See `AuditLog`."""
        have = sorted(
            {r.kafka_offset for r in self.rows if r.topic == topic and r.partition == partition and begin <= r.kafka_offset < end}
        )
        gaps, expected = [], begin
        for offset in [*have, end]:
            if offset > expected:
                gaps.append((expected, offset - 1))
            expected = offset + 1
        return gaps

    async def count(self) -> int:
        """See `AuditLog`."""
        return len(self.rows)


def _batch_ranges(records: Sequence[Observed]) -> dict[tuple[str, int], tuple[int, int]]:
    """The first and last offset of each chain a batch reaches."""
    ranges: dict[tuple[str, int], tuple[int, int]] = {}
    for r in records:
        tp = (r.topic, r.partition)
        first, last = ranges.get(tp, (r.kafka_offset, r.kafka_offset))
        ranges[tp] = (min(first, r.kafka_offset), max(last, r.kafka_offset))
    return ranges


def _recorded(c: Conflict, detected_at: datetime) -> RecordedConflict:
    r = c.record
    return RecordedConflict(
        topic=r.topic, partition=r.partition, kafka_offset=r.kafka_offset, logged_seq=c.seq, differs=list(c.differs),
        record_sha256=Fingerprint.of(r).digest(), detected_at=detected_at,
    )  # fmt: skip


# --- PostgreSQL ---------------------------------------------------------------------------------

_SELECT = ", ".join(COLUMNS)

_HEADS_OF = f"""
SELECT tp.topic, tp.partition, h.seq, h.hash, h.kafka_offset
FROM unnest($1::text[], $2::int[]) AS tp(topic, partition)
CROSS JOIN LATERAL (
    SELECT seq, hash, kafka_offset FROM {SCHEMA}.log l
    WHERE l.topic = tp.topic AND l.partition = tp.partition ORDER BY seq DESC LIMIT 1
) h
"""

# The heads of the chains a batch reaches ($1, $2) and, only for a chain the batch reaches behind its head (its first
# offset $3 at or below the head's: a redelivery, or tampering), the chain's first kept offset and the fingerprints of
# its rows at the batch's offsets ($3..$4): one round trip, and no more read for a batch past its heads (the usual case).
_BATCH_HEADS = f"""
SELECT tp.topic, tp.partition, h.seq, h.hash, h.kafka_offset, k.kept_from,
       b.offsets, b.seqs, b.stamps, b.stamp_types, b.keys, b.headers, b.vals
FROM unnest($1::text[], $2::int[], $3::bigint[], $4::bigint[]) AS tp(topic, partition, first, last)
CROSS JOIN LATERAL (
    SELECT seq, hash, kafka_offset FROM {SCHEMA}.log l
    WHERE l.topic = tp.topic AND l.partition = tp.partition ORDER BY seq DESC LIMIT 1
) h
LEFT JOIN LATERAL (
    SELECT kafka_offset AS kept_from FROM {SCHEMA}.log l
    WHERE tp.first <= h.kafka_offset AND l.topic = tp.topic AND l.partition = tp.partition ORDER BY seq LIMIT 1
) k ON true
LEFT JOIN LATERAL (
    SELECT array_agg(l.kafka_offset) AS offsets, array_agg(l.seq) AS seqs, array_agg(l.kafka_ts) AS stamps,
           array_agg(l.ts_type) AS stamp_types, array_agg(sha256(l.key)) AS keys, array_agg(l.headers::text) AS headers,
           array_agg(sha256(l.value)) AS vals
    FROM {SCHEMA}.log l
    WHERE tp.first <= h.kafka_offset AND l.topic = tp.topic AND l.partition = tp.partition
      AND l.kafka_offset BETWEEN tp.first AND least(tp.last, h.kafka_offset)
) b ON true
"""

_ACK_COLUMNS = "topic, partition, kafka_offset, record_sha256, logged_seq, differs, reason, acked_by, acked_at, key_id, signature"

_INSERT_CONFLICT = f"""
INSERT INTO {SCHEMA}.conflicts
    (topic, partition, kafka_offset, logged_seq, differs, kafka_ts, ts_type, key, headers, value, record_sha256)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
ON CONFLICT DO NOTHING
"""

# The gaps between consecutive recorded offsets of one partition in [$3, $4), the end included (the
# extra row at $4): an index-only walk of UNIQUE (topic, partition, kafka_offset).
_OFFSET_GAPS = f"""
SELECT prev + 1 AS first, off - 1 AS last FROM (
    SELECT kafka_offset AS off, lag(kafka_offset, 1, $3::bigint - 1) OVER (ORDER BY kafka_offset) AS prev
    FROM {SCHEMA}.log WHERE topic = $1 AND partition = $2 AND kafka_offset >= $3 AND kafka_offset < $4
    UNION ALL
    SELECT $4::bigint, coalesce(max(kafka_offset), $3::bigint - 1)
    FROM {SCHEMA}.log WHERE topic = $1 AND partition = $2 AND kafka_offset >= $3 AND kafka_offset < $4
) g WHERE off > prev + 1 ORDER BY first
"""

# Loose index scan over the primary key: one probe per chain instead of reading every row. Topics
# compare bytewise (COLLATE "C"), so one prefix's chains are one contiguous range starting at $1.
_CHAINS = f"""
WITH RECURSIVE tp AS (
    (SELECT topic, partition FROM {SCHEMA}.log WHERE topic >= $1 ORDER BY topic, partition LIMIT 1)
    UNION ALL
    SELECT n.topic, n.partition FROM tp CROSS JOIN LATERAL (
        SELECT topic, partition FROM {SCHEMA}.log l WHERE (l.topic, l.partition) > (tp.topic, tp.partition)
        ORDER BY topic, partition LIMIT 1
    ) n
    WHERE starts_with(tp.topic, $1)
)
SELECT topic, partition FROM tp WHERE starts_with(topic, $1)
"""


_HEADERS = COLUMNS.index("headers")


def _row(record: asyncpg.Record) -> LogRow:
    values = list(record.values())
    values[_HEADERS] = json.loads(values[_HEADERS])
    return LogRow(*values)


def _canonical_headers(stored: str) -> str:
    """A row's headers as the hash covers them, from the jsonb column's text (which orders and spaces keys its own way)."""
    return headers_json(json.loads(stored))


def _logged(r: asyncpg.Record) -> Logged:
    """The `Logged` of one chain from a `_BATCH_HEADS` row that read it."""
    parts = (r["seqs"], r["stamps"], r["stamp_types"], r["keys"], r["headers"], r["vals"])
    rows = {
        offset: (seq, Fingerprint(stamp, stamp_type, key, _canonical_headers(headers), value))
        for offset, seq, stamp, stamp_type, key, headers, value in zip(r["offsets"] or (), *(p or () for p in parts), strict=True)
    }
    return Logged(r["kept_from"], rows)


def _conflict_args(c: Conflict) -> tuple[Any, ...]:
    r = c.record
    headers = r.headers_json if r.headers_json is not None else headers_json(r.headers)
    return (
        r.topic, r.partition, r.kafka_offset, c.seq, list(c.differs), r.kafka_ts, r.ts_type, r.key, headers, r.value,
        Fingerprint.of(r).digest(),
    )  # fmt: skip


def _db_tuple(r: LogRow, headers: str | None = None) -> tuple[Any, ...]:
    """`r` as COPY writes it: the headers as JSON text (`headers`, when the record already made it, is not made again)."""
    return (*r[:_HEADERS], headers_json(r.headers) if headers is None else headers, *r[_HEADERS + 1 :])


def _checkpoint(record: asyncpg.Record) -> Checkpoint:
    return Checkpoint(
        scope=record["scope"],
        checkpoint_id=record["checkpoint_id"],
        taken_at=record["taken_at"],
        heads=json.loads(record["heads"]),
        rows=record["rows"],
        key_id=record["key_id"],
        signature=record["signature"],
    )


async def _insert_checkpoint(conn: asyncpg.Connection | PoolConnectionProxy, checkpoint: Checkpoint) -> bool:
    """Insert `checkpoint` (in the caller's transaction, as the writer); False if its id is taken in its scope."""
    status = await conn.execute(
        f"INSERT INTO {SCHEMA}.checkpoints (checkpoint_id, taken_at, heads, rows, key_id, signature, scope) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (scope, checkpoint_id) DO NOTHING",
        checkpoint.checkpoint_id,
        checkpoint.taken_at,
        json.dumps(checkpoint.heads),
        checkpoint.rows,
        checkpoint.key_id,
        checkpoint.signature,
        checkpoint.scope,
    )
    return bool(status == "INSERT 0 1")


class PostgresAuditLog(AuditLog):
    """The log in PostgreSQL schema `audit`; writes as `tidegate_audit_writer`."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @classmethod
    async def connect(cls, dsn: str, *, max_size: int = 4) -> PostgresAuditLog:
        """A log over a new pool (the CLI and benchmarks; the service passes its own pool); a refused login is a `ConnectionError`."""
        return cls(await create_pool(dsn, max_size=max_size))

    async def close(self) -> None:
        """Close the pool."""
        await self.pool.close()

    async def append(self, records: Sequence[Observed]) -> AppendResult:
        """See `AuditLog`."""
        if not records:
            return AppendResult()
        ranges = _batch_ranges(records)
        pairs = sorted(ranges)
        topics, partitions = [p[0] for p in pairs], [p[1] for p in pairs]
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(f"SET LOCAL ROLE {WRITER_ROLE}")
            # Two copies of the service own a partition at once only during a rebalance; the lock
            # (taken in a fixed order) makes the second wait and then see the first one's rows.
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(t || ':' || p::text, 1009)) "
                "FROM unnest($1::text[], $2::int[]) WITH ORDINALITY AS x(t, p, o) ORDER BY o",
                topics,
                partitions,
            )
            found = await conn.fetch(_BATCH_HEADS, topics, partitions, [ranges[p][0] for p in pairs], [ranges[p][1] for p in pairs])
            heads = {(r["topic"], r["partition"]): Head(r["seq"], r["hash"], r["kafka_offset"]) for r in found}
            logged = {(r["topic"], r["partition"]): _logged(r) for r in found if r["kept_from"] is not None}
            ids = list({r.event_id for r in records if r.valid and r.event_id})
            known = {
                r["event_id"]
                for r in await conn.fetch(
                    f"SELECT event_id FROM {SCHEMA}.log WHERE event_id = ANY($1::text[]) AND valid AND NOT duplicate", ids
                )
            }
            result = AppendResult()
            # Lazily: asyncpg streams COPY data in chunks, so PostgreSQL stores the first rows while
            # the next ones are still being hashed.
            rows = (
                _db_tuple(row, obs.headers_json) for obs, row in chain_records(records, heads, known, datetime.now(UTC), result, logged)
            )
            await conn.copy_records_to_table("log", schema_name=SCHEMA, columns=COLUMNS, records=rows)
            if result.conflicts:  # evidence, durable with the batch: never dropped
                await conn.executemany(_INSERT_CONFLICT, [_conflict_args(c) for c in result.conflicts])
        return result

    async def conflicts(self, prefix: str = "") -> list[RecordedConflict]:
        """See `AuditLog`."""
        async with self.pool.acquire() as conn:
            records = await conn.fetch(
                f"SELECT topic, partition, kafka_offset, logged_seq, differs, record_sha256, detected_at FROM {SCHEMA}.conflicts "
                "WHERE starts_with(topic, $1) ORDER BY topic, partition, kafka_offset, record_sha256",
                prefix,
            )
        return [RecordedConflict(**dict(r)) for r in records]

    async def acknowledgements(self, prefix: str = "") -> list[Acknowledgement]:
        """See `AuditLog`: none in a schema older than `009_conflict_acks.sql` (every conflict then stays a break)."""
        try:
            async with self.pool.acquire() as conn:
                records = await conn.fetch(f"SELECT {_ACK_COLUMNS} FROM {SCHEMA}.conflict_acks WHERE starts_with(topic, $1)", prefix)
        except asyncpg.UndefinedTableError:
            return []
        return [Acknowledgement(**{**dict(r), "differs": tuple(r["differs"])}) for r in records]

    async def add_acknowledgement(self, ack: Acknowledgement) -> None:
        """See `AuditLog`."""
        async with self.pool.acquire() as conn:
            await conn.execute(
                f"INSERT INTO {SCHEMA}.conflict_acks ({_ACK_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                ack.topic, ack.partition, ack.kafka_offset, ack.record_sha256, ack.logged_seq, list(ack.differs), ack.reason,
                ack.acked_by, ack.acked_at, ack.key_id, ack.signature,
            )  # fmt: skip

    async def fingerprints(self, topic: str, partition: int, first_offset: int) -> AsyncIterator[tuple[int, int, Fingerprint]]:
        """See `AuditLog`: the bytes hashed by PostgreSQL, so a row's value does not cross the network."""
        query = (
            f"SELECT kafka_offset, seq, kafka_ts, ts_type, sha256(key), headers::text, sha256(value) FROM {SCHEMA}.log "
            "WHERE topic = $1 AND partition = $2 AND kafka_offset >= $3 ORDER BY kafka_offset"
        )
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            async for r in conn.cursor(query, topic, partition, first_offset, prefetch=5000):
                yield r[0], r[1], Fingerprint(r[2], r[3], r[4], _canonical_headers(r[5]), r[6])

    async def heads(self, prefix: str = "") -> dict[tuple[str, int], Head]:
        """See `AuditLog`."""
        async with self.pool.acquire() as conn:
            chains = await conn.fetch(_CHAINS, prefix)
            rows = await conn.fetch(_HEADS_OF, [c["topic"] for c in chains], [c["partition"] for c in chains])
        return {(r["topic"], r["partition"]): Head(r["seq"], r["hash"], r["kafka_offset"]) for r in rows}

    async def latest_checkpoint(self, scope: str = "") -> Checkpoint | None:
        """See `AuditLog`."""
        async with self.pool.acquire() as conn:
            record = await conn.fetchrow(f"SELECT * FROM {SCHEMA}.checkpoints WHERE scope = $1 ORDER BY checkpoint_id DESC LIMIT 1", scope)
        return _checkpoint(record) if record else None

    async def add_checkpoint(self, checkpoint: Checkpoint) -> bool:
        """See `AuditLog`."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(f"SET LOCAL ROLE {WRITER_ROLE}")
            return await _insert_checkpoint(conn, checkpoint)

    async def add_restore(self, checkpoint: Checkpoint, *, superseded_from: int) -> bool:
        """See `AuditLog`."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(f"SET LOCAL ROLE {WRITER_ROLE}")
            if not await _insert_checkpoint(conn, checkpoint):
                return False
            await conn.execute(
                f"INSERT INTO {SCHEMA}.restores (scope, checkpoint_id, superseded_from) VALUES ($1, $2, $3)",
                checkpoint.scope,
                checkpoint.checkpoint_id,
                superseded_from,
            )
        return True

    async def restores(self, scope: str = "") -> list[Restore]:
        """See `AuditLog`."""
        async with self.pool.acquire() as conn:
            records = await conn.fetch(
                f"SELECT checkpoint_id, superseded_from FROM {SCHEMA}.restores WHERE scope = $1 ORDER BY checkpoint_id", scope
            )
        return [Restore(checkpoint_id=r["checkpoint_id"], superseded_from=r["superseded_from"]) for r in records]

    async def checkpoints(self, scope: str = "") -> list[Checkpoint]:
        """See `AuditLog`."""
        async with self.pool.acquire() as conn:
            records = await conn.fetch(f"SELECT * FROM {SCHEMA}.checkpoints WHERE scope = $1 ORDER BY checkpoint_id", scope)
        return [_checkpoint(r) for r in records]

    async def chains(self, prefix: str = "") -> list[tuple[str, int]]:
        """See `AuditLog`."""
        async with self.pool.acquire() as conn:
            return [(r["topic"], r["partition"]) for r in await conn.fetch(_CHAINS, prefix)]

    async def offset_gaps(self, topic: str, partition: int, begin: int, end: int) -> list[tuple[int, int]]:
        """See `AuditLog`."""
        async with self.pool.acquire() as conn:
            return [(r["first"], r["last"]) for r in await conn.fetch(_OFFSET_GAPS, topic, partition, begin, end)]

    async def chain_rows(self, topic: str, partition: int, first: int = 1, last: int | None = None) -> AsyncIterator[LogRow]:
        """See `AuditLog`."""
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            query = (
                f"SELECT {_SELECT} FROM {SCHEMA}.log WHERE topic = $1 AND partition = $2 AND seq >= $3 "
                "AND ($4::bigint IS NULL OR seq <= $4) ORDER BY seq"
            )
            async for record in conn.cursor(query, topic, partition, first, last, prefetch=5000):
                yield _row(record)

    async def prunes(self, scope: str = "") -> list[Prune]:
        """See `AuditLog`."""
        async with self.pool.acquire() as conn:
            records = await conn.fetch(
                f"SELECT checkpoint_id, rows_removed, archive_sha256, pruned_at, pruned_by FROM {SCHEMA}.prunes "
                "WHERE scope = $1 ORDER BY checkpoint_id",
                scope,
            )
        return [Prune(**dict(r)) for r in records]

    async def prune(self, scope: str, checkpoint_id: int, archive_sha256: str, expected_rows: int) -> int:
        """See `AuditLog`: `audit.prune_log`, which only the schema's owner and its members (the operator's login) may run."""
        async with self.pool.acquire() as conn:
            removed = await conn.fetchval(f"SELECT {SCHEMA}.prune_log($1, $2, $3, $4)", scope, checkpoint_id, archive_sha256, expected_rows)
        return int(removed)

    async def task_rows(self, task_id: str, prefix: str = "") -> list[LogRow]:
        """See `AuditLog`."""
        async with self.pool.acquire() as conn:
            records = await conn.fetch(
                f"SELECT {_SELECT} FROM {SCHEMA}.log WHERE (task_id = $1 OR (task_id IS NULL AND key = $2)) AND starts_with(topic, $3)",
                task_id,
                task_id.encode(),
                prefix,
            )
        return sorted((_row(r) for r in records), key=story_key)

    async def search(self, filters: SearchFilters, *, limit: int = 100) -> list[LogRow]:
        """See `AuditLog`."""
        clauses, args = [], []

        def add(clause: str, value: Any) -> None:
            args.append(value)
            clauses.append(clause.format(f"${len(args)}"))

        for column, value in (
            ("tenant_id", filters.tenant),
            ("tool", filters.tool),
            ("outcome", filters.outcome),
            ("trace_id", filters.trace_id),
            ("task_id", filters.task_id),
            ("event_type", filters.event_type),
            ("action_id", filters.action_id),
        ):
            if value is not None:
                add(f"{column} = {{}}", value)
        if filters.reason is not None:
            add("reasons @> ARRAY[{}::text] AND cardinality(reasons) > 0", filters.reason)  # matches the partial index
        if filters.since is not None:
            add("kafka_ts >= {}", filters.since)
        if filters.until is not None:
            add("kafka_ts < {}", filters.until)
        if filters.topic_prefix:
            add("starts_with(topic, {})", filters.topic_prefix)
        if not filters.include_duplicates:
            clauses.append("NOT duplicate")
        where = " AND ".join(clauses) or "true"
        args.append(limit)
        query = (
            f"SELECT {_SELECT} FROM {SCHEMA}.log WHERE {where} "
            f"ORDER BY kafka_ts, event_time, topic, partition, kafka_offset LIMIT ${len(args)}"
        )
        async with self.pool.acquire() as conn:
            return [_row(r) for r in await conn.fetch(query, *args)]

    async def count(self) -> int:
        """See `AuditLog`."""
        async with self.pool.acquire() as conn:
            return int(await conn.fetchval(f"SELECT count(*) FROM {SCHEMA}.log"))
