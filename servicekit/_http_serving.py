"""The HTTP server a service runs its API on (`ServiceProcess.http_app`): uvicorn's, without its ten wake-ups a second.

uvicorn's `Server.main_loop` sleeps 100 ms between turns to notice `should_exit` and, every tenth turn, to renew the
`Date` header it sends: ten wake-ups a second of an idle service, the most of any source in the approval service once
its consumers no longer woke on a timer (docs/benchmarks.md, 2026-12-07). Here a turn comes once a second, when the
header is renewed anyway, and a stop (`ask_exit`) ends the wait at once instead of at the next turn. Imported only by
a service that serves HTTP (uvicorn is a large import).
"""

from __future__ import annotations

import asyncio
import contextlib

import uvicorn

__all__ = ["QuietServer"]

TICK_S = 1.0  # uvicorn renews the `Date` header every tenth 100 ms turn: once a second, as here


class QuietServer(uvicorn.Server):
    """The uvicorn server, turning once a second (the `Date` header renewed at each turn) and stopped at once by `ask_exit`."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._exit_asked = asyncio.Event()

    def ask_exit(self) -> None:
        """Stop serving (as `should_exit` does), without waiting for the next turn."""
        self.should_exit = True
        self._exit_asked.set()

    async def main_loop(self) -> None:
        """The loop of turns, each one second apart; `on_tick` renews the header at counters divisible by ten."""
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 10) % 864_000  # uvicorn's own wrap; every turn a tenth one, so every turn renews the header
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TICK_S):
                    await self._exit_asked.wait()
            should_exit = await self.on_tick(counter)
