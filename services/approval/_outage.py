"""The approval service's own calls to its database (API requests, sweeps) as its `/health` reports them.

The kit's retrying layer reports only what its consumers retry. The API and the sweeps reach PostgreSQL
outside it, so a database that is down was invisible there: `/health` said `ok`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from servicekit import Bus
from servicekit.db_outage import retry_level
from services.approval.api import DATABASE_UNAVAILABLE

__all__ = ["DatabaseOutage"]

log = logging.getLogger(__name__)


@dataclass
class DatabaseOutage:
    """`retrying: <error>` on `/health` while the database does not answer; cleared when a sweep reads it again."""

    bus: Bus
    shown: str | None = None  # what `/health` shows since `failed`, until another error replaces it

    async def failed(self, exc: BaseException) -> None:
        """A call met the database down: no pooled connection it broke is reused, and `/health` says so."""
        if self.bus.on_transient is not None:
            await self.bus.on_transient(exc)
        self.bus.liveness.retrying(exc)
        self.shown = self.bus.liveness.last_error

    def answered(self) -> None:
        """The database answered again: what `failed` reported is over (an error the consumers retry since stays shown)."""
        if self.shown is not None and self.bus.liveness.last_error == self.shown:
            self.bus.liveness.last_error = None
        self.shown = None

    def guarded(self, what: str, step: Callable[[], Awaitable[object]]) -> Callable[[], Awaitable[None]]:
        """`step` (a sweep) that reports a database that is down (one log line, not a traceback each round) and its return."""

        async def run() -> None:
            try:
                await step()
            except DATABASE_UNAVAILABLE as exc:
                await self.failed(exc)
                log.log(retry_level(exc), "%s: database unavailable, retrying at the next round: %r", what, exc)
                return
            self.answered()

        return run
