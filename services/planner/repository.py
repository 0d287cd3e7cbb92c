"""Where task state lives: a Protocol, its asyncpg implementation (schema `planner`) and an in-memory twin.

`apply` is the one unit of work: in one transaction it skips an event already applied, locks the
task, runs the pure transition, saves state and steps, and stores the events to publish in an
outbox. The caller publishes them and then calls `published`; an event redelivered before that
hands back the same stored events, so a crash re-publishes identical events and never new ones.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import asyncpg

from schemas import decode, encode
from services.planner.domain import CostRates, Outbound, StepRecord, TaskState, Transition

__all__ = ["Change", "InMemoryTaskRepository", "PendingEvent", "PostgresTaskRepository", "TaskRepository"]

Change = Callable[[TaskState | None], Transition | None]
"""Given the task's state (None when unknown), the transition to apply, or None to leave it alone."""


@dataclass(frozen=True)
class PendingEvent:
    """An outbox entry: publish it, then mark it published."""

    outbox_id: int
    topic: str
    event: Any


class TaskRepository(Protocol):
    """Task state with exactly-once application of events."""

    async def apply(self, event_id: str, task_id: str, change: Change) -> list[PendingEvent]:
        """Apply `change` once per `event_id`; return what must be published."""
        ...

    async def published(self, outbox_ids: list[int]) -> None:
        """Forget outbox entries that reached the broker."""
        ...

    async def get(self, task_id: str) -> TaskState | None:
        """The task's state, if the planner runs it."""
        ...

    async def waiting_since_before(self, cutoff: datetime, *, limit: int = 1000) -> list[str]:
        """Open tasks whose current step has waited for a machine's answer since before `cutoff` (oldest first)."""
        ...

    async def unpublished(self, source_prefix: str) -> list[PendingEvent]:
        """Outbox entries of events whose ids start with `source_prefix` (no redelivery will hand them back)."""
        ...


def _state_json(state: TaskState) -> str:
    return state.model_dump_json()


@dataclass
class PostgresTaskRepository(TaskRepository):
    """`TaskRepository` on the planner's own schema."""

    pool: asyncpg.Pool
    rates: CostRates
    prefix: str = ""  # the deployment's topic prefix, kept on each task it runs

    async def apply(self, event_id: str, task_id: str, change: Change) -> list[PendingEvent]:
        """One transaction of few round trips: lock the task and learn whether the event was applied, then one write."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT state, EXISTS (SELECT 1 FROM planner.processed_events WHERE event_id = $2) AS seen "
                "FROM planner.tasks WHERE task_id = $1 FOR UPDATE",
                task_id,
                event_id,
            )
            if row is None:
                transition = change(None)
                if transition is None:
                    return []  # not our task (an outside agent's): remember nothing about it
                # A new task has no row to lock: the event id's primary key serialises two deliveries.
                fresh = await conn.fetchval(
                    "INSERT INTO planner.processed_events (event_id, task_id) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING 1",
                    event_id,
                    task_id,
                )
                if fresh is None:
                    return await self._pending(conn, event_id)
                return await self._write(conn, event_id, None, transition, record_event=False)
            if row["seen"]:
                return await self._pending(conn, event_id)
            state = TaskState.model_validate_json(row["state"])
            transition = change(state)
            if transition is None or not transition.changed:
                return []
            return await self._write(conn, event_id, state, transition, record_event=True)

    async def _pending(self, conn: Any, event_id: str) -> list[PendingEvent]:
        rows = await conn.fetch("SELECT id, topic, payload FROM planner.outbox WHERE source_event_id = $1 ORDER BY id", event_id)
        return [PendingEvent(r["id"], r["topic"], decode(r["topic"], r["payload"])) for r in rows]

    async def _write(
        self, conn: Any, event_id: str, old: TaskState | None, transition: Transition, *, record_event: bool
    ) -> list[PendingEvent]:
        """Save the task, its changed steps, the applied event and the outbox in one statement."""
        new = transition.state
        before = {s.step: s for s in old.steps} if old else {}
        steps = [_step_doc(s) for s in new.steps if before.get(s.step) != s]
        outbound = [{"topic": o.topic, "payload": encode(o.event).decode()} for o in transition.outbound]
        processed = (
            "p AS (INSERT INTO planner.processed_events (event_id, task_id) VALUES ($12, $1) RETURNING 1),"
            if record_event
            else "p AS (SELECT 1),"
        )
        # Data-modifying CTEs all run, once, in one statement (PostgreSQL checks the steps' foreign key at its end).
        ids = await conn.fetchval(
            f"""WITH {processed}
               t AS (INSERT INTO planner.tasks
                       (task_id, tenant_id, workflow, strategy, status, counts, cost, human_touches, reason, summary, state,
                        topic_prefix)
                     VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb, $8, $9, $10, $11::jsonb, $15)
                     ON CONFLICT (task_id) DO UPDATE SET status = EXCLUDED.status, counts = EXCLUDED.counts, cost = EXCLUDED.cost,
                       human_touches = EXCLUDED.human_touches, reason = EXCLUDED.reason, summary = EXCLUDED.summary,
                       state = EXCLUDED.state, updated_at = now()
                     RETURNING 1),
               s AS (INSERT INTO planner.steps
                       (task_id, step, action_id, tool, args, tainted_args, status, decision, reasons, approval_id, attempts, cost_usd)
                     SELECT $1, x.step, x.action_id, x.tool, x.args, x.tainted_args, x.status, x.decision, x.reasons, x.approval_id,
                            x.attempts, x.cost_usd
                     FROM jsonb_to_recordset($13::jsonb) AS x(step int, action_id text, tool text, args jsonb, tainted_args jsonb,
                            status text, decision text, reasons jsonb, approval_id text, attempts int, cost_usd float8)
                     ON CONFLICT (task_id, step) DO UPDATE SET status = EXCLUDED.status, decision = EXCLUDED.decision,
                       reasons = EXCLUDED.reasons, approval_id = EXCLUDED.approval_id, attempts = EXCLUDED.attempts,
                       cost_usd = EXCLUDED.cost_usd, updated_at = now()
                     RETURNING 1),
               o AS (INSERT INTO planner.outbox (source_event_id, task_id, topic, payload)
                     SELECT $12, $1, x.topic, x.payload
                     FROM ROWS FROM (jsonb_to_recordset($14::jsonb) AS (topic text, payload text)) WITH ORDINALITY AS x(topic, payload, n)
                     ORDER BY x.n
                     RETURNING id)
               SELECT coalesce((SELECT array_agg(id ORDER BY id) FROM o), '{{}}'::bigint[])
                 FROM (SELECT count(*) FROM p) AS _p, (SELECT count(*) FROM t) AS _t, (SELECT count(*) FROM s) AS _s""",
            new.task_id,
            new.tenant_id,
            new.workflow,
            new.strategy,
            new.status,
            new.counts.model_dump_json(),
            new.cost(self.rates).model_dump_json(),
            new.human_touches,
            new.reason,
            new.summary,
            _state_json(new),
            event_id,
            json.dumps(steps),
            json.dumps(outbound),
            self.prefix,
        )
        return [PendingEvent(i, o.topic, o.event) for i, o in zip(ids, transition.outbound, strict=True)]

    async def published(self, outbox_ids: list[int]) -> None:
        """Delete delivered outbox entries."""
        if outbox_ids:
            await self.pool.execute("DELETE FROM planner.outbox WHERE id = ANY($1::bigint[])", outbox_ids)

    async def get(self, task_id: str) -> TaskState | None:
        """Load one task."""
        raw = await self.pool.fetchval("SELECT state FROM planner.tasks WHERE task_id = $1", task_id)
        return TaskState.model_validate_json(raw) if raw else None

    async def waiting_since_before(self, cutoff: datetime, *, limit: int = 1000) -> list[str]:
        """See `TaskRepository`: this deployment's open tasks only (the partial index `tasks_open` keeps this small)."""
        rows = await self.pool.fetch(
            "SELECT task_id, (state->'steps'->-1->>'waiting_since')::timestamptz AS since FROM planner.tasks "
            "WHERE status IN ('running', 'waiting_human') AND topic_prefix = $3 "
            "AND (state->'steps'->-1->>'waiting_since')::timestamptz < $1 ORDER BY since LIMIT $2",
            cutoff,
            limit,
            self.prefix,
        )
        return [r["task_id"] for r in rows]

    async def unpublished(self, source_prefix: str) -> list[PendingEvent]:
        """See `TaskRepository`."""
        rows = await self.pool.fetch(
            "SELECT id, topic, payload FROM planner.outbox WHERE starts_with(source_event_id, $1) ORDER BY id", source_prefix
        )
        return [PendingEvent(r["id"], r["topic"], decode(r["topic"], r["payload"])) for r in rows]


def _step_doc(s: StepRecord) -> dict[str, Any]:
    return {
        "step": s.step,
        "action_id": s.action_id,
        "tool": s.tool,
        "args": s.args,
        "tainted_args": s.tainted_args,
        "status": s.status,
        "decision": s.decision,
        "reasons": s.reasons,
        "approval_id": s.approval_id,
        "attempts": s.attempts,
        "cost_usd": s.cost_usd,
    }


@dataclass
class InMemoryTaskRepository(TaskRepository):
    """The in-memory twin, for unit tests."""

    tasks: dict[str, TaskState] = field(default_factory=dict)
    processed: set[str] = field(default_factory=set)
    outbox: dict[int, tuple[str, Outbound]] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _next: int = 0

    async def apply(self, event_id: str, task_id: str, change: Change) -> list[PendingEvent]:
        """Same contract as the PostgreSQL implementation."""
        async with self._lock:
            if event_id in self.processed:
                return [PendingEvent(i, o.topic, o.event) for i, (src, o) in sorted(self.outbox.items()) if src == event_id]
            state = self.tasks.get(task_id)
            transition = change(state)
            if transition is None or not transition.changed:
                if state is not None:
                    self.processed.add(event_id)
                return []
            self.processed.add(event_id)
            self.tasks[task_id] = transition.state
            pending = []
            for out in transition.outbound:
                self._next += 1
                self.outbox[self._next] = (event_id, out)
                pending.append(PendingEvent(self._next, out.topic, out.event))
            return pending

    async def published(self, outbox_ids: list[int]) -> None:
        """Forget delivered entries."""
        for i in outbox_ids:
            self.outbox.pop(i, None)

    async def get(self, task_id: str) -> TaskState | None:
        """Load one task."""
        return self.tasks.get(task_id)

    async def waiting_since_before(self, cutoff: datetime, *, limit: int = 1000) -> list[str]:
        """See `TaskRepository`."""
        found = [
            (t.current.waiting_since, t.task_id)
            for t in self.tasks.values()
            if t.status in ("running", "waiting_human") and t.current is not None and t.current.waiting_since is not None
        ]
        return [task_id for since, task_id in sorted(found) if since < cutoff][:limit]

    async def unpublished(self, source_prefix: str) -> list[PendingEvent]:
        """See `TaskRepository`."""
        return [PendingEvent(i, o.topic, o.event) for i, (src, o) in sorted(self.outbox.items()) if src.startswith(source_prefix)]
