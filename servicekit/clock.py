"""How far this service's clock is from the broker's, read off the broker's own acknowledgements.

Every topic is stamped by the broker (`message.timestamp.type=LogAppendTime`, docs/operations.md), and a produce
acknowledgement carries the time the broker appended the record. The record was sent after `sent` and acknowledged
before `acked` (this host's wall clock), so the broker appended it in between: this clock's offset from the broker's
(positive: this clock is ahead) lies in `[sent - appended, acked - appended]` whatever the network or the broker's load
did, and a slow acknowledgement only widens the interval. The offset kept is the bound nearest zero: never larger than
the true one, so a clock that agrees is never taken for a skewed one.

Why it matters: a service judges lifetimes at its own clock (the executor an authorization's `expires_at`, the policy the
`expires_at` it signs, the approval service a request's deadline, every service a retired key's grace). An executor ten
minutes ahead refused every authorization as expired while its `/health` said ok (the SRE game day's F1): past
`TIDEGATE_MAX_CLOCK_SKEW_S`, `/health` is 503 and names the clock (`servicekit.runner.ServiceProcess.health`), and
`tidegate_clock_offset_seconds` shows it (alert `TidegateClockSkew`). Where the broker's time tightens a bound it is used:
a lifetime is set from the broker's time (`issuing_clock`: the policy's authorizations) and judged at the later of the
two (`judging_clock`: the executor's expiry, the approval service's deadlines, a retired key's grace).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = ["BrokerClock", "issuing_clock", "judging_clock"]

LOG_APPEND_TIME = 1  # aiokafka's `RecordMetadata.timestamp_type` when the broker stamped the record itself


@dataclass
class BrokerClock:
    """The offset of this host's wall clock from the broker's, from the last acknowledgement that carried the broker's time."""

    now: Callable[[], float] = time.time  # this host's wall clock (tests move it)
    offset_s: float = 0.0  # the bound nearest zero of the last reading: > 0 this clock is ahead of the broker's, < 0 behind
    readings: int = 0
    every_s: float = 1.0  # one reading a second at most: a clock drifts in hours, and a reading costs a callback a record
    _latest_sent: float = field(default=float("-inf"), repr=False)
    _due_at: float = field(default=float("-inf"), repr=False)

    def sent(self) -> float | None:
        """The wall clock now when a reading is due (the record's acknowledgement is then noted), else None."""
        now = self.now()
        if now < self._due_at:
            return None
        self._due_at = now + self.every_s
        return now

    def acknowledged(self, sent: float, delivery: asyncio.Future[Any]) -> None:
        """A done callback for `delivery`: note the broker's append time it carries (a failed send or a `CreateTime` topic: nothing)."""
        if delivery.cancelled() or delivery.exception() is not None:
            return
        self.note(sent, self.now(), delivery.result())

    def note(self, sent: float, acked: float, metadata: Any) -> None:
        """One acknowledgement: `metadata` (aiokafka's `RecordMetadata`) of a record sent at `sent` and acknowledged by `acked`."""
        if getattr(metadata, "timestamp_type", None) != LOG_APPEND_TIME or sent < self._latest_sent:
            return  # not the broker's time, or older than a reading already taken
        appended = metadata.timestamp / 1000
        low, high = sent - appended, acked - appended
        self.offset_s = low if low > 0 else high if high < 0 else 0.0
        self._latest_sent = sent
        self.readings += 1

    def latest(self) -> float:
        """The later of this host's time and the broker's as last read: a lifetime judged at it never outlives the broker's clock.

        A clock behind the broker's would carry out an authorization the policy signed to expire already (the game day's
        F2); one ahead judges at its own time, as before. The broker's time is never overestimated (`offset_s` is the bound
        nearest zero), so an agreeing clock changes nothing. Before the first acknowledgement it is this host's time.
        """
        local = self.now()
        return max(local, local - self.offset_s)

    def brokers(self) -> float:
        """The broker's time as last read (this host's, before the first acknowledgement): what a lifetime is set from.

        A policy host ahead of the broker's signed every authorization to expire that much later at the broker's time (a
        security bound loosened); set from this, `expires_at` is `ttl` after the broker's time. Never later than the
        broker's true time when this clock is behind (`offset_s` is the bound nearest zero); when it is ahead, later by at
        most the round trip of the acknowledgement it was read off. A lifetime set from it and judged at `latest` is never
        longer, at the broker's clock, than it was meant to be.
        """
        return self.now() - self.offset_s

    def skewed(self, max_skew_s: float) -> str | None:
        """Why this service's clock cannot be trusted (further from the broker's than `max_skew_s`), or None."""
        if abs(self.offset_s) <= max_skew_s:
            return None
        way = "ahead of" if self.offset_s > 0 else "behind"
        return (
            f"this host's clock is at least {abs(self.offset_s):.0f}s {way} the broker's (more than TIDEGATE_MAX_CLOCK_SKEW_S,"
            f" {max_skew_s:g}s): lifetimes are judged wrong (authorizations, approvals, key grace); fix its time sync (NTP)"
        )


def judging_clock(producer: object) -> Callable[[], datetime]:
    """The time a deadline is judged at: this host's, or the broker's as `producer` last read it when later (`latest`).

    What the executor judges an authorization's expiry at, the approval service a request's deadline and a link's key
    grace, and every service a retired key's grace when a record carries no append time. A stand-in producer (tests)
    reads no broker time: this host's then.
    """
    clock = getattr(producer, "clock", None)
    if not isinstance(clock, BrokerClock):
        return lambda: datetime.now(UTC)
    return lambda: datetime.fromtimestamp(clock.latest(), UTC)


def issuing_clock(producer: object) -> Callable[[], datetime]:
    """The time a lifetime is set from: the broker's as `producer` last read it (`brokers`); this host's with a stand-in."""
    clock = getattr(producer, "clock", None)
    if not isinstance(clock, BrokerClock):
        return lambda: datetime.now(UTC)
    return lambda: datetime.fromtimestamp(clock.brokers(), UTC)
