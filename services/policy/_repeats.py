"""How often the policy answers a proposal of a call it already decided: its first repeat at once, then at most once an interval.

Each proposal of a decided call got its recorded decision published again (and an allowed call's authorization, on
which the executor publishes the call's kept result again): an agent re-proposing its own old calls 156,000 times in
four minutes wrote three records each, which every start's check then read, past `tidegate restart`'s 90 s (restore8
N2). Who needs an answer again: a redelivery after a crash (a new process, which remembers nothing of this), a client
sending once more a proposal the broker never acknowledged, and an agent restarted without its ledger that asks again
and reads from where it asks (the first repeat of a call is always answered: money9 F3). Nobody needs it again and
again within a minute: it is on the bus, where its requester reads it.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypeVar

from schemas import ActionProposedData
from servicekit.metrics import observe_repeats_unanswered

__all__ = ["KEPT", "RepeatAnswers"]

log = logging.getLogger(__name__)

KEPT = 50_000  # action ids (and requesters) remembered: an agent proposing ever new ids cannot grow the memory past it

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")  # a decision's record: the service's `DecisionRecord`


@dataclass
class _Held:
    """The repeats of one requester held back since `since`, not logged yet; `logged`: when they were last logged."""

    since: datetime
    count: int = 0
    logged: datetime | None = None


def _keep(kept: OrderedDict[K, V], bound: int) -> None:
    while len(kept) > bound:  # the least recently touched first: an id answered longest ago is answered again anyway
        kept.popitem(last=False)


@dataclass
class RepeatAnswers:
    """The action ids answered lately (`interval_s`; 0: every repeat is answered), and the repeats held back by requester.

    Only in memory, at most `kept` of each: forgetting an id early answers its next repeat again, never loses one.
    """

    interval_s: float
    kept: int = KEPT
    _answered: OrderedDict[str, datetime] = field(default_factory=OrderedDict, init=False, repr=False)
    _held: OrderedDict[tuple[str, str], _Held] = field(default_factory=OrderedDict, init=False, repr=False)

    def split(
        self, proposals: Sequence[tuple[ActionProposedData, T, bool]], now: datetime
    ) -> tuple[list[T], list[str], list[ActionProposedData]]:
        """Of decided proposals (each with its record and whether it is fresh): what to publish, what is again, what is held.

        The records to publish, the action ids of those published again (to remember once published: `answered`), and the
        repeats held back. A fresh decision is always published, and is not counted as an answer given again: the first repeat of a call is
        answered whenever it comes (an agent restarted without its ledger asks again, and reads from where it asks). A
        repeat after that is answered unless its action id was answered again within the interval, or earlier in the batch.
        """
        due: list[T] = []
        again: list[str] = []
        held: list[ActionProposedData] = []
        batch: set[str] = set()
        for proposal, record, fresh in proposals:
            if fresh or self.interval_s <= 0 or (proposal.action_id not in batch and not self._lately(proposal.action_id, now)):
                due.append(record)
                if not fresh:
                    again.append(proposal.action_id)
                batch.add(proposal.action_id)
            else:
                held.append(proposal)
        return due, again, held

    def _lately(self, action_id: str, now: datetime) -> bool:
        at = self._answered.get(action_id)
        # A clock set back (now before `at`) answers again rather than hold an answer back for as long.
        return at is not None and timedelta(0) <= now - at < timedelta(seconds=self.interval_s)

    def answered(self, action_ids: Iterable[str], now: datetime) -> None:
        """Remember that these action ids' decisions were published again at `now` (once they are: a failed publish is retried)."""
        if self.interval_s <= 0:
            return
        for action_id in action_ids:
            self._answered[action_id] = now
            self._answered.move_to_end(action_id)
        _keep(self._answered, self.kept)

    def held_back(self, proposals: Iterable[ActionProposedData], now: datetime) -> None:
        """Count the repeats not answered again, by tenant; log each requester's at WARNING at most once an interval."""
        by_tenant: dict[str, int] = {}
        due: dict[tuple[str, str], _Held] = {}  # the requesters whose tally is logged now
        for p in proposals:
            by_tenant[p.tenant_id] = by_tenant.get(p.tenant_id, 0) + 1
            who = (p.tenant_id, p.requested_by or "(no requester)")
            tally = self._held.get(who)
            if tally is None:
                tally = self._held[who] = _Held(since=now)
            self._held.move_to_end(who)
            tally.count += 1
            if tally.logged is None or not timedelta(0) <= now - tally.logged < timedelta(seconds=self.interval_s):
                due[who] = tally
        _keep(self._held, self.kept)
        for tenant, count in by_tenant.items():
            observe_repeats_unanswered(tenant, count)
        for (tenant, requester), tally in due.items():
            log.warning(
                "policy: %d repeats of decided calls by %s (tenant %s) not answered again since %s (each answered at most once "
                "every %g s); their answers are on actions.decided",
                tally.count, requester, tenant, tally.since.isoformat(timespec="seconds"), self.interval_s,
            )  # fmt: skip
            tally.since, tally.count, tally.logged = now, 0, now
