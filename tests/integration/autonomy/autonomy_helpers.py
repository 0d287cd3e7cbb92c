"""Helpers of the autonomy integration tests: an outside agent's proposal, published signed as its client; a task's recorded events."""

from __future__ import annotations

import uuid
from typing import Any

from bus_helpers import Producer

import schemas as s
from servicekit import KitSettings
from services.audit import PostgresAuditLog
from tidegate.ops.undo import read_recorded


async def propose(
    producer: Producer, tenant: str, tool: str, args: dict[str, Any], *, task_id: str, requested_by: str, confidence: float | None = None
) -> str:
    """Publish an autonomous-mode proposal as an outside agent would; its action id."""
    data = s.ActionProposedData(
        action_id=f"a-{uuid.uuid4().hex[:10]}",
        task_id=task_id,
        tenant_id=tenant,
        step=1,
        tool=tool,
        args=args,
        proposer="external:tests",
        mode="autonomous",
        requested_by=requested_by,
        confidence=confidence,
    )
    await producer.send("actions.proposed", s.ActionProposed.build(data, source="external/tests"))
    return data.action_id


async def recorded(kit: KitSettings, task_id: str, wait_for: Any, count: int) -> list[Any]:
    """The task's events as the audit log holds them, once it holds `count` of them."""
    log = await PostgresAuditLog.connect(kit.database_url, max_size=2)
    try:

        async def enough() -> list[Any] | None:
            events = await read_recorded(log, kit.topic_prefix, task_id=task_id)
            return events if len(events) >= count else None

        found: list[Any] = await wait_for(enough, timeout=30, what=f"{count} events of {task_id} in the audit log")
        return found
    finally:
        await log.close()
