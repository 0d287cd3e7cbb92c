"""The decisions and results of tasks the approval service saw: the context an approver reads beside a request.

Part of the approval service's repository (`services.approval.repository` composes it): a Protocol,
the asyncpg part and the in-memory twin's part. A result is kept with its fields (`TaskEvent.result`), so what is
read of it (a refusal, a call's failure) is the schemas' rule applied to them, not a parse of its summary.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import asyncpg

from schemas import ActionResultData
from servicekit.db import delete_in_batches
from servicekit.row_proofs import row_refused
from services.approval._legacy_results import legacy_result

__all__ = [
    "RESULT_TYPES",
    "InMemoryTaskEventStore",
    "PgTaskEventStore",
    "TaskEvent",
    "TaskEventStore",
    "forget_task_events",
]

RESULT_TYPES = frozenset({"tidegate.action.succeeded", "tidegate.action.failed", "tidegate.action.unknown"})


@dataclass(frozen=True)
class TaskEvent:
    """A decision or result of a task, as the service saw it."""

    event_id: str
    tenant_id: str
    task_id: str
    action_id: str
    type: str
    tool: str
    at: datetime
    outcome: str | None = None
    cost_usd: float = 0.0
    requested_by: str | None = None
    risk: str | None = None
    args: dict[str, Any] | None = None
    summary: str = ""
    # A result's event: the result, without what the call returned nor its undo plan (None for a decision, and for a
    # result kept before migration 012 whose summary does not read as one).
    result: ActionResultData | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form for the API."""
        return {
            "event_id": self.event_id,
            "type": self.type,
            "action_id": self.action_id,
            "tool": self.tool,
            "outcome": self.outcome,
            "cost_usd": self.cost_usd,
            "summary": self.summary,
            "at": self.at.isoformat(),
        }


class TaskEventStore(Protocol):
    """The task events seen."""

    async def record_task_events(self, events: Sequence[TaskEvent]) -> None:
        """Keep decisions and results, all in one write (idempotent by event id)."""
        ...

    async def task_events(self, tenant_id: str, task_id: str) -> list[TaskEvent]:
        """What the service saw of a task, oldest first."""
        ...

    async def action_event(self, action_id: str, type_: str) -> TaskEvent | None:
        """The latest event of a type for an action."""
        ...

    async def action_events(self, action_ids: Sequence[str]) -> list[TaskEvent]:
        """Every event kept of these actions, oldest first."""
        ...

    async def forget_task_events_before(self, cutoff: datetime, *, limit: int = 10_000) -> int:
        """Forget up to `limit` events that happened before `cutoff`; how many were forgotten."""
        ...


async def forget_task_events(store: TaskEventStore, cutoff: datetime, *, batch: int = 10_000) -> int:
    """Forget every task event that happened before `cutoff`, `batch` at a time (no statement holds the table long); how many."""
    return await delete_in_batches(lambda limit: store.forget_task_events_before(cutoff, limit=limit), batch)


def _result(row: asyncpg.Record) -> ActionResultData | None:
    """The result a row keeps; for a result kept before migration 012 (no `result`), what its summary says (`_legacy_results`)."""
    if row["result"] is not None:
        return ActionResultData.model_validate_json(row["result"])
    if row["type"] not in RESULT_TYPES:
        return None
    return legacy_result(row["action_id"], row["task_id"], row["tenant_id"], row["tool"], row["cost_usd"], row["summary"])


def _task_event(row: asyncpg.Record) -> TaskEvent:
    return TaskEvent(
        event_id=row["event_id"],
        tenant_id=row["tenant_id"],
        task_id=row["task_id"],
        action_id=row["action_id"],
        type=row["type"],
        tool=row["tool"],
        at=row["at"],
        outcome=row["outcome"],
        cost_usd=row["cost_usd"],
        requested_by=row["requested_by"],
        risk=row["risk"],
        args=json.loads(row["args"]) if row["args"] else None,
        summary=row["summary"],
        result=_result(row),
    )


def _task_events(rows: Sequence[asyncpg.Record]) -> list[TaskEvent]:
    """The events of `rows`, each row of the wrong shape (a `result` that is no result: only the login writes one) refused.

    Refused: left out, a WARNING naming it and `tidegate_rows_refused_total{service="approval",table="task_events"}`; one
    such row made every request of its task answer 500 when shown.
    """
    events = []
    for row in rows:
        try:
            events.append(_task_event(row))
        except ValueError as exc:  # pydantic's ValidationError, or args that are not JSON
            what = f"task event {row['event_id']} ({row['type']} of action {row['action_id']}, tenant {row['tenant_id']})"
            why = f"its row is not an event this release reads ({type(exc).__name__}: {str(exc).splitlines()[0]})"
            fix = "it is left out of what a request shows; the approval service's database login may have been used to write it"
            row_refused("approval", "task_events", what, why, fix, counted_as="invalid")
    return events


class PgTaskEventStore(TaskEventStore):
    """The PostgreSQL part (table `task_events`); the repository sets `pool` and `s`."""

    pool: asyncpg.Pool
    s: str

    async def record_task_events(self, events: Sequence[TaskEvent]) -> None:
        """Keep decisions and results in one round trip (a polled batch's; idempotent by event id)."""
        if not events:
            return
        await self.pool.executemany(
            f"INSERT INTO {self.s}.task_events (event_id, tenant_id, task_id, action_id, type, tool, outcome, cost_usd, "
            "requested_by, risk, args, summary, at, result) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) ON CONFLICT DO NOTHING",
            [
                (
                    e.event_id,
                    e.tenant_id,
                    e.task_id,
                    e.action_id,
                    e.type,
                    e.tool,
                    e.outcome,
                    e.cost_usd,
                    e.requested_by,
                    e.risk,
                    json.dumps(e.args) if e.args is not None else None,
                    e.summary,
                    e.at,
                    e.result.model_dump_json() if e.result is not None else None,
                )
                for e in events
            ],
        )

    async def task_events(self, tenant_id: str, task_id: str) -> list[TaskEvent]:
        """What the service saw of a task, oldest first."""
        rows = await self.pool.fetch(
            f"SELECT * FROM {self.s}.task_events WHERE tenant_id = $1 AND task_id = $2 ORDER BY at, event_id", tenant_id, task_id
        )
        return _task_events(rows)

    async def action_event(self, action_id: str, type_: str) -> TaskEvent | None:
        """The latest event of a type for an action."""
        row = await self.pool.fetchrow(
            f"SELECT * FROM {self.s}.task_events WHERE action_id = $1 AND type = $2 ORDER BY at DESC LIMIT 1", action_id, type_
        )
        return next(iter(_task_events([row])), None) if row else None

    async def action_events(self, action_ids: Sequence[str]) -> list[TaskEvent]:
        """Every event kept of these actions, oldest first."""
        rows = await self.pool.fetch(
            f"SELECT * FROM {self.s}.task_events WHERE action_id = ANY($1::text[]) ORDER BY at, event_id", list(action_ids)
        )
        return _task_events(rows)

    async def forget_task_events_before(self, cutoff: datetime, *, limit: int = 10_000) -> int:
        """See `TaskEventStore`: found by the BRIN index on `at` (migration 005), deleted by their rows' addresses."""
        status = await self.pool.execute(
            f"DELETE FROM {self.s}.task_events WHERE ctid = ANY(ARRAY(SELECT ctid FROM {self.s}.task_events WHERE at < $1 LIMIT $2))",
            cutoff,
            limit,
        )
        return int(status.rsplit(" ", 1)[-1])


@dataclass
class InMemoryTaskEventStore(TaskEventStore):
    """The in-memory twin's part."""

    events: dict[str, TaskEvent] = field(default_factory=dict)

    async def record_task_events(self, events: Sequence[TaskEvent]) -> None:
        """Keep decisions and results."""
        for event in events:
            self.events.setdefault(event.event_id, event)

    async def task_events(self, tenant_id: str, task_id: str) -> list[TaskEvent]:
        """What the service saw of a task."""
        return sorted((e for e in self.events.values() if e.tenant_id == tenant_id and e.task_id == task_id), key=lambda e: e.at)

    async def action_event(self, action_id: str, type_: str) -> TaskEvent | None:
        """The latest event of a type for an action."""
        found = [e for e in self.events.values() if e.action_id == action_id and e.type == type_]
        return max(found, key=lambda e: e.at) if found else None

    async def action_events(self, action_ids: Sequence[str]) -> list[TaskEvent]:
        """Every event kept of these actions, oldest first."""
        return sorted((e for e in self.events.values() if e.action_id in action_ids), key=lambda e: (e.at, e.event_id))

    async def forget_task_events_before(self, cutoff: datetime, *, limit: int = 10_000) -> int:
        """See `TaskEventStore`."""
        old = [event_id for event_id, e in self.events.items() if e.at < cutoff][:limit]
        for event_id in old:
            del self.events[event_id]
        return len(old)
