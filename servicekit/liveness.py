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
# A check still unanswered after this long is shown at once (`/health`, the gauge), before its timeout ends it: a broker
# that answers at all answers within a few milliseconds.
BROKER_WAITING_S = 3.0


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
    asking_since: float | None = None  # when the checks in progress asked the broker; None between checks
    waiting: int = 0  # records waiting on the assigned partitions, at the last check (a consumer unanswered counts 0)

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

    @property
    def in_flight(self) -> int:
        """Records (or batches) in handling now, retries included: what a service holds uncommitted while it waits."""
        return len(self._in_flight)

    def retrying(self, exc: BaseException) -> None:
        """A transient error is being retried (shown by `/health` while it lasts)."""
        self.last_error = repr(exc)[:300]

    async def lag(self) -> int:
        """Records waiting on the assigned partitions: end offsets (asked of the broker) minus positions.

        Every started consumer is asked at once, so a broker away costs one round one timeout (it cost one per consumer,
        one after another: 30 s for the policy's three before `/health` said anything). A consumer whose broker does not
        answer counts 0 this time (its lag is unknown), and the check is noted as unanswered (`broker_silence`); the broker
        answered once every started consumer's check did. While the checks wait, `silent_s` and `broker_silence` already
        say so once they have waited `BROKER_WAITING_S`.
        """
        consumers = [c for c in (getattr(s, "consumer", None) for s in self._subscribers) if c is not None]
        self.asking_since = time.monotonic()
        try:
            answers = await asyncio.gather(*(_check(consumer) for consumer in consumers))
        finally:
            self.asking_since = None
        waiting, unanswered = 0, None
        for consumer, (ends, error) in zip(consumers, answers, strict=True):
            if ends is None:
                unanswered = error
                continue
            with contextlib.suppress(Exception):  # rebalancing: positions unknown this time
                waiting += _waiting(consumer, ends)
        if unanswered is None:
            self.last_answer = time.monotonic()
        self.unanswered, self.waiting = unanswered, waiting
        return waiting

    def _waiting_s(self, now: float) -> float:
        """How long the check in progress has waited for the broker's answer, once past `BROKER_WAITING_S`; else 0."""
        if self.asking_since is None or now - self.asking_since < BROKER_WAITING_S:
            return 0.0
        return now - self.asking_since

    def silent_s(self, now: float | None = None) -> float:
        """Seconds since the broker last answered, while it does not (0 once a check got its answer)."""
        now = time.monotonic() if now is None else now
        if self.unanswered is None and not self._waiting_s(now):
            return 0.0
        return now - self.last_answer

    def broker_silence(self, now: float | None = None) -> str | None:
        """How long the broker has not answered and what the last check met (or how long the current one waits); else None."""
        now = time.monotonic() if now is None else now
        if self.unanswered is None:
            waiting = self._waiting_s(now)
            if not waiting:
                return None
            return f"the broker has not answered for {self.silent_s(now):.0f}s (a check has waited {waiting:.0f}s for its answer)"
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


async def _check(consumer: Any) -> tuple[dict[Any, int] | None, str | None]:
    """One consumer's check: its end offsets, or None and what it met (broker down, unreachable, refusing; or rebalancing)."""
    try:
        return await asyncio.wait_for(_ask_broker(consumer), BROKER_CHECK_TIMEOUT_S), None
    except Exception as exc:
        return None, repr(exc)[:300]


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
