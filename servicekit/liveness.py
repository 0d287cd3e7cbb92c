"""Is this service making progress? What its watchdog, its `/health` endpoint and its exit code report.

A service can be alive and useless: a producer that died, a fetch that stalled, a consumer loop that
ended, a handler stuck on a call, a dependency retried forever. `Liveness` is told when a record starts and finishes, and reads
its consumers' lag (end offsets asked of the broker against the consumer's positions); `stalled`
names what is wrong, or None. Each of those checks also notes whether the broker answered: `broker_silence` says how long
it has not (a broker down, unreachable, or refusing the service's login), for `/health` and the metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Liveness"]

BROKER_CHECK_TIMEOUT_S = 10.0  # one check's wait for the broker's answer; a broker away makes every check wait this long


@dataclass
class Liveness:
    """Progress of one service's consumers: records in flight, the last one handled, records waiting."""

    last_progress: float = field(default_factory=time.monotonic)
    last_error: str | None = None
    _in_flight: dict[int, float] = field(default_factory=dict)
    _subscribers: list[Any] = field(default_factory=list)
    _lag_since: float | None = None
    _next: int = 0
    last_answer: float = field(default_factory=time.monotonic)  # when the broker last answered every consumer's check
    unanswered: str | None = None  # what the last check met, while the broker does not answer; None once it does

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
        """Records waiting on the assigned partitions: end offsets (asked of the broker) minus positions.

        A consumer whose broker does not answer counts 0 this time (its lag is unknown), and the check is noted as
        unanswered (`broker_silence`); the broker answered once every started consumer's check did.
        """
        waiting, unanswered = 0, None
        for subscriber in self._subscribers:
            consumer = getattr(subscriber, "consumer", None)
            if consumer is None:
                continue
            try:
                ends = await asyncio.wait_for(_ask_broker(consumer), BROKER_CHECK_TIMEOUT_S)
            except Exception as exc:  # broker down, unreachable or refusing the login; or the consumer rebalancing
                unanswered = repr(exc)[:300]
                continue
            with contextlib.suppress(Exception):  # rebalancing: positions unknown this time
                waiting += _waiting(consumer, ends)
        if unanswered is None:
            self.last_answer = time.monotonic()
        self.unanswered = unanswered
        return waiting

    def silent_s(self, now: float | None = None) -> float:
        """Seconds since the broker last answered, while it does not (0 once a check got its answer)."""
        if self.unanswered is None:
            return 0.0
        return (time.monotonic() if now is None else now) - self.last_answer

    def broker_silence(self, now: float | None = None) -> str | None:
        """How long the broker has not answered and what the last check met, while it does not answer; else None."""
        if self.unanswered is None:
            return None
        return f"the broker has not answered for {self.silent_s(now):.0f}s ({self.unanswered})"

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


async def _ask_broker(consumer: Any) -> dict[Any, int]:
    """End offsets of `consumer`'s assigned partitions; with none assigned, the cluster's metadata: the broker is asked either way."""
    tps = list(consumer.assignment())
    if tps:
        return dict(await consumer.end_offsets(tps))
    await consumer.topics()
    return {}


def _waiting(consumer: Any, ends: dict[Any, int]) -> int:
    """Records between each assigned partition's position and its end offset."""
    waiting = 0
    for tp, end in ends.items():
        state = consumer._subscription.subscription.assignment.state_value(tp)
        if state is not None and state.has_valid_position:
            waiting += max(0, end - state.position)
    return waiting
