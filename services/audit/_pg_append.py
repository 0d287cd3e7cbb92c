"""The audit log's append path on PostgreSQL: one transaction a batch, as the writer role, its rows sent with COPY.

Per batch, five round trips: BEGIN; the writer role and the advisory locks of its chains (`_LOCKS`); one read of their
heads and of the event ids it repeats (`_BATCH_HEADS`); the COPY (streamed while the rows are hashed), and the conflicts
found, durable with the batch; COMMIT.
`bench/audit_bench.py` times it ("append path").
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg

from services.audit._log_base import batch_ranges
from services.audit._pg_rows import SCHEMA, WRITER_ROLE, PgPart, canonical_headers, db_tuple
from services.audit.chain import AppendResult, Conflict, Head, Logged, chain_records
from services.audit.rows import COLUMNS, Fingerprint, Observed, headers_json

__all__ = ["PgAppending"]


# The batch's transaction takes the writer role ($3; `set_config(..., true)` is `SET LOCAL ROLE`) and, in the same
# statement, the locks of the chains it reaches ($1, $2), in a fixed order. Nothing in it reads a table: what is read
# under the locks is read by the statements after it, whose snapshots are taken once it holds them.
_LOCKS = (
    "SELECT pg_advisory_xact_lock(hashtextextended(x.t || ':' || x.p::text, 1009)) "
    "FROM (SELECT set_config('role', $3, true)) AS writer, unnest($1::text[], $2::int[]) WITH ORDINALITY AS x(t, p, o) ORDER BY x.o"
)

# The heads of the chains a batch reaches ($1, $2; a row for each, its head NULL when the chain is empty) and, only for a
# chain the batch reaches behind its head (its first offset $3 at or below the head's: a redelivery, or tampering), the
# chain's first kept offset and the fingerprints of its rows at the batch's offsets ($3..$4); on each row, the event ids
# of the batch ($5) the log holds already as valid and not duplicate: one round trip, and no more read for a batch past
# its heads (the usual case).
_BATCH_HEADS = f"""
SELECT tp.topic, tp.partition, h.seq, h.hash, h.kafka_offset, k.kept_from,
       b.offsets, b.seqs, b.stamps, b.stamp_types, b.keys, b.headers, b.vals,
       ARRAY(SELECT e.event_id FROM {SCHEMA}.log e WHERE e.event_id = ANY($5::text[]) AND e.valid AND NOT e.duplicate) AS known
FROM unnest($1::text[], $2::int[], $3::bigint[], $4::bigint[]) AS tp(topic, partition, first, last)
LEFT JOIN LATERAL (
    SELECT seq, hash, kafka_offset FROM {SCHEMA}.log l
    WHERE l.topic = tp.topic AND l.partition = tp.partition ORDER BY seq DESC LIMIT 1
) h ON true
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

_INSERT_CONFLICT = f"""
INSERT INTO {SCHEMA}.conflicts
    (topic, partition, kafka_offset, logged_seq, differs, kafka_ts, ts_type, key, headers, value, record_sha256)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
ON CONFLICT DO NOTHING
"""


def _logged(r: asyncpg.Record) -> Logged:
    """The `Logged` of one chain from a `_BATCH_HEADS` row that read it."""
    parts = (r["seqs"], r["stamps"], r["stamp_types"], r["keys"], r["headers"], r["vals"])
    rows = {
        offset: (seq, Fingerprint(stamp, stamp_type, key, canonical_headers(headers), value))
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


class PgAppending(PgPart):
    """`AuditLog.append` on PostgreSQL."""

    async def append(self, records: Sequence[Observed]) -> AppendResult:
        """See `AuditLog`."""
        if not records:
            return AppendResult()
        ranges = batch_ranges(records)
        pairs = sorted(ranges)
        topics, partitions = [p[0] for p in pairs], [p[1] for p in pairs]
        async with self.pool.acquire() as conn, conn.transaction():
            # Two copies of the service own a partition at once only during a rebalance; the lock
            # (taken in a fixed order) makes the second wait and then see the first one's rows.
            await conn.execute(_LOCKS, topics, partitions, WRITER_ROLE)
            ids = list({r.event_id for r in records if r.valid and r.event_id})
            found = await conn.fetch(_BATCH_HEADS, topics, partitions, [ranges[p][0] for p in pairs], [ranges[p][1] for p in pairs], ids)
            heads = {(r["topic"], r["partition"]): Head(r["seq"], r["hash"], r["kafka_offset"]) for r in found if r["seq"] is not None}
            logged = {(r["topic"], r["partition"]): _logged(r) for r in found if r["kept_from"] is not None}
            known = set(found[0]["known"]) if found else set()
            result = AppendResult()
            # Lazily: asyncpg streams COPY data in chunks, so PostgreSQL stores the first rows while
            # the next ones are still being hashed.
            rows = (db_tuple(row, obs.headers_json) for obs, row in chain_records(records, heads, known, datetime.now(UTC), result, logged))
            await conn.copy_records_to_table("log", schema_name=SCHEMA, columns=COLUMNS, records=rows)
            if result.conflicts:  # evidence, durable with the batch: never dropped
                await conn.executemany(_INSERT_CONFLICT, [_conflict_args(c) for c in result.conflicts])
        return result
