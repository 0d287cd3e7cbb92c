"""A handler that will not start its work while the process stops: it parks, and its batch ends as soon as only parked work is left.

The executor starts no tool call once its process is stopping (a call cut off by the stop's end would be taken by the
next process for one that may have applied): a handler about to call, or waiting between two attempts, parks instead
(`park`), and its record is left uncommitted for the next process. Without this module the stop would wait its whole
grace (`servicekit.bus.GRACEFUL_TIMEOUT_S`) for handlers that will never finish. With it, the batch handled in lanes
(`Bus.handle_in_lanes`) ends as soon as every lane still running is parked or waits for a slot: once one of its handlers
parked while the process stops, a lane starts no more records (it parks too), so a handler at work is never cut off and
none starts. The parked lanes are cancelled and the batch is rewound (`Parked`): its records, those handled included
(their handlers are idempotent), are read again by the next process, and the stop goes on at once.
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import NoReturn

__all__ = ["Parked", "Parking", "park"]


class Parked(Exception):
    """A batch ended with only parked handlers left: rewound, read again by the next process (not a failure)."""


@dataclass
class Parking:
    """The lanes of one batch: how many run, how many are parked or wait for a slot (`stopping`: the process stops)."""

    running: int
    stopping: asyncio.Event
    parked: int = 0
    waiting: int = 0  # lanes waiting for a concurrency slot
    only_parked: asyncio.Event = field(default_factory=asyncio.Event)

    def check(self) -> None:
        """Set `only_parked` once the process stops and no lane still running can make progress."""
        if self.parked and self.stopping.is_set() and self.parked + self.waiting >= self.running:
            self.only_parked.set()

    def lane_done(self) -> None:
        """A lane ended (handled its records, failed, or was cancelled)."""
        self.running -= 1
        self.check()


parking: ContextVar[Parking | None] = ContextVar("tidegate_parking", default=None)


async def park() -> NoReturn:
    """Wait to be cancelled, counted as parked by the batch in hand (if it is handled in lanes), so that its stop need not wait."""
    lanes = parking.get()
    if lanes is not None:
        lanes.parked += 1
        lanes.check()
    await asyncio.Event().wait()
    raise AssertionError("unreachable: the wait ends only by cancellation")  # pragma: no cover
