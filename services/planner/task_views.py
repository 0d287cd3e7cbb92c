"""Read-only views of the planner's tasks for people: what each open task waits on, and which closed tasks were handed off.

`tidegate tasks` reads these as the operator (a read-only query of the `planner` schema, as `budget list` reads the
policy's); the service itself never calls them. What a task waits on is a pure function of its state (`waiting_on`),
so it is tested without a database.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from services.planner.task_state import TaskState

log = logging.getLogger(__name__)

__all__ = ["ClosedTask", "OpenTask", "Waits", "handed_off_tasks", "open_tasks", "waiting_on"]

Waits = Literal["human", "decision", "result", "nothing"]
"""What an open task waits on: a human's approval, policy's decision (first or after a grant), the executor's result."""

_REFUSED = ("denied", "rejected", "expired")


class OpenTask(BaseModel):
    """An open task (running or waiting for a human) and the step it waits on."""

    model_config = ConfigDict(frozen=True)

    task_id: str
    tenant_id: str
    workflow: str
    status: str
    waits: Waits
    step: int | None = None
    tool: str | None = None
    action_id: str | None = None
    approval_id: str | None = None
    waiting_since: datetime | None = None  # a machine's wait: since the step was proposed, allowed or granted
    started_at: datetime
    updated_at: datetime


class ClosedTask(BaseModel):
    """A task that closed `completed` with a refused action: the steps refused, and the note that handed it to a human."""

    model_config = ConfigDict(frozen=True)

    task_id: str
    tenant_id: str
    workflow: str
    ended_at: datetime | None
    refused: list[str]  # "<tool> <denied|rejected|expired> (<reason codes>)", in step order
    summary: str | None


def waiting_on(state: TaskState) -> tuple[Waits, Any]:
    """What the open task waits on, and the step that waits (None when it has none)."""
    step = state.current
    if step is None:
        return "nothing", None
    if step.status == "escalated":
        return ("human", step) if step.waiting_since is None else ("decision", step)  # granted: policy re-decides
    if step.status == "proposed":
        return "decision", step
    if step.status == "allowed":
        return "result", step
    return "nothing", step  # between two events: the next step is about to be proposed


def _open(state: TaskState, updated_at: datetime) -> OpenTask:
    waits, step = waiting_on(state)
    return OpenTask(
        task_id=state.task_id,
        tenant_id=state.tenant_id,
        workflow=state.workflow,
        status=state.status,
        waits=waits,
        step=step.step if step else None,
        tool=step.tool if step else None,
        action_id=step.action_id if step else None,
        approval_id=step.approval_id if step else None,
        waiting_since=step.waiting_since if step else None,
        started_at=state.started_at,
        updated_at=updated_at,
    )


# One of a closed task's counts; not a number (only the planner's database login writes one): 0, not the whole query failed.
_COUNT = "(CASE WHEN jsonb_typeof(counts->'{0}') = 'number' THEN (counts->>'{0}')::numeric ELSE 0 END)"


def _states(rows: Sequence[Any]) -> list[tuple[TaskState, Any]]:
    """Each row's task state with its row; a state of the wrong shape is left out with a WARNING naming it.

    One such state (`"steps": "many"`: only the planner's database login writes one) failed `tidegate tasks` whole: the
    on-call saw no stuck task at all. The planner refuses it itself (its proof fails: `state_seal`).
    """
    states = []
    for row in rows:
        try:
            states.append((TaskState.model_validate_json(row["state"]), row))
        except ValidationError as exc:
            first = exc.errors()[0]
            log.warning(
                "task %s of %s left out: its state is not one the planner reads (%s: %s [%s]); the planner's database login may "
                "have written it (docs/security/database.md)",
                row["task_id"],
                row["tenant_id"],
                ".".join(str(p) for p in first["loc"]),
                first["msg"],
                first["type"],
            )
    return states


async def open_tasks(conn: Any, prefix: str, *, tenant: str | None = None, limit: int = 500) -> list[OpenTask]:
    """The deployment's open tasks (oldest first), each with what it waits on; `conn` is an asyncpg connection or pool."""
    rows = await conn.fetch(
        "SELECT tenant_id, task_id, state, updated_at FROM planner.tasks "
        "WHERE status IN ('running', 'waiting_human') AND topic_prefix = $1 "
        "AND ($2::text IS NULL OR tenant_id = $2) ORDER BY created_at LIMIT $3",
        prefix,
        tenant,
        limit,
    )  # the partial index `tasks_open` holds exactly these rows
    return [_open(state, r["updated_at"]) for state, r in _states(rows)]


def _closed(state: TaskState) -> ClosedTask:
    refused = [f"{s.tool} {s.status}" + (f" ({', '.join(s.reasons)})" if s.reasons else "") for s in state.steps if s.status in _REFUSED]
    return ClosedTask(
        task_id=state.task_id,
        tenant_id=state.tenant_id,
        workflow=state.workflow,
        ended_at=state.ended_at,
        refused=refused,
        summary=state.summary,
    )


async def handed_off_tasks(conn: Any, prefix: str, since: datetime, *, tenant: str | None = None, limit: int = 500) -> list[ClosedTask]:
    """Tasks closed `completed` since `since` with a refused action (`servicekit.task_outcomes`), newest first.

    Reads the closed tasks of the window (no index serves it: a scan of `planner.tasks`, for a person, not a loop).
    """
    rows = await conn.fetch(
        "SELECT tenant_id, task_id, state FROM planner.tasks WHERE status = 'completed' AND topic_prefix = $1 AND updated_at >= $2 "
        "AND ($3::text IS NULL OR tenant_id = $3) "
        f"AND {_COUNT.format('denied')} + {_COUNT.format('rejected')} + {_COUNT.format('expired')} > 0 ORDER BY updated_at DESC LIMIT $4",
        prefix,
        since,
        tenant,
        limit,
    )
    return [_closed(state) for state, _ in _states(rows)]
