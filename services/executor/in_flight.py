"""A read-only view of the executor's calls for people: where a call of an open task stands (running, or a retry due at T).

`tidegate tasks` reads it as the operator (a read-only query of the `executor` schema); the service never calls it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["CallState", "calls_of"]


@dataclass(frozen=True)
class CallState:
    """Where one claimed call stands: `claimed`, `running`, `waiting` (a retry due at `retry_at`), or how it ended."""

    action_id: str
    status: str
    attempts: int
    retry_at: datetime | None
    started_at: datetime | None
    updated_at: datetime


async def calls_of(conn: Any, action_ids: Sequence[str]) -> dict[str, CallState]:
    """The executor's record of each of `action_ids` it claimed (an action it never claimed is absent); `conn`: asyncpg."""
    if not action_ids:
        return {}
    rows = await conn.fetch(
        "SELECT action_id, status, attempts, retry_at, started_at, updated_at FROM executor.actions WHERE action_id = ANY($1::text[])",
        list(action_ids),
    )
    return {r["action_id"]: CallState(**dict(r)) for r in rows}
