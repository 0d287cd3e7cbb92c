"""What the policy service keeps in its own schema: decisions by action, budget reservations, known payees, what tasks read.

The contract: the values stored and read, the Protocol, and the rules both implementations share
(spend by scope, a decision's flow facts, a task's troubles). The PostgreSQL implementation is
`_pg_repository.PgPolicyRepository`, its in-memory twin `_memory_repository.InMemoryPolicyRepository`.
`decide_once` is the unit of work of a decision: in one transaction (serialised per tenant, so that
two copies of the service cannot both spend the last dollar) it reads the history, lets the pure
decision run, and records the decision with its reservation; a decision already recorded for the
key is returned instead.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from schemas import ActionProposedData, Mode
from servicekit.db import delete_in_batches
from servicekit.provenance import Provenance
from services.policy.facts import History, SystemRecord

__all__ = [
    "FLOW_FACTS",
    "PAYOUT_WINDOW",
    "TENANT_TOTAL",
    "Answer",
    "DecisionRecord",
    "Ending",
    "Forgotten",
    "PaidOut",
    "Payout",
    "Pending",
    "PolicyRepository",
    "Reservation",
    "Scope",
    "Settled",
    "TaskInput",
    "TaskReads",
    "count_payout",
    "count_spend",
    "flow_facts",
    "flow_row",
    "forget_tasks",
    "granted_key",
    "history_from",
    "kept_flow_facts",
    "paid_before",
    "payout_of",
    "troubles",
]

TENANT_TOTAL = "*"


def granted_key(approval_id: str) -> str:
    """The key a decision is recorded under when a grant is decided again (a proposal's decision is keyed by its action id)."""
    return f"approval:{approval_id}"


@dataclass(frozen=True)
class Answer:
    """The first answer the policy verified to an escalation: which request gave it, how, and when.

    An escalation has one request (the approval service keeps one per action and kind), so every later answer must be
    this one again (a redelivery); another request's answer, or this request's answer turned around, is refused
    (a copied or restored request row: docs/security/database.md).
    """

    approval_id: str
    answer: str  # granted, rejected or expired (`approval.granted`, `.rejected`, `.expired`)
    answered_at: datetime

    def same(self, approval_id: str, answer: str) -> bool:
        """Whether `answer` from `approval_id` is this answer again."""
        return approval_id == self.approval_id and answer == self.answer


@dataclass(frozen=True)
class Reservation:
    """Budget held for an authorized call until it fails (released) or ends (settled)."""

    action_id: str
    tenant_id: str
    task_id: str
    tool: str
    args: dict[str, Any]
    amount_usd: float


@dataclass(frozen=True)
class DecisionRecord:
    """A decision as recorded: the exact events published, so a redelivery republishes the same ones."""

    key: str
    action_id: str
    tenant_id: str
    task_id: str
    outcome: str
    action_digest: str
    proposal: ActionProposedData  # the call as proposed, kept as its model (stored as JSON)
    decided_event: str
    authorized_event: str | None = None
    reservation: Reservation | None = None
    # The events as objects, only when just decided, as built before signing (their signature is in the JSON above);
    # not stored: a redelivery republishes the JSON above.
    decided: Any = field(default=None, compare=False, repr=False)
    authorized: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Settled:
    """What a settled reservation was for (to learn payees from successful refunds)."""

    tenant_id: str
    tool: str
    args: dict[str, Any]


@dataclass(frozen=True)
class TaskReads:
    """What one task has stored, as a decision reads it: results awaited, values read, decisions taken, troubles, records read."""

    awaiting: list[str]  # tools of its authorized calls whose result has not been seen yet
    provenance: Provenance
    decisions: list[tuple[str, str, dict[str, Any]]]  # oldest first, as (tool, outcome, the `FLOW_FACTS` of an allowed call)
    troubles: tuple[int, int]
    records: dict[str, SystemRecord]
    learned: bool  # the task's request (`tasks`) is learned: what its untrusted fields carry is known
    forgotten: bool = False  # its working state was forgotten (`forget_tasks_before`): it began too long ago to decide for
    # Its failed trusted reads of the system of record, as (tool, args, error, action id): a later call on an entry one
    # asked for says so (`facts.FailedRead`), not that the entry was never read.
    failed_reads: list[tuple[str, dict[str, Any], str, str]] = field(default_factory=list)
    # The mode its request asked for (`task.submitted`, signed by the requester's client); None: not learned, or learned
    # before migration 014 kept none (a learned task is then decided as draft, the strictest).
    mode: Mode | None = None
    # Who its first request names (`task.submitted`, signed by the requester's client): four eyes binds them whoever proposes;
    # None: not learned, or learned before migration 016 kept it.
    requested_by: str | None = None
    # Whom its earlier proposals named as their requester (undos left out: any of the tenant's people may ask one).
    proposed_for: frozenset[str] = frozenset()
    # Whether its first request asked Tidegate's planner to plan it; None: not learned, or learned before migration 021.
    planned_here: bool | None = None


Scope = tuple[str, str]  # (tenant id, task id)


@dataclass(frozen=True)
class Ending:
    """How an authorized call ended, stored in one unit: its outcome, what its result taught, and its reservation's fate.

    `budget` is `release` (failed), `settle` (succeeded, at `cost_usd` when known, else the estimate)
    or `hold` (unknown: held until a human settles it, never expired; `cost_usd` is what the attempts cost,
    the figure a human's `confirmed_done` settles it at).
    """

    tenant_id: str
    task_id: str
    action_id: str
    status: str
    attempts: int
    budget: Literal["release", "settle", "hold"]
    cost_usd: float | None = None
    learned: dict[str, str] = field(default_factory=dict)  # untrusted values of its result (value → where)
    texts: dict[str, dict[str, str]] = field(default_factory=dict)  # its untrusted result's text, to quote (where → field → text)
    record: tuple[str, SystemRecord] | None = None  # what a trusted read said of an entry of the system of record
    read_error: str | None = None  # a trusted read of the system of record that was tried and failed: why (error, attempts)


@dataclass(frozen=True)
class TaskInput:
    """What a task's request taught (value → where): the values it vouches for, and those its untrusted fields carry."""

    tenant_id: str
    task_id: str
    trusted: dict[str, str]
    untrusted: dict[str, str]
    request: bool = False  # from the task's request: the task is then learned (`TaskReads.learned`), even with no values
    mode: Mode = "draft"  # the mode the request asked for (with `request`); a second request of the task can only make it stricter
    requested_by: str | None = None  # who the request names (with `request`, signed by their client); the first request's is kept
    planned_here: bool | None = None  # the request asked Tidegate's planner to plan it (with `request`); the first request's is kept
    texts: dict[str, dict[str, str]] = field(default_factory=dict)  # its untrusted fields' text, to quote (where → field → text)


Decide = Callable[[History], DecisionRecord]
Holds = Callable[[History, History], bool]


def _same(seen: History, now: History) -> bool:
    return seen == now


@dataclass(frozen=True)
class Pending:
    """One decision to take in a batch: its key, whose budget it may spend, the payee it pays, and the pure decision.

    `holds(seen, now)` says whether a decision taken on history `seen` is still the decision under
    `now` (by default: only when they are equal).
    """

    key: str
    tenant_id: str
    task_id: str
    payee: str | None
    decide: Decide
    holds: Holds = _same


class PolicyRepository(Protocol):
    """Storage of the policy service."""

    async def decision(self, key: str) -> DecisionRecord | None:
        """The decision recorded under `key` (an action id, or `approval:<id>`), if any."""
        ...

    async def decide_once(self, key: str, tenant_id: str, task_id: str, payee: str | None, decide: Decide) -> tuple[DecisionRecord, bool]:
        """Record `decide(history)` under `key` unless a decision is already there; returns (record, newly decided)."""
        ...

    async def decide_many(self, items: list[Pending]) -> list[tuple[DecisionRecord, bool]]:
        """`decide_once` for a batch, in one transaction; each decision sees the reservations of those before it."""
        ...

    async def answer(self, action_id: str, tenant_id: str, task_id: str, approval_id: str, answer: str) -> Answer:
        """Record `answer` as the first to `action_id`'s escalation unless one is recorded; returns the first recorded."""
        ...

    async def release(self, action_id: str) -> bool:
        """Give back the budget held for `action_id` (the call failed or never ran); True if something was held."""
        ...

    async def settle(self, action_id: str, cost_usd: float | None) -> Settled | None:
        """Mark the reservation spent; returns what it was for.

        At `cost_usd` when given; else at the cost its `action.unknown` reported (`hold_unknown`), else at the estimate.
        A reservation already released as expired is counted again: the call ran after all.
        """
        ...

    async def hold_unknown(self, action_id: str, cost_usd: float | None = None) -> None:
        """The call's outcome is unknown: keep its reservation held until a human resolves it (never expire it).

        `cost_usd` is what its attempts cost, as its `action.unknown` reported (None: not reported); the first one is kept.
        """
        ...

    async def end(self, ending: Ending) -> Settled | None:
        """Record how a call ended, learn what its result taught, then release, settle or hold its reservation, all at once.

        Returns what a settled reservation was for (None when nothing was settled or there is none).
        """
        ...

    async def end_many(self, endings: list[Ending]) -> list[Settled | None]:
        """`end` for a batch of calls in one transaction, in order; what each settled reservation was for."""
        ...

    async def release_expired(self, reserved_before: datetime, *, limit: int = 1000) -> list[str]:
        """Release held reservations made before `reserved_before` with no result seen; their action ids."""
        ...

    async def add_known_payee(self, tenant_id: str, payee: str, learned_from: str) -> None:
        """Remember that `tenant_id` has paid `payee`."""
        ...

    async def record_policy_version(self, version: str, files: dict[str, str], settings: dict[str, Any], published_by: str) -> None:
        """Keep every policy version that decided something (for explanation and replay)."""
        ...

    async def learn(self, tenant_id: str, task_id: str, *, trusted: dict[str, str], untrusted: dict[str, str]) -> None:
        """Remember values the task has read (value → where): those its request vouches for, and untrusted ones; idempotent."""
        ...

    async def learn_many(self, inputs: list[TaskInput]) -> None:
        """`learn` for a batch of tasks' inputs, at once; a task whose request an input is (`TaskInput.request`) is then learned."""
        ...

    async def provenance(self, tenant_id: str, task_id: str) -> Provenance:
        """Everything the task has read so far."""
        ...

    async def untrusted_texts(self, wanted: Mapping[Scope, Collection[str]]) -> dict[Scope, dict[str, dict[str, str]]]:
        """The kept text of untrusted sources (task → source → field → text) the tasks read, those of `wanted` (task → sources).

        Only of the task itself: a task id another tenant also used reads nothing of the other's.
        """
        ...

    async def learn_record(self, tenant_id: str, task_id: str, record_id: str, record: SystemRecord) -> None:
        """Remember what a trusted read said of an entry of the system of record (the latest read wins)."""
        ...

    async def records(self, tenant_id: str, task_id: str) -> dict[str, SystemRecord]:
        """The entries of the system of record the task has read, by id."""
        ...

    async def task_decisions(self, tenant_id: str, task_id: str) -> list[tuple[str, str, dict[str, Any]]]:
        """The task's decisions so far, oldest first, as (tool, outcome, facts): its flow."""
        ...

    async def awaiting_results(self, tenant_id: str, task_id: str) -> list[str]:
        """Tools of the task's authorized calls whose result has not been seen yet (reservation still held)."""
        ...

    async def record_outcome(self, tenant_id: str, task_id: str, action_id: str, status: str, attempts: int) -> None:
        """Remember how a call of the task ended (its status and attempts); idempotent per action id."""
        ...

    async def task_troubles(self, tenant_id: str, task_id: str) -> tuple[int, int]:
        """The task's (retries, tool errors) so far: attempts beyond the first, and calls that failed or ended unknown."""
        ...

    async def task_reads(self, scopes: list[Scope]) -> dict[Scope, TaskReads]:
        """Everything a decision reads of each task in `scopes` (the five reads above), in one snapshot."""
        ...

    async def forget_tasks_before(self, cutoff: datetime, *, limit: int = 10_000) -> Forgotten:
        """Forget working state written before `cutoff`, up to `limit` rows of each kind, and name every task that lost some.

        Working state: what a task read (provenance, records), how its calls ended, whether its request
        is learned, and its reservations once settled or released (a held one stays until it is
        resolved). A task named forgotten stays so (`TaskReads.forgotten`): what it read is no longer
        known, so nothing more is decided for it. Decisions and spend are records, kept.
        """
        ...


@dataclass(frozen=True)
class Forgotten:
    """What `forget_tasks_before` or `forget_tasks` did."""

    rows: int = 0  # rows of working state deleted
    tasks: int = 0  # tasks named forgotten for the first time


async def forget_tasks(repo: PolicyRepository, cutoff: datetime, *, batch: int = 10_000) -> Forgotten:
    """Forget every task's working state written before `cutoff`, `batch` rows of a kind at a time (no statement holds a table long).

    Rounds go on while one deletes `batch` rows or more in all: while some kind may have had more due than a statement took.
    """
    tasks = 0

    async def one_round(limit: int) -> int:
        nonlocal tasks
        done = await repo.forget_tasks_before(cutoff, limit=limit)
        tasks += done.tasks
        return done.rows

    return Forgotten(await delete_in_batches(one_round, batch), tasks)


def count_spend(spend: dict[tuple[str, str], float], tenant_id: str, task_id: str, amount: float) -> None:
    """Add `amount` to what the task and the tenant as a whole have spent (the two budget scopes)."""
    for scope in ((tenant_id, task_id), (tenant_id, TENANT_TOTAL)):
        spend[scope] = spend.get(scope, 0.0) + amount


FLOW_FACTS = ("external_recipients", "amount_usd")  # what `Flow.of` reads of an earlier allowed call's facts


def flow_row(tool: str, outcome: str, facts: Iterable[str | None]) -> tuple[str, str, dict[str, Any]]:
    """An earlier decision as a flow reads it, from the JSON of its `FLOW_FACTS` (None where absent)."""
    return tool, outcome, {name: json.loads(value) for name, value in zip(FLOW_FACTS, facts, strict=True) if value is not None}


def _decided_facts(record: DecisionRecord) -> dict[str, Any]:
    """The facts of a recorded decision: of its event as built when just decided, else of the JSON it was published as."""
    if record.decided is not None:
        return record.decided.data.facts or {}
    return (json.loads(record.decided_event).get("data") or {}).get("facts") or {}


def kept_flow_facts(record: DecisionRecord) -> dict[str, Any] | None:
    """What is stored beside an allowed decision for later decisions of its task (`FLOW_FACTS`); None otherwise."""
    if record.outcome != "allow":
        return None
    facts = _decided_facts(record)
    return {name: facts[name] for name in FLOW_FACTS if name in facts}


def flow_facts(record: DecisionRecord) -> list[str | None]:
    """The JSON of a recorded decision's `FLOW_FACTS` (`kept_flow_facts`), as `_SELECT_TASK_READS` reads them."""
    kept = kept_flow_facts(record) or {}
    return [json.dumps(kept[name]) if name in kept else None for name in FLOW_FACTS]


def troubles(outcomes: Iterable[tuple[str, int]]) -> tuple[int, int]:
    """(retries, tool errors) of a task's call outcomes, given as (status, attempts).

    An authorization the executor refused before any call (0 attempts: expired while it was down, a kill switch) is no
    tool's error: counted, two of them would escalate the task's next writes as if its tools were failing.
    """
    done = list(outcomes)
    errors = sum(1 for status, attempts in done if status in ("failed", "unknown") and attempts > 0)
    return sum(max(attempts - 1, 0) for _, attempts in done), errors


def history_from(
    task: float, tenant: float, payee_known: bool, paid_task: float = 0.0, paid_payee: float = 0.0, paid_tenant: float = 0.0
) -> History:
    """What a decision knows: what the task and the tenant have spent, whether the payee is known, what was paid out before it.

    Paid out: by the task (`paid_task`), to its payee over `PAYOUT_WINDOW`, in any task (`paid_payee`), and by the tenant over
    `PAYOUT_WINDOW` without a human grant, any task and payee (`paid_tenant`).
    """
    return History(
        payee_known=payee_known,
        spend_task_usd=float(task),
        spend_tenant_usd=float(tenant),
        paid_task_usd=float(paid_task),
        paid_payee_usd=float(paid_payee),
        paid_tenant_usd=float(paid_tenant),
    )


# How far back what the tenant paid out counts toward its daily bounds (`History.paid_payee_usd`, `paid_tenant_usd`), across tasks.
PAYOUT_WINDOW = timedelta(hours=24)

# ("task", tenant, task id), ("payee", tenant, payee) or ("tenant", tenant, `TENANT_TOTAL`: without a human) → amount paid out
PaidOut = dict[tuple[str, str, str], float]


@dataclass(frozen=True)
class Payout:
    """What an allowed decision lets out: its `amount_usd` fact, and whether a human granted it (it then had one)."""

    amount_usd: float
    approved: bool


def payout_of(record: DecisionRecord) -> Payout | None:
    """What an allowed decision lets out, None for any other decision or a call without an amount."""
    if record.outcome != "allow":
        return None
    facts = _decided_facts(record)
    amount = facts.get("amount_usd")
    if not isinstance(amount, int | float) or isinstance(amount, bool) or amount <= 0:
        return None
    return Payout(float(amount), facts.get("approval_granted") is True)


def paid_before(paid: PaidOut, tenant_id: str, task_id: str, payee: str | None) -> tuple[float, float, float]:
    """What was paid out before a call: by its task, to its payee (0 without one), and by its tenant without a human."""
    return (
        paid.get(("task", tenant_id, task_id), 0.0),
        paid.get(("payee", tenant_id, payee), 0.0) if payee else 0.0,
        paid.get(("tenant", tenant_id, TENANT_TOTAL), 0.0),
    )


def count_payout(paid: PaidOut, tenant_id: str, task_id: str, payee: str | None, payout: Payout) -> None:
    """Add an allowed call's payout to what its task, the tenant to its payee, and the tenant without a human (unless granted) paid out."""
    keys = [("task", tenant_id, task_id)]
    keys += [("payee", tenant_id, payee)] if payee else []
    keys += [] if payout.approved else [("tenant", tenant_id, TENANT_TOTAL)]
    for key in keys:
        paid[key] = paid.get(key, 0.0) + payout.amount_usd
