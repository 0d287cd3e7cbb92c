"""The audit log's reads on PostgreSQL: chains, their heads and rows for verify, a task's rows for explain, search.

Each read is one statement but `heads` (two); a chain's rows and fingerprints stream through a cursor in a
read-only snapshot, so verify holds one chain's page at a time, never the log.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from services.audit._log_base import SearchFilters, story_key
from services.audit._pg_rows import SCHEMA, SELECT_COLUMNS, PgPart, canonical_headers, log_row
from services.audit.chain import Head
from services.audit.rows import Fingerprint, LogRow

__all__ = ["PgReading"]


_HEADS_OF = f"""
SELECT tp.topic, tp.partition, h.seq, h.hash, h.kafka_offset
FROM unnest($1::text[], $2::int[]) AS tp(topic, partition)
CROSS JOIN LATERAL (
    SELECT seq, hash, kafka_offset FROM {SCHEMA}.log l
    WHERE l.topic = tp.topic AND l.partition = tp.partition ORDER BY seq DESC LIMIT 1
) h
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


class PgReading(PgPart):
    """`AuditLog`'s reads on PostgreSQL."""

    async def heads(self, prefix: str = "") -> dict[tuple[str, int], Head]:
        """See `AuditLog`."""
        async with self.pool.acquire() as conn:
            chains = await conn.fetch(_CHAINS, prefix)
            rows = await conn.fetch(_HEADS_OF, [c["topic"] for c in chains], [c["partition"] for c in chains])
        return {(r["topic"], r["partition"]): Head(r["seq"], r["hash"], r["kafka_offset"]) for r in rows}

    async def chains(self, prefix: str = "") -> list[tuple[str, int]]:
        """See `AuditLog`."""
        return [(r["topic"], r["partition"]) for r in await self.pool.fetch(_CHAINS, prefix)]

    async def chain_rows(self, topic: str, partition: int, first: int = 1, last: int | None = None) -> AsyncIterator[LogRow]:
        """See `AuditLog`."""
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            query = (
                f"SELECT {SELECT_COLUMNS} FROM {SCHEMA}.log WHERE topic = $1 AND partition = $2 AND seq >= $3 "
                "AND ($4::bigint IS NULL OR seq <= $4) ORDER BY seq"
            )
            async for record in conn.cursor(query, topic, partition, first, last, prefetch=5000):
                yield log_row(record)

    async def fingerprints(self, topic: str, partition: int, first_offset: int) -> AsyncIterator[tuple[int, int, Fingerprint]]:
        """See `AuditLog`: the bytes hashed by PostgreSQL, so a row's value does not cross the network."""
        query = (
            f"SELECT kafka_offset, seq, kafka_ts, ts_type, sha256(key), headers::text, sha256(value) FROM {SCHEMA}.log "
            "WHERE topic = $1 AND partition = $2 AND kafka_offset >= $3 ORDER BY kafka_offset"
        )
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            async for r in conn.cursor(query, topic, partition, first_offset, prefetch=5000):
                yield r[0], r[1], Fingerprint(r[2], r[3], r[4], canonical_headers(r[5]), r[6])

    async def offset_gaps(self, topic: str, partition: int, begin: int, end: int) -> list[tuple[int, int]]:
        """See `AuditLog`."""
        return [(r["first"], r["last"]) for r in await self.pool.fetch(_OFFSET_GAPS, topic, partition, begin, end)]

    async def count(self) -> int:
        """See `AuditLog`."""
        return int(await self.pool.fetchval(f"SELECT count(*) FROM {SCHEMA}.log"))

    async def unflagged_event_ids(self, event_ids: Sequence[str]) -> set[str]:
        """See `AuditLog` (the append path's own lookup of an event's first row)."""
        query = f"SELECT DISTINCT event_id FROM {SCHEMA}.log WHERE event_id = ANY($1::text[]) AND valid AND NOT duplicate"
        return {r["event_id"] for r in await self.pool.fetch(query, list(event_ids))}

    async def row_at(self, topic: str, partition: int, offset: int) -> LogRow | None:
        """See `AuditLog` (what a dead letter names, and its redrive sends)."""
        query = f"SELECT {SELECT_COLUMNS} FROM {SCHEMA}.log WHERE topic = $1 AND partition = $2 AND kafka_offset = $3"
        record = await self.pool.fetchrow(query, topic, partition, offset)
        return log_row(record) if record is not None else None

    async def rows_of_ids(self, topic: str, event_type: str, beginnings: Sequence[str], limit: int) -> list[LogRow]:
        """The first rows (no duplicates) on `topic` of type `event_type` whose event ids begin with one of `beginnings`."""
        patterns = [b.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%" for b in beginnings]
        query = (
            f"SELECT {SELECT_COLUMNS} FROM {SCHEMA}.log WHERE topic = $1 AND event_type = $2 AND NOT duplicate "
            "AND event_id LIKE ANY($3::text[]) LIMIT $4"
        )
        return [log_row(r) for r in await self.pool.fetch(query, topic, event_type, patterns, limit)]

    async def task_rows(self, task_id: str, prefix: str = "") -> list[LogRow]:
        """See `AuditLog`."""
        records = await self.pool.fetch(
            f"SELECT {SELECT_COLUMNS} FROM {SCHEMA}.log WHERE (task_id = $1 OR (task_id IS NULL AND key = $2)) AND starts_with(topic, $3)",
            task_id,
            task_id.encode(),
            prefix,
        )
        return sorted((log_row(r) for r in records), key=story_key)

    async def search(self, filters: SearchFilters, *, limit: int = 100, newest: bool = False) -> list[LogRow]:
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
            ("valid", filters.valid),
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
        order = "kafka_ts, event_time, topic, partition, kafka_offset"
        if newest:  # the newest `limit`, read from the end, then put back in order
            order = ", ".join(f"{column} DESC" for column in order.split(", "))
        query = f"SELECT {SELECT_COLUMNS} FROM {SCHEMA}.log WHERE {where} ORDER BY {order} LIMIT ${len(args)}"
        rows = [log_row(r) for r in await self.pool.fetch(query, *args)]
        return rows[::-1] if newest else rows
