"""Helpers of the autonomy integration tests: an outside agent's proposal, published signed as its client."""

from __future__ import annotations

import uuid
from typing import Any

from bus_helpers import Producer

import schemas as s


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
