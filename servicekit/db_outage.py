"""A database outage as the on-call person reads it: one line when it starts, one when it ends, `/health` in between.

While PostgreSQL was down a service logged only asyncpg's "Failed to restore the pool connection floor; retrying",
each with a 20-line traceback (516 lines in a minute from an idle executor), or one retry line every 5 s per record; no
line of the service's own said that its database was unreachable, what it held meanwhile, that it would retry, or
when it answered again. `DatabaseWatch` is told of each database error a service meets (the retrying layer's
`discard_broken_connections`, and the pool's own attempts to reconnect, whose log lines it takes over); the first of
an outage logs one ERROR line, then it asks the database itself every `probe_interval_s` until it answers (each
unanswered ask counted in `tidegate_database_retries_total`, so that an idle service's outage pages as well), and logs
how long it was down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import asyncpg

from servicekit.db import from_database
from servicekit.metrics import observe_database_retry

__all__ = ["DatabaseWatch", "database_address", "retry_level"]

log = logging.getLogger(__name__)

POOL_FLOOR = "Failed to restore the pool connection floor"  # asyncpg.pool's line at each failed reconnect of an idle pool
_WATCHES: dict[int, DatabaseWatch] = {}  # by id(pool): asyncpg's Pool takes no weak reference


def database_address(dsn: str) -> str:
    """`host:port/database` of a DSN, without its login."""
    parts = urlsplit(dsn)
    host = parts.hostname or "localhost"
    return f"{host}:{parts.port or 5432}{parts.path or ''}"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


@dataclass
class DatabaseWatch:
    """One service's view of its database: up, or down since when, with what error; logged once each way."""

    service: str
    pool: asyncpg.Pool
    where: str
    held: Callable[[], int] = lambda: 0  # records in handling now: held uncommitted while the database is down
    probe_interval_s: float = 2.0
    probe_timeout_s: float = 5.0
    down_since: float | None = field(default=None, init=False)
    error: str | None = field(default=None, init=False)
    retries: int = field(default=0, init=False)
    most_held: int = field(default=0, init=False)  # the most records in handling at one error of the outage
    _probe: asyncio.Task[None] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        _WATCHES[id(self.pool)] = self
        _install_pool_filter()

    def failed(self, exc: BaseException) -> None:
        """A database error met (a retry, a reconnect of the pool): the first of an outage is logged, and watched until it ends."""
        self.error = _one_line(exc)
        self.retries += 1
        held = self.held()
        self.most_held = max(self.most_held, held)
        if self.down_since is not None:
            return
        self.down_since = time.monotonic()
        log.error(
            "%s: its database at %s does not answer (%s). Holding %d record%s in handling: nothing is committed, "
            "acknowledged or dead-lettered meanwhile; each is retried until the database answers (/health stays 200 "
            "and says `retrying`; alert TidegateDatabaseRetrying after 2 min). Another line says when it answers again.",
            self.service,
            self.where,
            self.error,
            held,
            "" if held == 1 else "s",
        )
        with contextlib.suppress(RuntimeError):  # no running loop: the next error met inside one starts the watch
            self._probe = asyncio.get_running_loop().create_task(self._until_it_answers(), name=f"{self.service}-database-watch")

    def health_note(self, now: float | None = None) -> str | None:
        """What `/health` says under `retrying` while the database does not answer; None while it does."""
        if self.down_since is None:
            return None
        down_s = (time.monotonic() if now is None else now) - self.down_since
        return f"the database at {self.where} has not answered for {down_s:.0f}s ({self.error})"

    async def _until_it_answers(self) -> None:
        while True:
            await asyncio.sleep(self.probe_interval_s)
            if self.pool.get_idle_size() == 0 and self.pool.get_size() >= self.pool.get_max_size():
                continue  # every connection is in use: the handlers holding them say how the database answers, not a wait here
            try:
                async with asyncio.timeout(self.probe_timeout_s):
                    async with self.pool.acquire() as connection:
                        await connection.fetchval("SELECT 1")
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                self.error = _one_line(exc)
                observe_database_retry(self.service)  # an idle service pages too: nothing else retries while no record waits
                continue
            self.answered()
            return

    def answered(self) -> None:
        """The database answered again: said once, with how long it was down."""
        if self.down_since is None:
            return
        down_s = time.monotonic() - self.down_since
        log.warning(
            "%s: its database at %s answers again after %.0fs down (%d database error%s met meanwhile, last: %s); "
            "handling resumes from what it held (at most %d record%s at once)",
            self.service,
            self.where,
            down_s,
            self.retries,
            "" if self.retries == 1 else "s",
            self.error,
            self.most_held,
            "" if self.most_held == 1 else "s",
        )
        self.down_since, self.error, self.retries, self.most_held, self._probe = None, None, 0, 0, None

    async def close(self) -> None:
        """Stop watching (the service stops): no probe outlives the pool."""
        _WATCHES.pop(id(self.pool), None)
        probe, self._probe = self._probe, None
        if probe is not None:
            probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probe


def retry_level(exc: BaseException, level: int = logging.WARNING) -> int:
    """The level of a line that says a retry after `exc`: one line an outage, not one a retry.

    DEBUG for a database error while this process's outage line stands for it (said once when it began, its end said
    too), else `level`.
    """
    if any(watch.down_since is not None for watch in _WATCHES.values()) and from_database(exc):
        return logging.DEBUG
    return level


class _PoolFloor(logging.Filter):
    """asyncpg's failed reconnect of an idle pool goes to that pool's watch, as the start of an outage, not as a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(POOL_FLOOR) or record.exc_info is None or record.exc_info[1] is None:
            return True
        watch = _WATCHES.get(id(_pool_of_current_task()))
        if watch is None and len(_WATCHES) == 1:  # another pool of the service's process (the executor's tools'): its database
            watch = next(iter(_WATCHES.values()))
        if watch is None:
            return True  # a pool no service watches (a command's): asyncpg's line as it is
        watch.failed(record.exc_info[1])
        return False


_FILTER = _PoolFloor()


def _install_pool_filter() -> None:
    pool_logger = logging.getLogger("asyncpg.pool")
    if _FILTER not in pool_logger.filters:
        pool_logger.addFilter(_FILTER)


def _pool_of_current_task() -> object:
    """The pool whose maintenance task logs (asyncpg logs the floor from `Pool._maintain_min_size`, a task of its own)."""
    with contextlib.suppress(RuntimeError):
        task = asyncio.current_task()
        coro = task.get_coro() if task is not None else None
        frame = getattr(coro, "cr_frame", None)
        if frame is not None:
            return frame.f_locals.get("self")
    return None
