"""The audit log's checkpoints on PostgreSQL, and what hangs off one: the restores it marks and the prunes through it.

Checkpoints and restores are written as the writer role (a restore's checkpoint and the restore in one
transaction); a prune is `audit.prune_log`, which only the schema's owner and its members may run.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from services.audit._pg_rows import SCHEMA, WRITER_ROLE, PgPart
from services.audit.checkpoints import Checkpoint, Prune, Restore, UnreadableCheckpoint, read_checkpoint

__all__ = ["PgCheckpoints"]


def _read(record: asyncpg.Record) -> Checkpoint | UnreadableCheckpoint:
    """A stored row as a checkpoint, or the refusal of one that does not read as one (its heads are jsonb: any JSON)."""
    return read_checkpoint({**dict(record), "heads": json.loads(record["heads"])})


_PAGE = 100
"""Rows `newest_first` reads at a time: one page holds the newest signed checkpoint but where rows were forged above it."""


async def _insert_checkpoint(conn: asyncpg.Connection | PoolConnectionProxy, checkpoint: Checkpoint) -> bool:
    """Insert `checkpoint` (in the caller's transaction, as the writer); False if no row was stored.

    That is its id taken in its scope (another copy of the service), or the insert swallowed (a trigger returning NULL,
    a rule): `ON CONFLICT DO NOTHING` looks the same for both. True is no proof either (a trigger can rewrite the row
    into another scope or id and let it in), so the caller reads the row with that id back after every insert
    (`handlers.Checkpointer`) and says a refusal.
    """
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


class PgCheckpoints(PgPart):
    """`AuditLog`'s checkpoints, restores and prunes on PostgreSQL."""

    async def latest_checkpoint(self, scope: str = "") -> Checkpoint | None:
        """See `AuditLog`."""
        return await anext((cp async for cp in self.newest_first(scope) if isinstance(cp, Checkpoint)), None)

    async def newest_first(self, scope: str = "") -> AsyncIterator[Checkpoint | UnreadableCheckpoint]:
        """See `AuditLog`: a page of rows at a time, by id (keyset), so a reader that stops at the first it takes reads one page."""
        below: int | None = None
        while True:
            records = await self.pool.fetch(
                f"SELECT * FROM {SCHEMA}.checkpoints WHERE scope = $1 AND ($2::bigint IS NULL OR checkpoint_id < $2) "
                "ORDER BY checkpoint_id DESC LIMIT $3",
                scope,
                below,
                _PAGE,
            )
            for record in records:
                yield _read(record)
            if len(records) < _PAGE:
                return
            below = records[-1]["checkpoint_id"]

    async def checkpoint(self, scope: str, checkpoint_id: int) -> Checkpoint | UnreadableCheckpoint | None:
        """See `AuditLog`."""
        query = f"SELECT * FROM {SCHEMA}.checkpoints WHERE scope = $1 AND checkpoint_id = $2"
        record = await self.pool.fetchrow(query, scope, checkpoint_id)
        return _read(record) if record is not None else None

    async def add_checkpoint(self, checkpoint: Checkpoint) -> bool:
        """See `AuditLog`."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(f"SET LOCAL ROLE {WRITER_ROLE}")
            return await _insert_checkpoint(conn, checkpoint)

    async def checkpoints(self, scope: str = "") -> list[Checkpoint]:
        """See `AuditLog`."""
        return [cp for cp in await self._all(scope) if isinstance(cp, Checkpoint)]

    async def unreadable_checkpoints(self, scope: str = "") -> list[UnreadableCheckpoint]:
        """See `AuditLog`."""
        return [cp for cp in await self._all(scope) if isinstance(cp, UnreadableCheckpoint)]

    async def _all(self, scope: str) -> list[Checkpoint | UnreadableCheckpoint]:
        records = await self.pool.fetch(f"SELECT * FROM {SCHEMA}.checkpoints WHERE scope = $1 ORDER BY checkpoint_id", scope)
        return [_read(r) for r in records]

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
        records = await self.pool.fetch(
            f"SELECT checkpoint_id, superseded_from FROM {SCHEMA}.restores WHERE scope = $1 ORDER BY checkpoint_id", scope
        )
        return [Restore(checkpoint_id=r["checkpoint_id"], superseded_from=r["superseded_from"]) for r in records]

    async def prunes(self, scope: str = "") -> list[Prune]:
        """See `AuditLog`."""
        records = await self.pool.fetch(
            f"SELECT checkpoint_id, rows_removed, archive_sha256, pruned_at, pruned_by FROM {SCHEMA}.prunes "
            "WHERE scope = $1 ORDER BY checkpoint_id",
            scope,
        )
        return [Prune(**dict(r)) for r in records]

    async def prune(self, scope: str, checkpoint_id: int, archive_sha256: str, expected_rows: int) -> int:
        """See `AuditLog`: `audit.prune_log`, which only the schema's owner and its members (the operator's login) may run."""
        removed = await self.pool.fetchval(
            f"SELECT {SCHEMA}.prune_log($1, $2, $3, $4)", scope, checkpoint_id, archive_sha256, expected_rows
        )
        return int(removed)
