"""A broker outage as the on-call person reads it: one line when the service lost the broker, one when it got it back.

While the broker was away a service's log held only aiokafka's lines (the first of each kind, then `[repeated N times
in 10 s]`), and nothing of the service's own said that it had lost the broker, since when, or that it was over: after a
3-minute outage the last lines of each log were aiokafka's `Heartbeat session expired`, while every group had caught up
(oncall, left alone last session: "a broker outage has no Tidegate start/end line"). `BrokerWatch` reads what the watchdog's checks saw
(`servicekit.liveness.Liveness`: each asks the broker for its consumers' end offsets, every 5 s): once the broker has not
answered for `OUTAGE_AFTER_S`, it logs one ERROR line; at the first check answered after that, one WARNING line with how
long it was away and how many records wait. A silence shorter than that (a check caught by a rebalance, or by the
broker ending a login every 5 minutes) says nothing. The same pair as the database's (`servicekit.db_outage`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from servicekit.liveness import Liveness

__all__ = ["OUTAGE_AFTER_S", "BrokerWatch"]

log = logging.getLogger(__name__)

# A broker that answers at all answers within milliseconds; two checks in a row unanswered (5 s apart) is an outage.
OUTAGE_AFTER_S = 10.0


def _utc(monotonic_at: float, now: float) -> str:
    """The wall-clock time (UTC, to the second) of a `time.monotonic()` reading `now - monotonic_at` ago."""
    return f"{datetime.fromtimestamp(time.time() - (now - monotonic_at), UTC):%Y-%m-%d %H:%M:%S}"


@dataclass
class BrokerWatch:
    """One service's view of its broker: answering, or silent since when; each said once, after each check of `Liveness`."""

    service: str
    where: str  # the bootstrap servers the service was given
    since: float | None = field(default=None, init=False)  # the broker's last answer before the outage said, while it lasts

    def seen(self, live: Liveness, now: float | None = None) -> None:
        """After a check: say the start of an outage once it has lasted `OUTAGE_AFTER_S`, and its end at the first answer."""
        now = time.monotonic() if now is None else now
        if live.unanswered is None:
            if self.since is not None:
                self._over(live, now)
            return
        if self.since is not None or now - live.last_answer < OUTAGE_AFTER_S:
            return
        self.since = live.last_answer
        held = live.in_flight
        log.error(
            "%s: lost the broker at %s: no answer since %s UTC (%.0fs; %s). Holding %d record%s in handling: nothing is "
            "committed, skipped or dead-lettered meanwhile, and what is published waits in the producer; its consumers "
            "resume from their committed offsets when it answers (/health says `retrying`, 503 and TidegateBrokerSilent "
            "past TIDEGATE_STALL_AFTER_S; the process is not restarted for it). Another line says when it answers again.",
            self.service,
            self.where,
            _utc(live.last_answer, now),
            now - live.last_answer,
            live.unanswered,
            held,
            "" if held == 1 else "s",
        )

    def _over(self, live: Liveness, now: float) -> None:
        assert self.since is not None
        away_s, since, waiting = live.last_answer - self.since, self.since, live.waiting
        self.since = None
        log.warning(
            "%s: the broker at %s answers again, after %.0fs without an answer (from %s to %s UTC); %d record%s wait%s on "
            "its partitions, read on from the committed offsets: nothing was skipped (`tidegate lag` shows each group "
            "catching up)",
            self.service,
            self.where,
            away_s,
            _utc(since, now),
            _utc(live.last_answer, now),
            waiting,
            "" if waiting == 1 else "s",
            "s" if waiting == 1 else "",
        )
