"""A handler that will not start its work while the process stops: it parks, and the stop ends as soon as only parked work is left.

The executor starts no tool call once its process is stopping (a call cut off by the stop's end would be taken by the
next process for one that may have applied): a handler about to call, or waiting between two attempts, parks instead
(`park`), and its record is left uncommitted for the next process. Without this module the stop would wait its whole
grace (`servicekit.bus.GRACEFUL_TIMEOUT_S`) for handlers that will never finish. With it, the lanes of a consumer
(`servicekit._bus_lanes.Lanes.drain`) start no record once the process stops and end as soon as every handler still
running is parked: a handler at work is never cut off, the parked ones are cancelled, their records (and every record
after the first not handled) are read again by the next process (their handlers are idempotent), and the stop goes on at once.
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import NoReturn

__all__ = ["Parking", "park", "parking"]


@dataclass
class Parking:
    """Handlers of one consumer: how many run, how many of them are parked (`stopping`: the process stops)."""

    running: int
    stopping: asyncio.Event
    parked: int = 0
    only_parked: asyncio.Event = field(default_factory=asyncio.Event)

    def check(self) -> None:
        """Set `only_parked` once the process stops and every handler still running is parked."""
        if self.parked and self.stopping.is_set() and self.parked >= self.running:
            self.only_parked.set()

    def ended(self) -> None:
        """A handler ended: its record handled, failed, or cancelled."""
        self.running -= 1
        self.check()


parking: ContextVar[Parking | None] = ContextVar("tidegate_parking", default=None)


async def park() -> NoReturn:
    """Wait to be cancelled, counted as parked by the lanes it runs in (if any), so that the stop need not wait for it."""
    lanes = parking.get()
    if lanes is not None:
        lanes.parked += 1
        lanes.check()
    await asyncio.Event().wait()
    raise AssertionError("unreachable: the wait ends only by cancellation")  # pragma: no cover
