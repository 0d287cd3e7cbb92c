"""A test helper: a monotonic clock the test moves by hand (`clock.now += 0.1`), for what takes `clock=`/`monotonic=`."""

from __future__ import annotations

__all__ = ["HandClock"]


class HandClock:
    """A monotonic clock a test moves by hand: it reads `now` (seconds, from 1000.0) until the test sets it."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
