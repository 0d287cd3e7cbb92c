"""The succeeded calls an approver may undo: their results and the executor's signed result events, by action id and by their undo's id.

The event is kept as received (envelope and signature): the undo API proposes a plan only from it, once it verifies
(`_undo_proofs`). The result beside it is the row's own copy, which the service's database login can rewrite.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import asyncpg

from schemas import ActionResultData
from servicekit.undo import undo_action_id

__all__ = ["InMemoryUndoResults", "KeptResult", "PgUndoResults", "UndoResults", "UnreadableResult"]


@dataclass(frozen=True)
class KeptResult:
    """A succeeded call's result as kept: `result` (the row's copy: unsigned, never a plan to propose) and `event`.

    `event`: the executor's signed `action.succeeded` as the service received it, to verify at use; None for a row
    kept before migration 014 (or by an older copy of the service), whose undo is then refused.
    """

    result: ActionResultData
    event: str | None


@dataclass(frozen=True)
class UnreadableResult:
    """A kept row whose copy of the result is not one (the service writes none such; its database login can): its columns and why.

    Its undo is refused (`_undo_proofs`), never an error of the API.
    """

    action_id: str
    tenant_id: str
    task_id: str
    why: str


class UndoResults(Protocol):
    """Results that carry an undo plan."""

    async def keep(self, results: Sequence[KeptResult]) -> list[str]:
        """Remember succeeded calls' results and their events, all in one write (idempotent per action id).

        Returns the action ids whose undo id another kept action holds already (none, short of a row an older copy of
        the service wrote: `undo_action_id` gives every action its own): those are kept without it, never refused.
        """
        ...

    async def get(self, action_id: str) -> KeptResult | UnreadableResult | None:
        """The result of `action_id` and its event, as kept (unverified), if it was kept; UnreadableResult when its copy is not a result."""
        ...

    async def original_of(self, undo_id: str, tenant_id: str) -> str | None:
        """The kept action of `tenant_id` whose undo has the id `undo_id` (`undo_action_id`): what `undo_id` undoes, if it is an undo."""
        ...


@dataclass
class InMemoryUndoResults(UndoResults):
    """The in-memory twin, for unit tests."""

    results: dict[str, KeptResult] = field(default_factory=dict)
    undo_ids: dict[str, str | None] = field(default_factory=dict)
    """Each kept action's undo id, as the table's column (None: another action held it when this one was kept)."""

    async def keep(self, results: Sequence[KeptResult]) -> list[str]:
        """See UndoResults."""
        clashes = []
        for kept in results:
            action_id = kept.result.action_id
            if action_id in self.results:
                continue
            undo_id: str | None = undo_action_id(action_id)
            if undo_id in self.undo_ids.values():
                clashes.append(action_id)
                undo_id = None
            self.results[action_id], self.undo_ids[action_id] = kept, undo_id
        return clashes

    async def get(self, action_id: str) -> KeptResult | None:
        """See UndoResults."""
        return self.results.get(action_id)

    async def original_of(self, undo_id: str, tenant_id: str) -> str | None:
        """See UndoResults."""
        held = (a for a, u in self.undo_ids.items() if u == undo_id and self.results[a].result.tenant_id == tenant_id)
        return next(held, None)


class PgUndoResults(UndoResults):
    """Results in `approval.undo_results`."""

    def __init__(self, pool: asyncpg.Pool, schema: str = "approval") -> None:
        self._pool = pool
        self._s = schema

    async def keep(self, results: Sequence[KeptResult]) -> list[str]:
        """See UndoResults: one round trip for a polled batch's results (new or redelivered), one more for a clash."""
        if not results:
            return []
        rows = {
            r.action_id: (r.tenant_id, r.task_id, r.model_dump_json(), k.event, undo_action_id(r.action_id))
            for k in results
            for r in (k.result,)
        }
        clashes = await self._insert(rows)
        if clashes:  # kept without the undo id another row holds: its undo is still proposed, by the action's own id
            await self._insert({a: (*rows[a][:4], None) for a in clashes})
        return clashes

    async def _insert(self, rows: Mapping[str, tuple[str, str, str, str | None, str | None]]) -> list[str]:
        """Insert the rows that conflict on no key; the action ids of those that conflicted on their undo id alone.

        The outer query reads the table as it was before the insert: a row not inserted and not kept before held an
        undo id another row has (or a copy of the service kept it in the meantime: then it is not inserted again).
        """
        tenants, tasks, texts, events, undo_ids = zip(*rows.values(), strict=True)
        clashing = await self._pool.fetch(
            "WITH x AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[]) "
            "AS x(a, t, k, r, e, u)), "
            f"inserted AS (INSERT INTO {self._s}.undo_results (action_id, tenant_id, task_id, result, event, undo_id) "
            "SELECT a, t, k, r::jsonb, e, u FROM x ON CONFLICT DO NOTHING RETURNING action_id) "
            "SELECT a FROM x WHERE a NOT IN (SELECT action_id FROM inserted) "
            f"AND NOT EXISTS (SELECT 1 FROM {self._s}.undo_results kept WHERE kept.action_id = x.a)",
            list(rows),
            list(tenants),
            list(tasks),
            list(texts),
            list(events),
            list(undo_ids),
        )
        return sorted({str(row["a"]) for row in clashing})

    async def get(self, action_id: str) -> KeptResult | UnreadableResult | None:
        """See UndoResults."""
        row = await self._pool.fetchrow(
            f"SELECT tenant_id, task_id, result::text, event FROM {self._s}.undo_results WHERE action_id = $1", action_id
        )
        if row is None:
            return None
        try:
            return KeptResult(ActionResultData.model_validate_json(row["result"]), row["event"])
        except ValueError as exc:  # pydantic's ValidationError: a copy the service did not write
            why = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
            return UnreadableResult(action_id, row["tenant_id"], row["task_id"], why)

    async def original_of(self, undo_id: str, tenant_id: str) -> str | None:
        """See UndoResults."""
        found = await self._pool.fetchval(
            f"SELECT action_id FROM {self._s}.undo_results WHERE undo_id = $1 AND tenant_id = $2", undo_id, tenant_id
        )
        return None if found is None else str(found)
