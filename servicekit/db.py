"""asyncpg pools and the migrations runner: each service owns one schema and migrates only it."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, urlsplit

import asyncpg

from servicekit.intake import DATABASE_ERRORS
from servicekit.metrics import observe_database_retry

__all__ = [
    "NO_FLUSH",
    "UNFLUSHED",
    "SchemaNotReady",
    "SessionReset",
    "apply_migrations",
    "check_migrations",
    "connect",
    "create_pool",
    "delete_in_batches",
    "discard_broken_connections",
    "from_database",
    "open_pool",
    "unopened_pool",
]

log = logging.getLogger(__name__)

NO_FLUSH = "set_config('synchronous_commit', 'off', true)"
"""The SQL expression behind `UNFLUSHED`, for a statement that skips the flush only on a condition of its own."""

UNFLUSHED = f"(SELECT {NO_FLUSH}) AS unflushed"
"""A FROM item that commits its statement without waiting for the WAL to reach the disk (one fsync less).

Only for a write that a flushed commit of the same work always follows before anything outside the
database sees its effect (WAL reaches the disk in order, so that commit makes both durable), or whose
loss after a crash only repeats what a crash repeats anyway. The setting is the statement's own
transaction's (`set_config(..., true)`): the session keeps `synchronous_commit` as it was.
"""


async def delete_in_batches(delete: Callable[[int], Awaitable[int]], batch: int = 10_000) -> int:
    """Call `delete(batch)` (up to `batch` rows of each kind it deletes; how many in all) until a call deletes fewer; the total.

    How the services forget what they no longer need: in batches, so that no statement holds a table long.
    """
    total = 0
    while True:
        deleted = await delete(batch)
        total += deleted
        if deleted < batch:
            return total


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Release a connection as it is: asyncpg has already rolled back a transaction left open on it."""


async def _unlock_advisory_locks(connection: asyncpg.Connection) -> None:
    """Release a connection with its session advisory locks ended: asyncpg has already rolled back a transaction left open on it."""
    await connection.execute("SELECT pg_advisory_unlock_all()")


SessionReset = bool | Literal["advisory_locks"]
"""What a pool resets on a connection it releases: all session state (True), nothing (False), or its session advisory locks."""


def unopened_pool(dsn: str, *, max_size: int = 10, min_size: int = 1, reset_session: SessionReset = True) -> asyncpg.Pool:
    """A pool not connected yet: a service's repositories are built on it, its start-up opens it (`open_pool`).

    Call it inside the event loop that will use the pool (asyncpg binds a pool to the loop it was made in).
    By default asyncpg resets a released connection's session (advisory locks, cursors, `LISTEN`,
    settings) with one more round trip per use of the pool; with `reset_session=False`, for code that
    leaves no session state behind (transaction-scoped locks and `SET LOCAL` only), it does not; with
    `"advisory_locks"`, for code whose only session state is session advisory locks, the round trip ends
    those alone (one statement, `pg_advisory_unlock_all()`, where asyncpg's reset runs four: it adds
    `CLOSE ALL; UNLISTEN *; RESET ALL`).
    """
    reset = {True: None, False: _keep_session, "advisory_locks": _unlock_advisory_locks}[reset_session]
    return asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, command_timeout=60, reset=reset)


def connection_error(exc: OSError | asyncpg.PostgresError, dsn: str) -> ConnectionError:
    """One readable line for a failed connection: where to, and what to do (a refused login names where its password came from)."""
    parts = urlsplit(dsn)
    where = dsn.split("@")[-1].split("?")[0]
    if not isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
        return ConnectionError(f"cannot reach PostgreSQL at {where}: {exc} (is `tidegate infra up` running?)")
    passfile = parse_qs(parts.query).get("passfile", [None])[0]
    if parts.password is not None or passfile is None:
        source = "the password in the DSN"
    elif not Path(passfile).is_file():
        source = f"no password: {passfile} does not exist"
    elif Path(passfile).stat().st_mode & 0o077:
        source = f"no password: {passfile} is readable by others, so it is ignored (chmod 600 it)"
    else:
        source = f"the password in {passfile}"
    return ConnectionError(
        f"PostgreSQL at {where} refused {parts.username or 'the login'} ({exc}) with {source}. `tidegate infra up` generates the "
        "operator's password into that file and sets it in the local cluster; for another server set TIDEGATE_DATABASE_URL "
        "and TIDEGATE_DATABASE_PASSFILE (docs/operations.md)."
    )


async def connect(dsn: str) -> asyncpg.Connection:
    """One connection; a database that is down or refuses the login is a `ConnectionError` that says what to do."""
    try:
        return await asyncpg.connect(dsn)
    except (OSError, asyncpg.PostgresError) as exc:
        raise connection_error(exc, dsn) from exc


async def open_pool(pool: asyncpg.Pool, dsn: str) -> None:
    """Connect `pool`; fails fast with the DSN's host in the message when the database is down or refuses the login."""
    try:
        await pool
    except (OSError, asyncpg.PostgresError) as exc:
        raise connection_error(exc, dsn) from exc


async def create_pool(dsn: str, *, max_size: int = 10, min_size: int = 1) -> asyncpg.Pool:
    """A connected pool; fails fast with the DSN's host in the message when the database is down."""
    pool = unopened_pool(dsn, max_size=max_size, min_size=min_size)
    await open_pool(pool, dsn)
    return pool


def discard_broken_connections(
    pool: asyncpg.Pool, service: str = "", on_database_error: Callable[[BaseException], None] | None = None
) -> Callable[[BaseException], Awaitable[None]]:
    """What the one retrying layer calls with each transient error: on a database error, no pooled connection is reused.

    Each database error is counted for `service` (`tidegate_database_retries_total`, alert `TidegateDatabaseRetrying`):
    a service retrying its database answers `/health` 200 meanwhile, so this is what shows a PostgreSQL outage.

    A connection broken by a restart, a fast shutdown or `pg_terminate_backend` may look open to the
    pool; reused, asyncpg raises "cannot switch to state 12/15; another operation is in progress"
    (MagicStack/asyncpg#784, #1069). `Pool.expire_connections` closes each idle one now and each busy
    one when it is released; the next `acquire` connects anew. `on_database_error` is told of each (the service's
    `DatabaseWatch`, which says once that the database is down and when it answers again).
    """

    async def discard(exc: BaseException) -> None:
        if from_database(exc):
            observe_database_retry(service)
            if on_database_error is not None:
                on_database_error(exc)
            await pool.expire_connections()

    return discard


def from_database(exc: BaseException) -> bool:
    """Whether a transient error is the database's: asyncpg's own, or the socket's error asyncpg let through while connecting.

    A PostgreSQL that is down refuses each new connection with the OS's `ConnectionRefusedError` (an `OSError`, as a
    timeout is a `TimeoutError`), raised from asyncpg's frames: uncounted, the outage alert never fired (an SRE probe:
    27 s of `retrying: ConnectionRefusedError` on `/health`, no sample of the counter).
    """
    if isinstance(exc, DATABASE_ERRORS):
        return True
    if not isinstance(exc, OSError | TimeoutError):
        return False
    frame = exc.__traceback__
    while frame is not None:
        if str(frame.tb_frame.f_globals.get("__name__", "")).startswith("asyncpg"):
            return True
        frame = frame.tb_next
    return False


async def apply_migrations(pool: asyncpg.Pool, schema: str, directory: Path) -> list[str]:
    """Apply `directory/*.sql` in name order to `schema`, each once and in its own transaction.

    An advisory lock serialises concurrent starts of several copies of a service. A migration whose
    file changed after it was applied is an error: migrations are append-only.
    """
    applied_now: list[str] = []
    async with pool.acquire() as conn:
        lock_id = int.from_bytes(hashlib.sha256(schema.encode()).digest()[:8], "big", signed=True)
        await conn.execute("SELECT pg_advisory_lock($1)", lock_id)
        try:
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            await conn.execute(
                f'CREATE TABLE IF NOT EXISTS "{schema}".schema_migrations '
                "(name text PRIMARY KEY, sha256 text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r["name"]: r["sha256"] for r in await conn.fetch(f'SELECT name, sha256 FROM "{schema}".schema_migrations')}
            for path in sorted(directory.glob("*.sql")):  # noqa: ASYNC240  (start-up only, a few small files)
                sql = path.read_text()
                sha = hashlib.sha256(sql.encode()).hexdigest()
                if path.name in done:
                    if done[path.name] != sha:
                        raise RuntimeError(f"migration {schema}/{path.name} changed after it was applied; add a new file instead")
                    continue
                async with conn.transaction():
                    await conn.execute(f'SET LOCAL search_path TO "{schema}", public')
                    await conn.execute(sql)
                    await conn.execute(f'INSERT INTO "{schema}".schema_migrations (name, sha256) VALUES ($1, $2)', path.name, sha)
                log.info("applied migration %s/%s", schema, path.name)
                applied_now.append(path.name)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", lock_id)
    return applied_now


class SchemaNotReady(RuntimeError):
    """A service's schema is not at the version its code expects (the migrator has not run)."""


async def check_migrations(pool: asyncpg.Pool, schema: str, directory: Path) -> None:
    """Fail unless every migration in `directory` was applied to `schema`, unchanged.

    Services do not migrate: their roles may not alter their schemas. The migrator
    (`tidegate db migrate`, run by `tidegate infra up`) does.
    """
    hint = "run `tidegate db migrate` (or `tidegate infra up`) as the operator"
    try:
        async with pool.acquire() as conn:
            done = {r["name"]: r["sha256"] for r in await conn.fetch(f'SELECT name, sha256 FROM "{schema}".schema_migrations')}
    except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError) as exc:
        raise SchemaNotReady(f"schema {schema} is not migrated: {hint}") from exc
    except asyncpg.InsufficientPrivilegeError as exc:
        raise SchemaNotReady(f"this role may not read schema {schema} ({exc}): {hint}") from exc
    expected = {p.name: hashlib.sha256(p.read_text().encode()).hexdigest() for p in sorted(directory.glob("*.sql"))}  # noqa: ASYNC240
    missing = [name for name in expected if name not in done]
    changed = [name for name, sha in expected.items() if name in done and done[name] != sha]
    if missing or changed:
        what = ", ".join([*(f"{n} not applied" for n in missing), *(f"{n} changed since applied" for n in changed)])
        raise SchemaNotReady(f"schema {schema} is not at this code's version ({what}): {hint}")
