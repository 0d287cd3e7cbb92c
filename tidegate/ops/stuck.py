"""`tidegate tasks`: what each open task waits on now, from the planner's state, the executor's calls and the audit log.

The planner says which step a task waits on; the executor says where that step's call stands (running, or a retry
due at T); the audit log's `approval.requested` says when a human was asked and until when. `describe` joins them
(pure, tested without a database); `read_open` reads the three as the operator, read-only. An outside agent's actions
(no planner task behind them) come from the services that hold them (`_outside`), each described by `describe_outside`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from servicekit import KitSettings, connect
from servicekit.unreadable import Unreadable, read_event
from tidegate.ops._outside import OutsideAction, read_outside

__all__ = ["Asked", "Decided", "OutsideAction", "Stuck", "describe", "describe_outside", "read_handoffs", "read_open"]

PLANNER = "tidegate/planner"
"""`proposed_by` of a planner task's row (an outside agent's row names its proposer)."""


@dataclass(frozen=True)
class Asked:
    """A human's approval as the audit log recorded its request."""

    approval_id: str
    requested_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class Stuck:
    """One open task and what it waits on, in words, with the times that matter."""

    task: Any  # services.planner.OpenTask, or an outside agent's OutsideAction
    waits_on: str
    since: datetime  # when the wait began (the request, the proposal, the authorization, or the task's last change)
    expires_at: datetime | None = None  # a human's approval: when it expires unanswered
    retry_at: datetime | None = None  # a call between two attempts: when the next is due

    @property
    def outside(self) -> bool:
        """Whether an outside agent proposed it (no planner task behind it)."""
        return isinstance(self.task, OutsideAction)

    @property
    def proposed_by(self) -> str | None:
        """Who proposed the action it waits on: the planner, or the outside agent's recorded name (None: not recorded)."""
        return self.task.proposed_by if isinstance(self.task, OutsideAction) else PLANNER

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            **self.task.model_dump(mode="json"),
            "proposed_by": self.proposed_by,
            "outside_agent": self.outside,
            "waits_on": self.waits_on,
            "since": self.since.isoformat(),
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "retry_at": self.retry_at.isoformat() if self.retry_at else None,
        }


DECISION_UNTAKEN_S = 30.0
"""A decision the audit log holds this long while the planner still waits on one: not in transit, refused by the planner."""


@dataclass(frozen=True)
class Decided:
    """The policy's decision on a step's action, as the audit log recorded it (the newest since the step began waiting)."""

    outcome: str
    at: datetime


def describe(task: Any, call: Any | None, asked: Asked | None, now: datetime, decided: Decided | None = None) -> Stuck:
    """What `task` (an `OpenTask`) waits on, given its step's call (`services.executor.CallState`) and approval request.

    `decided`: the policy's decision the audit log holds for a step that waits on one. Older than `DECISION_UNTAKEN_S`,
    the planner did not take it (it refused the event: a dead letter): saying the task waits on the policy sent the
    operator to a service that had answered (upgrade probe F7: a later release's policy beside an older planner).
    """
    tool = task.tool or "?"
    if task.waits == "human":
        if asked is None:
            return Stuck(task, f"a human's approval of {tool} ({task.approval_id or 'request not recorded yet'})", task.updated_at)
        overdue = " (past its expiry: the approval service closes it)" if asked.expires_at <= now else ""
        return Stuck(task, f"a human's approval {asked.approval_id} of {tool}{overdue}", asked.requested_at, expires_at=asked.expires_at)
    since = task.waiting_since or task.updated_at
    if task.waits == "decision":
        after = " after a human's grant" if task.approval_id else ""
        if decided is not None and (now - decided.at).total_seconds() >= DECISION_UNTAKEN_S:
            return Stuck(
                task,
                f"the planner to take the policy's {decided.outcome} decision on {tool}{after}, published at "
                f"{decided.at:%Y-%m-%d %H:%M:%S} UTC and not applied: the planner refused it? `tidegate audit search --dead-letters`",
                since,
            )
        return Stuck(task, f"policy's decision on {tool}{after}", since)
    if task.waits == "result":
        if call is None:
            return Stuck(task, f"the executor to take the call of {tool} (authorized, not claimed)", since)
        if call.status == "waiting":
            return Stuck(task, f"a retry of {tool} (attempt {call.attempts} failed)", since, retry_at=call.retry_at)
        if call.status in ("claimed", "running"):
            return Stuck(task, f"the call of {tool} in progress (attempt {max(call.attempts, 1)})", call.started_at or since)
        return Stuck(task, f"the planner to apply the {call.status} result of {tool}", call.updated_at)
    return Stuck(task, "the planner's next step", task.updated_at)


def describe_outside(action: OutsideAction, now: datetime) -> Stuck:
    """What an outside agent's open action waits on, in the words `describe` uses for a planner task's step."""
    tool = action.tool
    if action.status == "approval pending" or action.status == "follow-up pending":
        what = "approval" if action.status == "approval pending" else "follow-up (its outcome is unknown)"
        overdue = " (past its expiry: the approval service closes it)" if action.expires_at and action.expires_at <= now else ""
        return Stuck(action, f"a human's {what} {action.approval_id} of {tool}{overdue}", action.since, expires_at=action.expires_at)
    if action.status == "granted":
        return Stuck(action, f"policy's decision on {tool} after a human's grant ({action.approval_id})", action.since)
    if action.status == "authorized":
        return Stuck(action, f"the executor to take the call of {tool} (authorized, not claimed)", action.since)
    if action.status == "waiting":
        return Stuck(action, f"a retry of {tool} (attempt {action.attempts} failed)", action.since, retry_at=action.retry_at)
    return Stuck(action, f"the call of {tool} in progress (attempt {max(action.attempts, 1)})", action.since)


def _asked(rows: Sequence[Any]) -> Asked | None:
    for row in reversed(rows):  # the newest request of the action
        try:
            event = read_event(None, row.value) if row.valid and row.value is not None else None
        except Unreadable:
            continue
        if event is not None and event.type == "tidegate.approval.requested":
            return Asked(event.data.approval_id, row.kafka_ts, event.data.expires_at)
    return None


def _decided(rows: Sequence[Any], since: datetime) -> Decided | None:
    """The newest decision among the audit rows of one action appended since the step began waiting, if any.

    A row the audit could not read counts too (an older audit beside a later release's policy stores its decision
    invalid, as the planner refuses it): its outcome is read from its JSON when it has one.
    """
    for row in reversed(rows):
        if row.kafka_ts < since or row.event_type != "tidegate.action.decided":
            continue
        return Decided(_outcome(row), row.kafka_ts)
    return None


def _outcome(row: Any) -> str:
    try:
        event = read_event(None, row.value) if row.valid and row.value is not None else None
    except Unreadable:
        event = None
    if event is not None:
        return str(event.data.outcome)
    try:
        outcome = json.loads(row.value or b"")["data"]["outcome"]
    except (ValueError, TypeError, KeyError):
        return "unreadable"
    return outcome if outcome in ("allow", "deny", "escalate") else "unreadable"


async def read_open(kit: KitSettings, now: datetime, *, tenant: str | None = None, limit: int = 500) -> list[Stuck]:
    """Open tasks (oldest first), then outside agents' open actions (longest waiting first), each with what it waits on."""
    from services.audit import PostgresAuditLog, SearchFilters
    from services.executor import calls_of
    from services.planner import open_tasks

    conn = await connect(kit.operator_database_url)
    try:
        tasks = await open_tasks(conn, kit.topic_prefix, tenant=tenant, limit=limit)
        calls = await calls_of(conn, [t.action_id for t in tasks if t.waits == "result" and t.action_id])
        outside = await read_outside(conn, kit.topic_prefix, tenant=tenant, limit=limit)
    finally:
        await conn.close()
    asked: dict[str, Asked | None] = {}
    decided: dict[str, Decided | None] = {}
    humans = [t for t in tasks if t.waits == "human" and t.action_id]
    deciding = [t for t in tasks if t.waits == "decision" and t.action_id]
    if humans or deciding:
        log = await PostgresAuditLog.connect(kit.operator_database_url, max_size=1)
        try:
            for t in humans:
                assert t.action_id is not None
                found = SearchFilters(action_id=t.action_id, event_type="tidegate.approval.requested", topic_prefix=kit.topic_prefix)
                asked[t.action_id] = _asked(await log.search(found, limit=20))
            for t in deciding:
                assert t.action_id is not None
                since = t.waiting_since or t.updated_at
                found = SearchFilters(
                    action_id=t.action_id, event_type="tidegate.action.decided", since=since, topic_prefix=kit.topic_prefix
                )
                decided[t.action_id] = _decided(await log.search(found, limit=20), since)
        finally:
            await log.close()
    planned = [describe(t, calls.get(t.action_id or ""), asked.get(t.action_id or ""), now, decided.get(t.action_id or "")) for t in tasks]
    return planned + [describe_outside(a, now) for a in outside]


async def read_handoffs(kit: KitSettings, since: datetime, *, tenant: str | None = None, limit: int = 500) -> list[Any]:
    """Tasks closed `completed_with_handoff` since `since` (`services.planner.ClosedTask`), newest first."""
    from services.planner import handed_off_tasks

    conn = await connect(kit.operator_database_url)
    try:
        return await handed_off_tasks(conn, kit.topic_prefix, since, tenant=tenant, limit=limit)
    finally:
        await conn.close()
