"""The approval service's database login writes 501 junk rows that look due, so the sweep never reaches a real request.

The attacker holds only `tidegate_approval`'s login. The sweep read at most 500 due rows (`LIMIT 500`, no order): 501
rows that look pending and long overdue, each refused as unreadable, filled every round, and a real 90 USD refund
waiting for approval was never escalated to the on-call group nor expired (fail closed) past its deadline. The sweep now
reads its due rows a page at a time, each page after the last one's key (keyset), so every due row is reached.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from approval_harness import StartApproval

from services.approval.repository import SWEEP_PAGE

pytestmark = pytest.mark.integration

WaitFor = Callable[..., Awaitable[Any]]
LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)


async def test_a_page_of_junk_rows_that_look_due_hides_no_request_from_the_sweep(
    start_approval: StartApproval, approval_login: asyncpg.Connection, wait_for: WaitFor
) -> None:
    junk = f"junk-{uuid.uuid4().hex[:8]}"
    await approval_login.execute(  # written before the real request, each due before it: read first by any order
        "INSERT INTO approval.approvals (approval_id, kind, action_id, task_id, tenant_id, tool, status, version, created_at, "
        "expires_at, record) SELECT $1 || '-' || i, 'approval', $1 || '-' || i, 't', $1, 'issue_refund', 'pending', 0, $2, "
        "$2, '\"not a request\"'::jsonb FROM generate_series(1, $3) AS i",
        junk,
        LONG_AGO,
        SWEEP_PAGE + 1,
    )
    try:
        h = await start_approval(escalate_after_s=0.5, expiry_s=3.0)
        await h.escalate(d := h.decided(args={"payee_id": "cus_mallory", "amount_usd": 90.0, "order_id": "O-1001"}))
        record = await h.request_for(d.action_id, wait_for)

        async def escalated() -> Any:
            found = await h.repo.get(record.approval_id)
            return found is not None and found.escalated_at is not None

        async def expired() -> Any:
            found = await h.repo.get(record.approval_id)
            return found is not None and found.status == "expired"

        assert await wait_for(escalated, what="the request escalated past a page of junk", timeout=15)
        assert await wait_for(expired, what="the request expired past a page of junk", timeout=15)
    finally:
        await approval_login.execute("DELETE FROM approval.approvals WHERE tenant_id = $1", junk)
