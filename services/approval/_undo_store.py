"""The succeeded calls an approver may undo: their results (with the executor's undo plan), by action id and by their undo's id."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import asyncpg

from schemas import ActionResultData
from servicekit.undo import undo_action_id

__all__ = ["InMemoryUndoResults", "PgUndoResults", "UndoResults"]


class UndoResults(Protocol):
    """Results that carry an undo plan."""

    async def keep(self, results: Sequence[ActionResultData]) -> None:
        """Remember succeeded calls' results, all in one write (idempotent per action id)."""
        ...

    async def get(self, action_id: str) -> ActionResultData | None:
        """The result of `action_id`, if it was kept."""
        ...

    async def original_of(self, undo_id: str, tenant_id: str) -> str | None:
        """The kept action of `tenant_id` whose undo has the id `undo_id` (`undo_action_id`): what `undo_id` undoes, if it is an undo."""
        ...


@dataclass
class InMemoryUndoResults(UndoResults):
    """The in-memory twin, for unit tests."""

    results: dict[str, ActionResultData] = field(default_factory=dict)

    async def keep(self, results: Sequence[ActionResultData]) -> None:
        """See UndoResults."""
        for result in results:
            self.results.setdefault(result.action_id, result)

    async def get(self, action_id: str) -> ActionResultData | None:
        """See UndoResults."""
        return self.results.get(action_id)

    async def original_of(self, undo_id: str, tenant_id: str) -> str | None:
        """See UndoResults."""
        kept = (r.action_id for r in self.results.values() if r.tenant_id == tenant_id)
        return next((action_id for action_id in kept if undo_action_id(action_id) == undo_id), None)


class PgUndoResults(UndoResults):
    """Results in `approval.undo_results`."""

    def __init__(self, pool: asyncpg.Pool, schema: str = "approval") -> None:
        self._pool = pool
        self._s = schema

    async def keep(self, results: Sequence[ActionResultData]) -> None:
        """See UndoResults: one round trip for a polled batch's results."""
        if not results:
            return
        await self._pool.executemany(
            f"INSERT INTO {self._s}.undo_results (action_id, tenant_id, task_id, result, undo_id) VALUES ($1, $2, $3, $4::jsonb, $5)"
            " ON CONFLICT (action_id) DO NOTHING",
            [(r.action_id, r.tenant_id, r.task_id, r.model_dump_json(), undo_action_id(r.action_id)) for r in results],
        )

    async def get(self, action_id: str) -> ActionResultData | None:
        """See UndoResults."""
        text = await self._pool.fetchval(f"SELECT result::text FROM {self._s}.undo_results WHERE action_id = $1", action_id)
        return None if text is None else ActionResultData.model_validate_json(text)

    async def original_of(self, undo_id: str, tenant_id: str) -> str | None:
        """See UndoResults."""
        found = await self._pool.fetchval(
            f"SELECT action_id FROM {self._s}.undo_results WHERE undo_id = $1 AND tenant_id = $2", undo_id, tenant_id
        )
        return None if found is None else str(found)
