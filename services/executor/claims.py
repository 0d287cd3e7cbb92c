"""Where the executor claims each action id before calling a tool: PostgreSQL, and an in-memory twin.

Whoever works on an action holds its lock (a PostgreSQL session advisory lock) from the claim to the
outcome. The lock dies with the process's connection, so a `running` row nobody holds is a call
that was interrupted by a crash, and a redelivery never races the process still working on it; a
`waiting` row is one between two attempts (a backoff), with no call in flight.
A session lock, not a transaction's: `running` must be committed before the tool is called, while
the lock is still held. The pool's reset of a released connection (`pg_advisory_unlock_all()`, in
the same round trip as the rest of the reset) ends it, so no statement of its own unlocks it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from servicekit import NO_FLUSH
from servicekit.row_proofs import row_refused
from services.executor.domain import CallError, ClaimRecord

__all__ = ["ClaimSession", "ClaimStore", "InMemoryClaimStore", "PgClaimStore", "Returned", "WithOutcome"]


@dataclass(frozen=True)
class WithOutcome:
    """A write of the action's that goes into another of its statements as a CTE.

    The statement recording its outcome (`ClaimSession.finish`), or the next one marking an attempt running
    (`ClaimSession.with_running`).

    Attributes:
        sql: A data-modifying statement (`INSERT …`) whose parameters are numbered from `{first}` on
            (`"$" + str(first + i)`, made by `at`).
        args: Its parameters, in order.
    """

    sql: str
    args: tuple[Any, ...]

    def at(self, first: int) -> str:
        """The statement with its parameters numbered from `first`."""
        return re.sub(r"\$(\d+)", lambda m: f"${int(m.group(1)) + first - 1}", self.sql)


@dataclass
class Returned:
    """The row a write handed to `ClaimSession.with_running` returned (`RETURNING`), once the `running` mark has gone through.

    Attributes:
        ran: Whether the statement carrying the write has run (and committed).
        row: The write's row, its columns by name (None when it returned none, or before it ran).
    """

    ran: bool = False
    row: dict[str, Any] | None = None


class ClaimSession(Protocol):
    """One action id, held exclusively for as long as the session is open."""

    @property
    def connection(self) -> asyncpg.Connection | PoolConnectionProxy | None:
        """The database connection that holds the claim (None in memory): the action's other statements run on it.

        One connection an action: no further acquisition from the pool, and no further reset on release.
        """
        ...

    async def get(self) -> ClaimRecord | None:
        """The record, if the action was ever claimed."""
        ...

    async def claim(self, record: ClaimRecord) -> ClaimRecord:
        """Create the record (status `claimed`)."""
        ...

    async def running(self, attempts: int) -> None:
        """Mark that attempt number `attempts` is about to call the tool (flushed: durable before the call).

        The write handed to `with_running` since the last mark goes into the same statement, so in the same transaction.
        """
        ...

    def with_running(self, write: WithOutcome) -> Returned:
        """Make `write` (one, returning at most one row) part of the next `running` statement: durable with it, and one transaction fewer.

        It is so durable before the call. What it returned is in the `Returned` once that statement has gone through.

        Only for a session with a connection: an in-memory store keeps what it is given at once.
        """
        ...

    async def waiting(self, attempts: int, error: CallError, retry_at: datetime) -> None:
        """Mark that attempt number `attempts` failed with `error` (safe to repeat) and the next may be made at `retry_at`.

        No call is in flight until `running` again: a process that stops now leaves the next attempt to the next
        process, which does not take the action for a call cut off mid-way.
        """
        ...

    async def finish(self, done: ClaimRecord) -> ClaimRecord:
        """Record the outcome of `done` and its `result_event`, the one to publish; the action never runs again.

        The event replaces whatever the row held: an unfinished action has none but one its database login wrote.
        The writes handed to `with_outcome` since the session began go into the same statement, so in the same transaction.
        """
        ...

    def with_outcome(self, write: WithOutcome) -> None:
        """Make `write` part of the statement that records the outcome (`finish`): durable with it, and one transaction fewer.

        Only for a session with a connection: an in-memory store keeps what it is given at once.
        """
        ...


class ClaimStore(Protocol):
    """The claims of every action id."""

    def claim(self, record: ClaimRecord, *, running: bool = False, finished: ClaimRecord | None = None) -> Any:
        """Async context manager: wait for exclusive hold of the record's action id and claim it unless it was claimed before.

        Yields the session and the action's record: `record` itself when claimed now, else the one kept.
        With `running`, a new claim is also marked as running its first attempt (as `running(1)` would).
        With `finished` (the outcome of `record`, with its `result_event`: a refusal, nothing called), a new claim is
        recorded as that outcome at once, as `finish` would, flushed; `finished` itself is then yielded.
        """
        ...

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


_UNREADABLE_FIX = (
    "it is left as it is and never called from; the executor's database login may have been used to write it "
    "(docs/security/database.md): restore the row from a backup or delete it as the operator"
)


class UnreadableClaim(ValueError):
    """A claim row this release cannot read (a column of the wrong shape, as only the database login writes it)."""


def _record(row: asyncpg.Record) -> ClaimRecord:
    """The claim a row keeps; `UnreadableClaim` (naming the action and what is wrong) when a column is not of its shape."""
    try:
        return _read(row)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        why = f"{type(exc).__name__}: {exc}"
        raise UnreadableClaim(f"the row of action {row['action_id']} is not a claim this release reads ({why})") from None


def _readable(rows: list[asyncpg.Record]) -> list[ClaimRecord]:
    """The claims of `rows`, each unreadable one refused (logged and counted, `tidegate_rows_refused_total`) and left out."""
    out = []
    for row in rows:
        try:
            out.append(_record(row))
        except UnreadableClaim as exc:
            row_refused("executor", "actions", f"claim of action {row['action_id']}", str(exc), _UNREADABLE_FIX, counted_as="invalid")
    return out


def _read(row: asyncpg.Record) -> ClaimRecord:
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
        retry_at=row["retry_at"],
    )


def _claim_values(record: ClaimRecord, owner: str, prefix: str) -> tuple[Any, ...]:
    """The values of a new claim's row, in the order of the INSERTs' columns."""
    return (
        record.action_id,
        record.event_id,
        record.tenant_id,
        record.task_id,
        record.step,
        record.tool,
        json.dumps(record.args),
        record.action_digest,
        owner,
        prefix,
    )


def _outcome_values(done: ClaimRecord) -> tuple[Any, ...]:
    """The values of an outcome's columns: status, result, error, attempts, duration_ms, cost_usd, result_event."""
    return (
        done.status,
        json.dumps(done.result) if done.result is not None else None,
        json.dumps(done.error.to_json()) if done.error is not None else None,
        done.attempts,
        done.duration_ms,
        done.cost_usd,
        done.result_event,
    )


class _PgSession(ClaimSession):
    def __init__(self, conn: asyncpg.Connection | PoolConnectionProxy, action_id: str, owner: str, prefix: str) -> None:
        self._conn = conn
        self._action_id = action_id
        self._owner = owner
        self._prefix = prefix
        self._with_outcome: list[WithOutcome] = []
        self._with_running: tuple[WithOutcome, Returned] | None = None

    @property
    def connection(self) -> asyncpg.Connection | PoolConnectionProxy:
        return self._conn

    def with_outcome(self, write: WithOutcome) -> None:
        self._with_outcome.append(write)

    def with_running(self, write: WithOutcome) -> Returned:
        if self._with_running is not None:
            raise RuntimeError(f"action {self._action_id}: one write at most rides on a running mark")
        returned = Returned()
        self._with_running = (write, returned)
        return returned

    async def get(self) -> ClaimRecord | None:
        row = await self._conn.fetchrow("SELECT * FROM executor.actions WHERE action_id = $1", self._action_id)
        return _record(row) if row else None

    async def claim(self, record: ClaimRecord) -> ClaimRecord:
        row = await self._conn.fetchrow(
            "INSERT INTO executor.actions"
            " (action_id, event_id, tenant_id, task_id, step, tool, args, action_digest, status, owner, topic_prefix) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, 'claimed', $9, $10) ON CONFLICT (action_id) DO NOTHING RETURNING *",
            *_claim_values(record, self._owner, self._prefix),
        )
        if row is None:  # cannot happen while we hold the lock, but never claim twice
            raise RuntimeError(f"action {record.action_id} was claimed concurrently")
        return _record(row)

    async def running(self, attempts: int) -> None:
        mark = (
            "UPDATE executor.actions SET status = 'running', attempts = $2, owner = $3, "
            "started_at = coalesce(started_at, now()), updated_at = now() WHERE action_id = $1"
        )
        if self._with_running is None:
            await self._conn.execute(mark, self._action_id, attempts, self._owner)
            return
        # The write that rides on the mark (the state kept before the call) is a CTE of its statement: one flushed transaction.
        write, returned = self._with_running
        row = await self._conn.fetchval(
            f"WITH w0 AS ({write.at(4)}), mark AS ({mark}) SELECT to_jsonb(w0)::text FROM w0",
            self._action_id,
            attempts,
            self._owner,
            *write.args,
        )
        self._with_running = None
        returned.ran, returned.row = True, None if row is None else json.loads(row)

    async def waiting(self, attempts: int, error: CallError, retry_at: datetime) -> None:
        await self._conn.execute(
            "UPDATE executor.actions SET status = 'waiting', attempts = $2, error = $3::jsonb, retry_at = $4, updated_at = now() "
            "WHERE action_id = $1",
            self._action_id,
            attempts,
            json.dumps(error.to_json()),
            retry_at,
        )

    async def finish(self, done: ClaimRecord) -> ClaimRecord:
        # The writes that ride on the outcome (the undo plan) are CTEs of its statement: one transaction, one flush.
        writes: list[str] = []
        args: list[Any] = []
        first = 9  # after the outcome's own eight parameters
        for n, write in enumerate(self._with_outcome):
            writes.append(f"w{n} AS ({write.at(first)})")
            args.extend(write.args)
            first += len(write.args)
        head = f"WITH {', '.join(writes)} " if writes else ""
        await self._conn.execute(
            f"{head}UPDATE executor.actions SET status = $2, result = $3::jsonb, error = $4::jsonb, attempts = $5, duration_ms = $6, "
            "cost_usd = $7, result_event = $8, finished_at = now(), updated_at = now() WHERE action_id = $1",
            self._action_id,
            *_outcome_values(done),
            *args,
        )
        self._with_outcome.clear()
        return done


class PgClaimStore(ClaimStore):
    """Claims in the executor's schema (`executor.actions`), held with session advisory locks."""

    def __init__(self, pool: asyncpg.Pool, owner: str, prefix: str = "tidegate.") -> None:
        self._pool = pool
        self._owner = owner
        self._prefix = prefix  # the deployment's topic prefix: its rows are the only ones it settles at start

    @asynccontextmanager
    async def claim(
        self, record: ClaimRecord, *, running: bool = False, finished: ClaimRecord | None = None
    ) -> AsyncIterator[tuple[ClaimSession, ClaimRecord]]:
        """Wait until nobody else holds the record's action id, hold it and claim it unless it was claimed before (`ClaimStore.claim`).

        One round trip when the action is new: the lock is taken by the row the INSERT reads, so
        before its conflict check. When the id was claimed before, the record is read in a second
        statement, whose snapshot is taken after the lock (the first one's was taken before it).
        A claim not marked `running` is committed without waiting for the disk (`servicekit.UNFLUSHED`):
        nothing is called before `running` or published before `finish`, both flushed, which make it
        durable too; a crash before them loses a claim on which nothing happened. A claim `finished` at once (a
        refusal) is one flushed statement with its outcome and result event, as `finish` writes them.
        """
        async with self._pool.acquire() as conn:
            session = _PgSession(conn, record.action_id, self._owner, self._prefix)
            if finished is not None:
                claimed = await conn.fetchval(
                    "INSERT INTO executor.actions (action_id, event_id, tenant_id, task_id, step, tool, args, action_digest, owner,"
                    " topic_prefix, status, result, error, attempts, duration_ms, cost_usd, result_event, finished_at) "
                    "SELECT $1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, $10, $12, $13::jsonb, $14::jsonb, $15, $16, $17, $18, now()"
                    " FROM (SELECT pg_advisory_lock($11)) AS held ON CONFLICT (action_id) DO NOTHING RETURNING true",
                    *_claim_values(record, self._owner, self._prefix),
                    _lock_key(record.action_id),
                    *_outcome_values(finished),
                )
                kept = finished if claimed else await session.get()
                if kept is None:  # the row was deleted between the conflict and the read: never claim twice
                    raise RuntimeError(f"action {record.action_id} vanished while claimed")
                yield session, kept
                return
            claimed = await conn.fetchval(
                "INSERT INTO executor.actions (action_id, event_id, tenant_id, task_id, step, tool, args, action_digest, owner,"
                " topic_prefix, status, attempts, started_at) "
                "SELECT $1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, $10, CASE WHEN $12::boolean THEN 'running' ELSE 'claimed' END,"
                " $12::boolean::int, CASE WHEN $12::boolean THEN now() END"
                f" FROM (SELECT pg_advisory_lock($11), CASE WHEN NOT $12::boolean THEN {NO_FLUSH} END) AS held "
                "ON CONFLICT (action_id) DO NOTHING RETURNING true",
                *_claim_values(record, self._owner, self._prefix),
                _lock_key(record.action_id),
                running,
            )
            kept = record if claimed else await session.get()
            if kept is None:  # the row was deleted between the conflict and the read: never claim twice
                raise RuntimeError(f"action {record.action_id} vanished while claimed")
            yield session, kept

    @asynccontextmanager
    async def hold(self, action_id: str) -> AsyncIterator[ClaimSession]:
        """Wait until nobody else holds `action_id`, then hold it (until the connection goes back to the pool)."""
        async with self._pool.acquire() as conn:
            await conn.execute("SELECT pg_advisory_lock($1)", _lock_key(action_id))
            yield _PgSession(conn, action_id, self._owner, self._prefix)

    @asynccontextmanager
    async def try_hold(self, action_id: str) -> AsyncIterator[ClaimSession | None]:
        """Hold `action_id` if nobody does now; yield None otherwise."""
        async with self._pool.acquire() as conn:
            held = await conn.fetchval("SELECT pg_try_advisory_lock($1)", _lock_key(action_id))
            yield _PgSession(conn, action_id, self._owner, self._prefix) if held else None

    async def interrupted(self) -> list[ClaimRecord]:
        """This deployment's rows left `running`, oldest first (another prefix's rows are its own executor's to settle)."""
        rows = await self._pool.fetch(
            "SELECT * FROM executor.actions WHERE status = 'running' AND topic_prefix = $1 ORDER BY updated_at", self._prefix
        )
        return _readable(rows)  # one row of the wrong shape must not stop the start (it did: restarted for ever)


class _MemorySession(ClaimSession):
    def __init__(self, store: InMemoryClaimStore, action_id: str) -> None:
        self._store = store
        self._action_id = action_id

    @property
    def connection(self) -> None:
        return None

    async def get(self) -> ClaimRecord | None:
        return self._store.records.get(self._action_id)

    async def claim(self, record: ClaimRecord) -> ClaimRecord:
        if self._action_id in self._store.records:
            raise RuntimeError(f"action {self._action_id} was claimed concurrently")
        self._store.records[self._action_id] = record
        return record

    async def running(self, attempts: int) -> None:
        self._store.records[self._action_id] = replace(self._store.records[self._action_id], status="running", attempts=attempts)

    async def waiting(self, attempts: int, error: CallError, retry_at: datetime) -> None:
        record = self._store.records[self._action_id]
        self._store.records[self._action_id] = replace(record, status="waiting", attempts=attempts, error=error, retry_at=retry_at)

    async def finish(self, done: ClaimRecord) -> ClaimRecord:
        self._store.records[self._action_id] = done
        return done

    def with_outcome(self, write: WithOutcome) -> None:
        raise TypeError("in-memory claims run no SQL: an in-memory store keeps what it is given at once")

    def with_running(self, write: WithOutcome) -> Returned:
        raise TypeError("in-memory claims run no SQL: an in-memory store keeps what it is given at once")


class InMemoryClaimStore(ClaimStore):
    """The in-memory twin of PgClaimStore, for unit tests."""

    def __init__(self) -> None:
        self.records: dict[str, ClaimRecord] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    @asynccontextmanager
    async def claim(
        self, record: ClaimRecord, *, running: bool = False, finished: ClaimRecord | None = None
    ) -> AsyncIterator[tuple[ClaimSession, ClaimRecord]]:
        """Wait for the action's lock, hold it and claim the action unless it was claimed before (`ClaimStore.claim`)."""
        async with self.hold(record.action_id) as session:
            kept = self.records.get(record.action_id)
            if kept is None:
                new = finished or (replace(record, status="running", attempts=1) if running else record)
                self.records[record.action_id] = new
            yield session, kept or finished or record

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
