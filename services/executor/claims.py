"""Where the executor claims each action id before calling a tool: PostgreSQL, and an in-memory twin.

Whoever works on an action holds its lock (a PostgreSQL session advisory lock) from the claim to the
outcome. The lock dies with the process's connection, so a `running` row nobody holds is a call
that was interrupted by a crash, and a redelivery never races the process still working on it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any, Protocol

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from services.executor.domain import CallError, ClaimRecord, Status

__all__ = ["ClaimSession", "ClaimStore", "InMemoryClaimStore", "PgClaimStore"]


class ClaimSession(Protocol):
    """One action id, held exclusively for as long as the session is open."""

    async def get(self) -> ClaimRecord | None:
        """The record, if the action was ever claimed."""
        ...

    async def claim(self, record: ClaimRecord) -> ClaimRecord:
        """Create the record (status `claimed`)."""
        ...

    async def running(self, attempts: int) -> None:
        """Mark that attempt number `attempts` is about to call the tool."""
        ...

    async def finish(
        self,
        status: Status,
        *,
        result: dict[str, Any] | None,
        error: CallError | None,
        attempts: int,
        duration_ms: float,
        cost_usd: float,
    ) -> ClaimRecord:
        """Record the outcome; the action never runs again."""
        ...

    async def remember_result(self, event_json: str) -> str:
        """Keep the result event about to be published, unless one is kept already; return the one kept."""
        ...


class ClaimStore(Protocol):
    """The claims of every action id."""

    def hold(self, action_id: str) -> Any:
        """Async context manager: wait for exclusive hold of `action_id`, yield a ClaimSession."""
        ...

    def try_hold(self, action_id: str) -> Any:
        """Async context manager: a ClaimSession if nobody holds `action_id` now, else None."""
        ...

    async def interrupted(self) -> list[ClaimRecord]:
        """Records left `running` (some may still be held by a live process)."""
        ...


def _lock_key(action_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"executor:{action_id}".encode()).digest()[:8], "big", signed=True)


def _record(row: asyncpg.Record) -> ClaimRecord:
    return ClaimRecord(
        action_id=row["action_id"],
        event_id=row["event_id"],
        tenant_id=row["tenant_id"],
        task_id=row["task_id"],
        step=row["step"],
        tool=row["tool"],
        args=json.loads(row["args"]),
        action_digest=row["action_digest"],
        status=row["status"],
        result=json.loads(row["result"]) if row["result"] is not None else None,
        error=CallError.from_json(json.loads(row["error"])) if row["error"] is not None else None,
        attempts=row["attempts"],
        duration_ms=row["duration_ms"],
        cost_usd=row["cost_usd"],
        result_event=row["result_event"],
    )


class _PgSession:
    def __init__(self, conn: asyncpg.Connection | PoolConnectionProxy, action_id: str, owner: str, prefix: str) -> None:
        self._conn = conn
        self._action_id = action_id
        self._owner = owner
        self._prefix = prefix

    async def get(self) -> ClaimRecord | None:
        row = await self._conn.fetchrow("SELECT * FROM executor.actions WHERE action_id = $1", self._action_id)
        return _record(row) if row else None

    async def claim(self, record: ClaimRecord) -> ClaimRecord:
        row = await self._conn.fetchrow(
            "INSERT INTO executor.actions"
            " (action_id, event_id, tenant_id, task_id, step, tool, args, action_digest, status, owner, topic_prefix) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, 'claimed', $9, $10) ON CONFLICT (action_id) DO NOTHING RETURNING *",
            record.action_id,
            record.event_id,
            record.tenant_id,
            record.task_id,
            record.step,
            record.tool,
            json.dumps(record.args),
            record.action_digest,
            self._owner,
            self._prefix,
        )
        if row is None:  # cannot happen while we hold the lock, but never claim twice
            raise RuntimeError(f"action {record.action_id} was claimed concurrently")
        return _record(row)

    async def running(self, attempts: int) -> None:
        await self._conn.execute(
            "UPDATE executor.actions SET status = 'running', attempts = $2, owner = $3, "
            "started_at = coalesce(started_at, now()), updated_at = now() WHERE action_id = $1",
            self._action_id,
            attempts,
            self._owner,
        )

    async def finish(
        self,
        status: Status,
        *,
        result: dict[str, Any] | None,
        error: CallError | None,
        attempts: int,
        duration_ms: float,
        cost_usd: float,
    ) -> ClaimRecord:
        row = await self._conn.fetchrow(
            "UPDATE executor.actions SET status = $2, result = $3::jsonb, error = $4::jsonb, attempts = $5, duration_ms = $6, "
            "cost_usd = $7, finished_at = now(), updated_at = now() WHERE action_id = $1 RETURNING *",
            self._action_id,
            status,
            json.dumps(result) if result is not None else None,
            json.dumps(error.to_json()) if error is not None else None,
            attempts,
            duration_ms,
            cost_usd,
        )
        assert row is not None
        return _record(row)

    async def remember_result(self, event_json: str) -> str:
        kept = await self._conn.fetchval(
            "UPDATE executor.actions SET result_event = coalesce(result_event, $2) WHERE action_id = $1 RETURNING result_event",
            self._action_id,
            event_json,
        )
        assert kept is not None
        return str(kept)


class PgClaimStore(ClaimStore):
    """Claims in the executor's schema (`executor.actions`), held with session advisory locks."""

    def __init__(self, pool: asyncpg.Pool, owner: str, prefix: str = "tidegate.") -> None:
        self._pool = pool
        self._owner = owner
        self._prefix = prefix  # the deployment's topic prefix: its rows are the only ones it settles at start

    @asynccontextmanager
    async def hold(self, action_id: str) -> AsyncIterator[ClaimSession]:
        """Wait until nobody else holds `action_id`, then hold it (the lock dies with our connection)."""
        async with self._pool.acquire() as conn:
            key = _lock_key(action_id)
            await conn.execute("SELECT pg_advisory_lock($1)", key)
            try:
                yield _PgSession(conn, action_id, self._owner, self._prefix)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", key)

    @asynccontextmanager
    async def try_hold(self, action_id: str) -> AsyncIterator[ClaimSession | None]:
        """Hold `action_id` if nobody does now; yield None otherwise."""
        async with self._pool.acquire() as conn:
            key = _lock_key(action_id)
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
                yield None
                return
            try:
                yield _PgSession(conn, action_id, self._owner, self._prefix)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", key)

    async def interrupted(self) -> list[ClaimRecord]:
        """This deployment's rows left `running`, oldest first (another prefix's rows are its own executor's to settle)."""
        rows = await self._pool.fetch(
            "SELECT * FROM executor.actions WHERE status = 'running' AND topic_prefix = $1 ORDER BY updated_at", self._prefix
        )
        return [_record(r) for r in rows]


class _MemorySession:
    def __init__(self, store: InMemoryClaimStore, action_id: str) -> None:
        self._store = store
        self._action_id = action_id

    async def get(self) -> ClaimRecord | None:
        return self._store.records.get(self._action_id)

    async def claim(self, record: ClaimRecord) -> ClaimRecord:
        if self._action_id in self._store.records:
            raise RuntimeError(f"action {self._action_id} was claimed concurrently")
        self._store.records[self._action_id] = record
        return record

    async def running(self, attempts: int) -> None:
        self._store.records[self._action_id] = replace(self._store.records[self._action_id], status="running", attempts=attempts)

    async def finish(
        self,
        status: Status,
        *,
        result: dict[str, Any] | None,
        error: CallError | None,
        attempts: int,
        duration_ms: float,
        cost_usd: float,
    ) -> ClaimRecord:
        rec = replace(
            self._store.records[self._action_id],
            status=status,
            result=result,
            error=error,
            attempts=attempts,
            duration_ms=duration_ms,
            cost_usd=cost_usd,
        )
        self._store.records[self._action_id] = rec
        return rec

    async def remember_result(self, event_json: str) -> str:
        rec = self._store.records[self._action_id]
        if rec.result_event is None:
            rec = self._store.records[self._action_id] = replace(rec, result_event=event_json)
        assert rec.result_event is not None
        return rec.result_event


class InMemoryClaimStore(ClaimStore):
    """The in-memory twin of PgClaimStore, for unit tests."""

    def __init__(self) -> None:
        self.records: dict[str, ClaimRecord] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    @asynccontextmanager
    async def hold(self, action_id: str) -> AsyncIterator[ClaimSession]:
        """Wait for the action's lock, then hold it."""
        async with self._locks.setdefault(action_id, asyncio.Lock()):
            yield _MemorySession(self, action_id)

    @asynccontextmanager
    async def try_hold(self, action_id: str) -> AsyncIterator[ClaimSession | None]:
        """Hold the action if its lock is free; yield None otherwise."""
        lock = self._locks.setdefault(action_id, asyncio.Lock())
        if lock.locked():
            yield None
            return
        async with lock:
            yield _MemorySession(self, action_id)

    async def interrupted(self) -> list[ClaimRecord]:
        """Records left `running`."""
        return [r for r in self.records.values() if r.status == "running"]
