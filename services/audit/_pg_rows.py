"""What every part of the PostgreSQL audit log shares: its schema, its writer role, its pool, and a row's way in and out.

The parts (`_pg_append`, `_pg_reads`, `_pg_checkpoints`, `_pg_conflicts`) each subclass `PgPart`;
`repository.PostgresAuditLog` composes them over one pool.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from services.audit._log_base import AuditLog
from services.audit.rows import COLUMNS, LogRow, headers_json

__all__ = ["SCHEMA", "SELECT_COLUMNS", "WRITER_ROLE", "PgPart", "canonical_headers", "db_tuple", "log_row"]

WRITER_ROLE = "tidegate_audit_writer"
SCHEMA = "audit"
SELECT_COLUMNS = ", ".join(COLUMNS)

_HEADERS = COLUMNS.index("headers")


class PgPart(AuditLog):
    """One job's methods of `PostgresAuditLog`, over the pool the composed log holds."""

    pool: asyncpg.Pool


def log_row(record: asyncpg.Record) -> LogRow:
    """A row read with `SELECT_COLUMNS`, its headers parsed from the jsonb column."""
    values = list(record.values())
    values[_HEADERS] = json.loads(values[_HEADERS])
    return LogRow(*values)


def canonical_headers(stored: str) -> str:
    """A row's headers as the hash covers them, from the jsonb column's text (which orders and spaces keys its own way)."""
    return headers_json(json.loads(stored))


def db_tuple(r: LogRow, headers: str | None = None) -> tuple[Any, ...]:
    """`r` as COPY writes it: the headers as JSON text (`headers`, when the record already made it, is not made again)."""
    return (*r[:_HEADERS], headers_json(r.headers) if headers is None else headers, *r[_HEADERS + 1 :])
