"""The audit log's conflicts on PostgreSQL (recorded by the append path) and the operators' acknowledgements of them."""

from __future__ import annotations

import asyncpg

from services.audit._pg_rows import SCHEMA, PgPart, canonical_headers
from services.audit.acknowledgements import Acknowledgement
from services.audit.chain import RecordedConflict
from services.audit.rows import Fingerprint

__all__ = ["PgConflicts"]


_ACK_COLUMNS = "topic, partition, kafka_offset, record_sha256, logged_seq, differs, reason, acked_by, acked_at, key_id, signature"


class PgConflicts(PgPart):
    """`AuditLog`'s conflicts and acknowledgements on PostgreSQL."""

    async def conflicts(self, prefix: str = "") -> list[RecordedConflict]:
        """See `AuditLog`: each with the digest of the record its row stores, re-derived (bytes hashed by PostgreSQL)."""
        records = await self.pool.fetch(
            "SELECT topic, partition, kafka_offset, logged_seq, differs, record_sha256, detected_at, kafka_ts, ts_type, "
            f"sha256(key) AS key_sha256, headers::text AS headers, sha256(value) AS value_sha256 FROM {SCHEMA}.conflicts "
            "WHERE starts_with(topic, $1) ORDER BY topic, partition, kafka_offset, record_sha256",
            prefix,
        )
        return [
            RecordedConflict(
                r["topic"],
                r["partition"],
                r["kafka_offset"],
                r["logged_seq"],
                r["differs"],
                r["record_sha256"],
                r["detected_at"],
                stored_sha256=_stored_digest(r),
            )
            for r in records
        ]

    async def acknowledgements(self, prefix: str = "") -> list[Acknowledgement]:
        """See `AuditLog`: none in a schema older than `009_conflict_acks.sql` (every conflict then stays a break)."""
        try:
            records = await self.pool.fetch(f"SELECT {_ACK_COLUMNS} FROM {SCHEMA}.conflict_acks WHERE starts_with(topic, $1)", prefix)
        except asyncpg.UndefinedTableError:
            return []
        return [Acknowledgement(**{**dict(r), "differs": tuple(r["differs"])}) for r in records]

    async def add_acknowledgement(self, ack: Acknowledgement) -> None:
        """See `AuditLog`."""
        await self.pool.execute(
            f"INSERT INTO {SCHEMA}.conflict_acks ({_ACK_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            ack.topic, ack.partition, ack.kafka_offset, ack.record_sha256, ack.logged_seq, list(ack.differs), ack.reason,
            ack.acked_by, ack.acked_at, ack.key_id, ack.signature,
        )  # fmt: skip


def _stored_digest(r: asyncpg.Record) -> bytes:
    """The digest of the record a conflict row stores: what its `record_sha256` is, unless someone else wrote the row."""
    return Fingerprint(r["kafka_ts"], r["ts_type"], r["key_sha256"], canonical_headers(r["headers"]), r["value_sha256"]).digest()
