"""The in-memory twin of the policy's repository (`repository.PolicyRepository`): for unit tests, what-if and the in-process benchmark.

It keeps the same rules as the PostgreSQL implementation through the helpers they share
(`repository.count_spend`, `flow_row`, `troubles`, ...); tests/unit/policy runs the service on it.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from schemas import Mode
from servicekit.provenance import Provenance
from services.policy.facts import SystemRecord, stricter
from services.policy.repository import (
    PAYOUT_WINDOW,
    TENANT_TOTAL,
    Answer,
    Decide,
    DecisionRecord,
    Ending,
    Forgotten,
    Payout,
    Pending,
    PolicyRepository,
    Reservation,
    Scope,
    Settled,
    TaskInput,
    TaskReads,
    count_spend,
    flow_facts,
    flow_row,
    history_from,
    payout_of,
    troubles,
)

__all__ = ["InMemoryPolicyRepository"]


@dataclass
class _Payouts:
    """One payee's (or tenant's) payouts by time, with running totals: what was paid after a moment is a binary search, not a scan."""

    times: list[datetime] = field(default_factory=list)
    totals: list[float] = field(default_factory=list)  # totals[i]: the amounts of times[0..i]

    def add(self, at: datetime, amount: float) -> None:
        i = bisect.bisect_right(self.times, at)  # a clock set back by a test inserts before the newest
        self.times.insert(i, at)
        self.totals.insert(i, (self.totals[i - 1] if i else 0.0) + amount)
        for j in range(i + 1, len(self.totals)):
            self.totals[j] += amount

    def after(self, since: datetime) -> float:
        """The amounts paid strictly after `since` (as `_SELECT_HISTORY`'s `at > since`)."""
        i = bisect.bisect_right(self.times, since)
        return (self.totals[-1] - (self.totals[i - 1] if i else 0.0)) if self.totals else 0.0


@dataclass
class InMemoryPolicyRepository(PolicyRepository):
    """The in-memory twin, for unit tests and the in-process benchmark.

    Its known payees need no proof (`payees.PayeeSeal`): no database login can write this process's memory.
    """

    decisions: dict[str, DecisionRecord] = field(default_factory=dict)
    answers: dict[str, Answer] = field(default_factory=dict)  # the first answer to each escalation, by action id
    reservations: dict[str, tuple[Reservation, str]] = field(default_factory=dict)
    spend: dict[tuple[str, str], float] = field(default_factory=dict)
    payees: set[tuple[str, str]] = field(default_factory=set)
    versions: dict[str, dict[str, Any]] = field(default_factory=dict)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    reserved_at: dict[str, datetime] = field(default_factory=dict)
    unknown: dict[str, float | None] = field(default_factory=dict)  # held for a human: what the attempts cost, if reported
    read: dict[tuple[str, str], dict[tuple[str, bool], str]] = field(default_factory=dict)  # provenance by task
    texts: dict[tuple[str, str], dict[str, dict[str, str]]] = field(default_factory=dict)  # untrusted text by task, by source
    read_records: dict[tuple[str, str], dict[str, SystemRecord]] = field(default_factory=dict)  # system-of-record entries by task
    learned_tasks: dict[tuple[str, str], Mode] = field(default_factory=dict)  # tasks whose request is learned, with the mode it asked
    requesters: dict[tuple[str, str], str] = field(default_factory=dict)  # who a learned task's first request named
    planned_here: dict[tuple[str, str], bool | None] = field(default_factory=dict)  # and whether it asked our planner to plan it
    by_task: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # decision keys by task, oldest first
    outcomes: dict[tuple[str, str], dict[str, tuple[str, int]]] = field(default_factory=dict)  # call outcomes by task
    read_errors: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)  # failed reads' errors by task, by action id
    began: dict[tuple[str, str], datetime] = field(default_factory=dict)  # when each task's oldest working state was written
    forgotten: set[tuple[str, str]] = field(default_factory=set)  # tasks whose working state was forgotten
    flow_rows: dict[str, tuple[str, str, dict[str, Any]]] = field(default_factory=dict)  # each decision as a flow reads it, made once
    # What allowed calls paid out, the rows of `policy.payouts`: by action id (tenant, task, payee, payout, when), and
    # indexed as `_SELECT_HISTORY` reads them.
    payouts: dict[str, tuple[str, str, str | None, Payout, datetime]] = field(default_factory=dict)
    paid_by_task: dict[tuple[str, str], float] = field(default_factory=dict)
    unpaid: set[str] = field(default_factory=set)  # payouts whose call failed (`failed_at` in PostgreSQL)
    paid_to_payee: dict[tuple[str, str], _Payouts] = field(default_factory=dict)
    paid_alone: dict[str, _Payouts] = field(default_factory=dict)  # by tenant: payouts no human granted (`NOT approved`)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def decision(self, key: str) -> DecisionRecord | None:
        """See PolicyRepository."""
        return self.decisions.get(key)

    async def decide_once(self, key: str, tenant_id: str, task_id: str, payee: str | None, decide: Decide) -> tuple[DecisionRecord, bool]:
        """See PolicyRepository."""
        async with self._lock:
            if key in self.decisions:
                return self.decisions[key], False
            history = history_from(
                self.spend.get((tenant_id, task_id), 0.0),
                self.spend.get((tenant_id, TENANT_TOTAL), 0.0),
                payee is not None and (tenant_id, payee) in self.payees,
                *self._paid_before(tenant_id, task_id, payee),
            )
            record = decide(history)
            self.decisions[key] = record
            if (payout := payout_of(record)) is not None and record.action_id not in self.payouts:
                self._pay(record.action_id, tenant_id, task_id, payee, payout)
            self.by_task.setdefault((tenant_id, task_id), []).append(key)
            res = record.reservation
            if res is not None and res.action_id not in self.reservations:
                self.reservations[res.action_id] = (res, "reserved")
                self.reserved_at[res.action_id] = self.clock()
                self._add(res, res.amount_usd)
            return record, True

    async def decide_many(self, items: list[Pending]) -> list[tuple[DecisionRecord, bool]]:
        """See PolicyRepository."""
        return [await self.decide_once(i.key, i.tenant_id, i.task_id, i.payee, i.decide) for i in items]

    def _pay(self, action_id: str, tenant_id: str, task_id: str, payee: str | None, payout: Payout) -> None:
        at = self.clock()
        self.payouts[action_id] = (tenant_id, task_id, payee, payout, at)
        self._count(tenant_id, task_id, payee, payout, at, payout.amount_usd)

    def _count(self, tenant_id: str, task_id: str, payee: str | None, payout: Payout, at: datetime, amount: float) -> None:
        """Add `amount` (negative: take it back) to each figure `payout` counts toward, where it was counted (`at`)."""
        self.paid_by_task[(tenant_id, task_id)] = self.paid_by_task.get((tenant_id, task_id), 0.0) + amount
        if payee is not None:
            self.paid_to_payee.setdefault((tenant_id, payee), _Payouts()).add(at, amount)
        if not payout.approved:
            self.paid_alone.setdefault(tenant_id, _Payouts()).add(at, amount)

    def _unpay(self, action_id: str) -> None:
        """A call that failed paid nothing: its payout counts toward no figure from now on (as `failed_at` in PostgreSQL)."""
        row = self.payouts.get(action_id)
        if row is None or action_id in self.unpaid:
            return
        self.unpaid.add(action_id)
        tenant_id, task_id, payee, payout, at = row
        self._count(tenant_id, task_id, payee, payout, at, -payout.amount_usd)  # cancels it where it was counted

    def _paid_before(self, tenant_id: str, task_id: str, payee: str | None) -> tuple[float, float, float]:
        """What the task's allowed calls paid out, the tenant's to `payee` and the tenant's without a human over `PAYOUT_WINDOW`.

        As `_SELECT_HISTORY` reads them.
        """
        since = self.clock() - PAYOUT_WINDOW
        to_payee = self.paid_to_payee.get((tenant_id, payee)) if payee is not None else None
        alone = self.paid_alone.get(tenant_id)
        return (
            self.paid_by_task.get((tenant_id, task_id), 0.0),
            to_payee.after(since) if to_payee is not None else 0.0,
            alone.after(since) if alone is not None else 0.0,
        )

    def _add(self, res: Reservation, amount: float) -> None:
        count_spend(self.spend, res.tenant_id, res.task_id, amount)

    async def answer(self, action_id: str, tenant_id: str, task_id: str, approval_id: str, answer: str) -> Answer:
        """See PolicyRepository."""
        return self.answers.setdefault(action_id, Answer(approval_id, answer, self.clock()))

    async def release(self, action_id: str) -> bool:
        """See PolicyRepository."""
        held = self.reservations.get(action_id)
        if held is None or held[1] != "reserved":
            return False
        self.reservations[action_id] = (held[0], "released")
        self._add(held[0], -held[0].amount_usd)
        return True

    async def settle(self, action_id: str, cost_usd: float | None) -> Settled | None:
        """See PolicyRepository."""
        held = self.reservations.get(action_id)
        if held is None:
            return None
        res, status = held
        if status in ("reserved", "expired"):
            self.reservations[action_id] = (res, "settled")
            actual = next((c for c in (cost_usd, self.unknown.get(action_id)) if c is not None), res.amount_usd)
            self._add(res, actual - (res.amount_usd if status == "reserved" else 0.0))
        return Settled(res.tenant_id, res.tool, res.args)

    async def hold_unknown(self, action_id: str, cost_usd: float | None = None) -> None:
        """See PolicyRepository."""
        self.unknown.setdefault(action_id, cost_usd)

    async def end(self, ending: Ending) -> Settled | None:
        """See PolicyRepository."""
        e = ending
        if e.status == "failed":
            self._unpay(e.action_id)
        await self.record_outcome(e.tenant_id, e.task_id, e.action_id, e.status, e.attempts)
        await self.learn(e.tenant_id, e.task_id, trusted={}, untrusted=e.learned)
        self._keep_texts(e.tenant_id, e.task_id, e.texts)
        if e.record is not None:
            await self.learn_record(e.tenant_id, e.task_id, *e.record)
        if e.read_error is not None:
            self.read_errors.setdefault((e.tenant_id, e.task_id), {}).setdefault(e.action_id, e.read_error)
        if e.budget == "release":
            await self.release(e.action_id)
        elif e.budget == "hold":
            await self.hold_unknown(e.action_id, e.cost_usd)
        else:
            return await self.settle(e.action_id, e.cost_usd)
        return None

    async def end_many(self, endings: list[Ending]) -> list[Settled | None]:
        """See PolicyRepository."""
        return [await self.end(e) for e in endings]

    async def release_expired(self, reserved_before: datetime, *, limit: int = 1000) -> list[str]:
        """See PolicyRepository (the twin marks them `expired`, PostgreSQL `released` with `expired_at`)."""
        due = sorted(
            (self.reserved_at[a], a)
            for a, (_, status) in self.reservations.items()
            if status == "reserved" and a not in self.unknown and self.reserved_at.get(a, reserved_before) < reserved_before
        )[:limit]
        for _, action_id in due:
            res = self.reservations[action_id][0]
            self.reservations[action_id] = (res, "expired")
            self._add(res, -res.amount_usd)
        return [a for _, a in due]

    async def add_known_payee(self, tenant_id: str, payee: str, learned_from: str) -> None:
        """See PolicyRepository."""
        self.payees.add((tenant_id, payee))

    async def record_policy_version(self, version: str, files: dict[str, str], settings: dict[str, Any], published_by: str) -> None:
        """See PolicyRepository."""
        self.versions.setdefault(version, {"files": files, "settings": settings, "published_by": published_by})

    async def learn(self, tenant_id: str, task_id: str, *, trusted: dict[str, str], untrusted: dict[str, str]) -> None:
        """See PolicyRepository."""
        rows = self.read.setdefault((tenant_id, task_id), {})
        if trusted or untrusted:
            self._began(tenant_id, task_id)
        for is_trusted, values in ((True, trusted), (False, untrusted)):
            for value, source in values.items():
                rows.setdefault((value, is_trusted), source)

    async def learn_many(self, inputs: list[TaskInput]) -> None:
        """See PolicyRepository."""
        for i in inputs:
            await self.learn(i.tenant_id, i.task_id, trusted=i.trusted, untrusted=i.untrusted)
            self._keep_texts(i.tenant_id, i.task_id, i.texts)
            if i.request:  # learned again: the stricter mode (as PostgreSQL keeps it)
                scope = (i.tenant_id, i.task_id)
                self.learned_tasks[scope] = stricter(i.mode, self.learned_tasks.get(scope))
                if i.requested_by and scope not in self.requesters:
                    self.requesters[scope] = i.requested_by
                    self.planned_here[scope] = i.planned_here
                self._began(i.tenant_id, i.task_id)

    def _keep_texts(self, tenant_id: str, task_id: str, texts: dict[str, dict[str, str]]) -> None:
        """A source's text, kept once (its first learning wins, as PostgreSQL keeps it)."""
        if texts:
            self._began(tenant_id, task_id)
        for source, fields in texts.items():
            self.texts.setdefault((tenant_id, task_id), {}).setdefault(source, dict(fields))

    async def untrusted_texts(self, wanted: Mapping[Scope, Collection[str]]) -> dict[Scope, dict[str, dict[str, str]]]:
        """See PolicyRepository."""
        out: dict[Scope, dict[str, dict[str, str]]] = {}
        for scope, sources in wanted.items():
            kept = self.texts.get(scope, {})
            if found := {s: dict(kept[s]) for s in sources if s in kept}:
                out[scope] = found
        return out

    async def provenance(self, tenant_id: str, task_id: str) -> Provenance:
        """See PolicyRepository."""
        rows = self.read.get((tenant_id, task_id), {})
        return Provenance.of((value, source, trusted) for (value, trusted), source in rows.items())

    async def learn_record(self, tenant_id: str, task_id: str, record_id: str, record: SystemRecord) -> None:
        """See PolicyRepository."""
        self.read_records.setdefault((tenant_id, task_id), {})[record_id] = record
        self._began(tenant_id, task_id)

    async def records(self, tenant_id: str, task_id: str) -> dict[str, SystemRecord]:
        """See PolicyRepository."""
        return dict(self.read_records.get((tenant_id, task_id), {}))

    async def awaiting_results(self, tenant_id: str, task_id: str) -> list[str]:
        """See PolicyRepository."""
        keys = self.by_task.get((tenant_id, task_id), [])
        held = [self.reservations.get(self.decisions[k].action_id) for k in keys]
        return [h[0].tool for h in held if h is not None and h[1] == "reserved"]

    async def task_decisions(self, tenant_id: str, task_id: str) -> list[tuple[str, str, dict[str, Any]]]:
        """See PolicyRepository."""
        return [self._flow_row(k) for k in self.by_task.get((tenant_id, task_id), [])]

    def _flow_row(self, key: str) -> tuple[str, str, dict[str, Any]]:
        """A stored decision as a flow reads it: made at its first read, not at each (a long task's replay reads them all per step)."""
        row = self.flow_rows.get(key)
        if row is None:
            r = self.decisions[key]
            row = self.flow_rows[key] = flow_row(r.proposal.tool, r.outcome, flow_facts(r))
        return row

    async def record_outcome(self, tenant_id: str, task_id: str, action_id: str, status: str, attempts: int) -> None:
        """See PolicyRepository."""
        self.outcomes.setdefault((tenant_id, task_id), {}).setdefault(action_id, (status, attempts))
        self._began(tenant_id, task_id)

    async def task_troubles(self, tenant_id: str, task_id: str) -> tuple[int, int]:
        """See PolicyRepository."""
        return troubles(self.outcomes.get((tenant_id, task_id), {}).values())

    async def task_reads(self, scopes: list[Scope]) -> dict[Scope, TaskReads]:
        """See PolicyRepository."""
        return {
            (t, k): TaskReads(
                await self.awaiting_results(t, k),
                await self.provenance(t, k),
                await self.task_decisions(t, k),
                await self.task_troubles(t, k),
                await self.records(t, k),
                (t, k) in self.learned_tasks,
                (t, k) in self.forgotten,
                self._failed_reads(t, k),
                mode=self.learned_tasks.get((t, k)),
                requested_by=self.requesters.get((t, k)),
                planned_here=self.planned_here.get((t, k)),
                proposed_for=frozenset(
                    r.proposal.requested_by
                    for r in self.decisions.values()
                    if (r.tenant_id, r.task_id) == (t, k) and r.proposal.undoes is None and r.proposal.requested_by is not None
                ),
            )
            for t, k in scopes
        }

    def _failed_reads(self, tenant_id: str, task_id: str) -> list[tuple[str, dict[str, Any], str, str]]:
        """The task's failed trusted reads, with what their reservations say they asked for (as PostgreSQL joins them)."""
        errors = self.read_errors.get((tenant_id, task_id), {})
        held = [(a, self.reservations[a][0], error) for a, error in errors.items() if a in self.reservations]
        return [(r.tool, r.args, error, a) for a, r, error in held]

    def _began(self, tenant_id: str, task_id: str) -> None:
        self.began.setdefault((tenant_id, task_id), self.clock())

    async def forget_tasks_before(self, cutoff: datetime, *, limit: int = 10_000) -> Forgotten:
        """See PolicyRepository: a task whose oldest working state is older than `cutoff` is forgotten whole, at once.

        PostgreSQL forgets the same tasks row by row: their younger rows there go later, once old enough, and
        no decision reads them meanwhile. `limit` is not needed here: nothing is held while it runs.
        """
        ended = [a for a, (_, status) in self.reservations.items() if status != "reserved" and self.reserved_at[a] < cutoff]
        old = sorted({s for s, at in self.began.items() if at < cutoff} | {self._scope(a) for a in ended})
        rows = len(ended)
        for scope in old:
            self.began.pop(scope, None)
            self.read_errors.pop(scope, None)  # a column of the call's outcome in PostgreSQL: no row of its own
            rows += len(self.read.pop(scope, {})) + len(self.read_records.pop(scope, {})) + len(self.outcomes.pop(scope, {}))
            rows += len(self.texts.pop(scope, {}))
            self.requesters.pop(scope, None)  # a column of its learned row in PostgreSQL
            self.planned_here.pop(scope, None)
            if self.learned_tasks.pop(scope, None) is not None:
                rows += 1
        for action_id in ended:
            del self.reservations[action_id], self.reserved_at[action_id]
        new = [s for s in old if s not in self.forgotten]
        self.forgotten.update(old)
        return Forgotten(rows, len(new))

    def _scope(self, action_id: str) -> tuple[str, str]:
        res = self.reservations[action_id][0]
        return res.tenant_id, res.task_id
