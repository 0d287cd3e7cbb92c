"""On the real database: the running approval service forgets task events older than its setting, as its own login."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
from approval_harness import StartApproval


async def test_the_running_service_forgets_old_task_events_on_its_timer_and_keeps_the_recent(
    infra: Any, start_approval: StartApproval
) -> None:
    tenant = f"forget-{uuid.uuid4().hex[:8]}"
    owner = await asyncpg.connect(infra.database_url)
    try:
        await owner.executemany(
            "INSERT INTO approval.task_events (event_id, tenant_id, task_id, action_id, type, tool, at) "
            "VALUES ($1, $2, 't', $1, 'tidegate.action.decided', 'tag_ticket', now() - make_interval(hours => $3))",
            [(f"{tenant}-old-{i}", tenant, 2) for i in range(5)] + [(f"{tenant}-new", tenant, 0)],
        )
        await start_approval(task_events_kept_s=3600, task_events_check_s=0.2)
        for _ in range(100):
            left = await owner.fetch("SELECT event_id FROM approval.task_events WHERE tenant_id = $1", tenant)
            if len(left) < 6:
                break
            await asyncio.sleep(0.1)
        assert [r["event_id"] for r in left] == [f"{tenant}-new"]
    finally:
        await owner.close()
