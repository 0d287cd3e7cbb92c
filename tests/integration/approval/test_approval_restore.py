"""A database restored from a backup (platform5 finding 1): a granted request comes back pending; the approval service
refuses to start until `tidegate db catch-up` records the grant the bus holds, and then offers nothing to decide again."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from approval_harness import StartApproval

from servicekit import create_pool
from servicekit.bus_history import BehindTheBus
from services.approval import PgApprovalRepository
from services.approval.app import build
from services.approval.settings import ApprovalSettings
from tidegate.ops.catch_up import catch_up


async def test_a_restored_pending_request_that_was_granted_is_recorded_granted_by_catch_up(
    start_approval: StartApproval, http: httpx.AsyncClient, wait_for: Any
) -> None:
    h = await start_approval()
    bob = await h.token("bob@acme.example", ["finance"])
    decided = h.decided()
    await h.escalate(decided)
    record = await h.request_for(decided.action_id, wait_for)
    assert h.proc.pool is not None
    backup = await h.proc.pool.fetchrow(
        "SELECT status, version, record FROM approval.approvals WHERE approval_id = $1", record.approval_id
    )  # the backup: taken while the request was pending
    assert backup is not None
    answer = await http.post(
        f"{h.url}/api/v1/approvals/{record.approval_id}/approve",
        json={"action_digest": record.action_digest},
        headers={"Authorization": f"Bearer {bob}"},
    )
    assert answer.status_code == 200, answer.text
    granted = [e for e in await h.approvals() if e.type == "tidegate.approval.granted"]
    await wait_for(h.all_published, what="the grant on the bus")
    await h.proc.stop()

    # The restore puts the row back as the backup held it: pending, decidable.
    owner = await create_pool(h.kit.database_url, max_size=2)
    await owner.execute(
        "UPDATE approval.approvals SET status = $2, version = $3, record = $4 WHERE approval_id = $1",
        record.approval_id, *backup,
    )  # fmt: skip
    settings = ApprovalSettings(http_port=0)
    refused = build(h.kit, settings)
    with pytest.raises(BehindTheBus, match="behind the bus") as behind:
        await refused.start()
    await refused.stop()
    assert record.approval_id in str(behind.value)

    done = await catch_up(h.kit, say=lambda _: None)
    assert done.counts["approval decisions recorded"] == 1
    assert (await catch_up(h.kit, say=lambda _: None)).counts["approval decisions recorded"] == 0  # idempotent

    again = build(h.kit, settings)
    await again.start()
    try:
        restored = await PgApprovalRepository(owner).get(record.approval_id)
        assert restored is not None
        assert restored.status == "granted"
        assert restored.decided_by == "bob@acme.example"
        answer = await http.post(
            f"{again.http_url}/api/v1/approvals/{record.approval_id}/approve",
            json={"action_digest": record.action_digest},
            headers={"Authorization": f"Bearer {bob}"},
        )
        assert answer.status_code == 409, answer.text  # already granted: nothing to decide again
        shown = await http.get(f"{again.http_url}/api/v1/approvals/{record.approval_id}", headers={"Authorization": f"Bearer {bob}"})
        assert shown.json()["not_as_signed"] is None  # the grant written back keeps its signed event: shown as proven
        assert len([e for e in await h.approvals() if e.type == "tidegate.approval.granted"]) == max(1, len(granted))
    finally:
        await again.stop()
        await owner.close()
