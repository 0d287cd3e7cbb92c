"""Where the audit log lives: the one abstract base (`AuditLog`), its PostgreSQL implementation, and an in-memory twin.

Writes happen as the `tidegate_audit_writer` role (INSERT and SELECT only), one transaction per
batch, with COPY. Reads (verify, show, explain, search) go through the same base so that the
reading logic in `reading.py` and `verify.py` stays pure and testable in memory.

Each job has its module: the base with what both implementations share (`_log_base`), the in-memory twin
(`_memory_log`), and the PostgreSQL parts this module composes: the append path (`_pg_append`), reads
(`_pg_reads`), checkpoints, restores and prunes (`_pg_checkpoints`), conflicts and their acknowledgements
(`_pg_conflicts`), over what they share (`_pg_rows`).
"""

from __future__ import annotations

import asyncpg

from servicekit import create_pool
from services.audit._log_base import AuditLog, SearchFilters
from services.audit._memory_log import InMemoryAuditLog
from services.audit._pg_append import PgAppending
from services.audit._pg_checkpoints import PgCheckpoints
from services.audit._pg_conflicts import PgConflicts
from services.audit._pg_reads import PgReading
from services.audit._pg_rows import WRITER_ROLE

__all__ = ["WRITER_ROLE", "AuditLog", "InMemoryAuditLog", "PostgresAuditLog", "SearchFilters"]


class PostgresAuditLog(PgAppending, PgReading, PgCheckpoints, PgConflicts):
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
