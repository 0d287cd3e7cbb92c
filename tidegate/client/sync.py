"""The blocking flavour: the same client on an event loop of its own thread, for code that is not async."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterable
from types import TracebackType
from typing import Any, TypeVar

from tidegate.client.client import Tidegate
from tidegate.client.ledger import ActionIdReused
from tidegate.client.outcomes import Decided, Escalated, Outcome

__all__ = ["SyncTidegate"]

T = TypeVar("T")


class SyncTidegate:
    """`with SyncTidegate() as tg: tg.propose(...)`; takes the same arguments as `Tidegate`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tidegate-client", daemon=True)
        self._thread.start()
        self.client: Tidegate = self._run(self._make(args, kwargs))

    @staticmethod
    async def _make(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Tidegate:
        return Tidegate(*args, **kwargs)  # built on the loop's thread, so its asyncio objects belong to that loop

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the client's loop and wait for it (what the blocking methods do)."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    _run = run

    def __enter__(self) -> SyncTidegate:
        self._run(self.client.start())
        return self

    def __exit__(self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]) -> None:
        self.close()

    def close(self) -> None:
        """Stop the client and its thread."""
        if self._loop.is_running():
            self._run(self.client.stop())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    def propose(self, tool: str, args: dict[str, Any], **kwargs: Any) -> Outcome:
        """`Tidegate.propose`, blocking; an `Escalated` is waited on with `decision()` here."""
        return self._run(self.client.propose(tool, args, **kwargs))

    def decision(self, escalated: Escalated, timeout_s: float | None = None) -> Decided:
        """Block until the human's decision on an escalated proposal (and what followed)."""
        return self._run(escalated.decision(timeout_s))

    def resume(self, action_id: str, *, position: str | None = None, timeout_s: float | None = None) -> Decided:
        """`Tidegate.resume`, blocking."""
        return self._run(self.client.resume(action_id, position=position, timeout_s=timeout_s))

    def resume_many(
        self, rows: Iterable[tuple[str, str | None]], *, timeout_s: float, tenant: str | None = None
    ) -> dict[str, Decided | ActionIdReused]:
        """`Tidegate.resume_many`, blocking."""
        return self._run(self.client.resume_many(rows, timeout_s=timeout_s, tenant=tenant))
