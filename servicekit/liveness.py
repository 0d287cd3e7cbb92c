"""Is this service making progress? What its watchdog, its `/health` endpoint and its exit code report.

A service can be alive and useless: a producer that died, a fetch that stalled, a consumer loop that
ended, a handler stuck on a call, a dependency retried forever. `Liveness` is told when a record starts and finishes, and reads
its consumers' lag (end offsets asked of the broker against the consumer's positions); `stalled`
names what is wrong, or None.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Liveness"]


@dataclass
class Liveness:
    """Progress of one service's consumers: records in flight, the last one handled, records waiting."""

    last_progress: float = field(default_factory=time.monotonic)
    last_error: str | None = None
    _in_flight: dict[int, float] = field(default_factory=dict)
    _subscribers: list[Any] = field(default_factory=list)
    _lag_since: float | None = None
    _next: int = 0

    def watch(self, subscriber: Any) -> None:
        """Read the lag of `subscriber`'s Kafka consumer (once it is started)."""
        self._subscribers.append(subscriber)

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Around the handling of one record (or one batch)."""
        self._next += 1
        token = self._next
        self._in_flight[token] = time.monotonic()
        try:
            yield
        finally:
            del self._in_flight[token]

    def progressed(self) -> None:
        """A record was handled or dead-lettered."""
        self.last_progress = time.monotonic()
        self._lag_since = None
        self.last_error = None

    def retrying(self, exc: BaseException) -> None:
        """A transient error is being retried (shown by `/health` while it lasts)."""
        self.last_error = repr(exc)[:300]

    async def lag(self) -> int:
        """Records waiting on the assigned partitions: end offsets (asked of the broker) minus positions."""
        waiting = 0
        for subscriber in self._subscribers:
            consumer = getattr(subscriber, "consumer", None)
            if consumer is None:
                continue
            with contextlib.suppress(Exception):  # not started, rebalancing, broker away: unknown this time
                tps = list(consumer.assignment())
                ends = await asyncio.wait_for(consumer.end_offsets(tps), 10) if tps else {}
                for tp in tps:
                    state = consumer._subscription.subscription.assignment.state_value(tp)
                    if state is not None and state.has_valid_position:
                        waiting += max(0, ends[tp] - state.position)
        return waiting

    async def stalled(self, *, stall_after_s: float, handler_limit_s: float, now: float | None = None) -> str | None:
        """Why this service is not making progress, or None when it is (or has nothing to do)."""
        now = time.monotonic() if now is None else now
        for subscriber in self._subscribers:  # a consumer whose loop ended reads nothing more, lag or none
            if ended := getattr(subscriber, "ended", None):
                return f"{subscriber.name}: its consumer loop ended ({ended})"
        if self._in_flight:
            oldest = min(self._in_flight.values())
            if now - oldest > handler_limit_s:
                cause = f" (retrying: {self.last_error})" if self.last_error else ""
                return f"a record has been in handling for {now - oldest:.0f}s{cause}"
        waiting = await self.lag()
        if waiting <= 0:
            self._lag_since = None
            return None
        if self._lag_since is None:
            self._lag_since = now
        idle = now - max(self.last_progress, self._lag_since)
        if idle > stall_after_s:
            return f"{waiting} records waiting and none handled for {idle:.0f}s"
        return None
