"""What undoing a succeeded call needs, kept in the executor's own schema (`executor.undo_plans`), and an in-memory twin.

The executor reads the prior state a catalog `undo.before` asks for right before the first attempt and
keeps it, so that an attempt after a crash still restores what was there first; when the call
succeeds it computes the plan (`servicekit.undo.plan_undo`), keeps it and puts it in the result.
Given the action's claim (`held`), the statements run on the connection that holds it: an action
takes one connection from the pool, whatever its undo needs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Protocol

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from schemas import UndoPlan
from servicekit import UNFLUSHED
from services.executor.claims import ClaimSession

__all__ = ["InMemoryUndoStore", "PgUndoStore", "UndoKey", "UndoStore"]


@dataclass(frozen=True)
class UndoKey:
    """The call an undo record belongs to."""

    action_id: str
    tenant_id: str
    task_id: str
    tool: str


class UndoStore(Protocol):
    """Prior states and undo plans by action id."""

    async def prior_state(self, action_id: str, *, held: ClaimSession | None = None) -> dict[str, Any] | None:
        """The state kept before the call, if any (`held`: the action's claim, whose connection reads it)."""
        ...

    async def keep_prior_state(self, key: UndoKey, before: dict[str, Any], *, held: ClaimSession | None = None) -> dict[str, Any]:
        """Keep `before` unless a state is kept already; return the one kept (the first read wins).

        Durable once the claim's next write is (`running`, before the call): the caller makes one.
        """
        ...

    async def keep_plan(self, key: UndoKey, plan: UndoPlan, *, held: ClaimSession | None = None) -> None:
        """Keep the plan computed when the call succeeded.

        Durable once the claim's next write is (`finish`, before the result is published): the caller makes one.
        """
        ...

    async def plan(self, action_id: str) -> UndoPlan | None:
        """The plan kept for the call, if any."""
        ...


@dataclass
class InMemoryUndoStore(UndoStore):
    """The in-memory twin of PgUndoStore, for tests and in-process tooling."""

    befores: dict[str, dict[str, Any]] = field(default_factory=dict)
    plans: dict[str, UndoPlan] = field(default_factory=dict)

    async def prior_state(self, action_id: str, *, held: ClaimSession | None = None) -> dict[str, Any] | None:
        """See UndoStore."""
        return self.befores.get(action_id)

    async def keep_prior_state(self, key: UndoKey, before: dict[str, Any], *, held: ClaimSession | None = None) -> dict[str, Any]:
        """See UndoStore."""
        return self.befores.setdefault(key.action_id, before)

    async def keep_plan(self, key: UndoKey, plan: UndoPlan, *, held: ClaimSession | None = None) -> None:
        """See UndoStore."""
        self.plans[key.action_id] = plan

    async def plan(self, action_id: str) -> UndoPlan | None:
        """See UndoStore."""
        return self.plans.get(action_id)


class PgUndoStore(UndoStore):
    """Undo records in `executor.undo_plans`."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    def _on(self, held: ClaimSession | None) -> asyncpg.Pool | asyncpg.Connection | PoolConnectionProxy:
        """The claim's connection when there is one, else the pool."""
        conn = held.connection if held is not None else None
        return self._pool if conn is None else conn

    async def prior_state(self, action_id: str, *, held: ClaimSession | None = None) -> dict[str, Any] | None:
        """See UndoStore."""
        text = await self._on(held).fetchval("SELECT before::text FROM executor.undo_plans WHERE action_id = $1", action_id)
        return None if text is None else dict(json.loads(text))

    async def keep_prior_state(self, key: UndoKey, before: dict[str, Any], *, held: ClaimSession | None = None) -> dict[str, Any]:
        """See UndoStore."""
        text = await self._on(held).fetchval(
            "INSERT INTO executor.undo_plans (action_id, tenant_id, task_id, tool, before)"
            f" SELECT $1, $2, $3, $4, $5::jsonb FROM {UNFLUSHED}"  # the claim's `running`, flushed, follows before the call
            " ON CONFLICT (action_id) DO UPDATE SET before = coalesce(executor.undo_plans.before, EXCLUDED.before)"
            " RETURNING before::text",
            key.action_id,
            key.tenant_id,
            key.task_id,
            key.tool,
            json.dumps(before),
        )
        return dict(json.loads(text))

    async def keep_plan(self, key: UndoKey, plan: UndoPlan, *, held: ClaimSession | None = None) -> None:
        """See UndoStore."""
        await self._on(held).execute(
            "INSERT INTO executor.undo_plans (action_id, tenant_id, task_id, tool, plan, planned_at)"
            f" SELECT $1, $2, $3, $4, $5::jsonb, now() FROM {UNFLUSHED}"  # the claim's `finish`, flushed, follows
            " ON CONFLICT (action_id) DO UPDATE SET plan = EXCLUDED.plan, planned_at = now()",
            key.action_id,
            key.tenant_id,
            key.task_id,
            key.tool,
            plan.model_dump_json(exclude_none=True),
        )

    async def plan(self, action_id: str) -> UndoPlan | None:
        """See UndoStore."""
        text = await self._pool.fetchval("SELECT plan::text FROM executor.undo_plans WHERE action_id = $1", action_id)
        return None if text is None else UndoPlan.model_validate_json(text)
