"""Two replicas of the approval service on one database: what one of them did, the other one's answers say."""

from __future__ import annotations

from typing import Any

import httpx
from approval_harness import StartApproval

from services.approval import auth


async def test_a_link_spent_on_one_replica_is_spent_in_the_view_of_another(
    start_approval: StartApproval, http: httpx.AsyncClient, wait_for: Any
) -> None:
    one, other = await start_approval(), await start_approval()
    await one.token("dan@acme.example", ["security"])  # a link speaks for a person who holds a live token
    decided = one.decided(tool="delete_customer_data", args={"customer_id": "c1"}, risk="destructive")  # two approvals needed
    await one.escalate(decided)
    record = await one.request_for(decided.action_id, wait_for)
    link = auth.issue_link(
        one.proc.approval.key,
        approval_id=record.approval_id,
        approver="dan@acme.example",
        tenant_id=one.tenant,
        expires_at=record.expires_at,
    )
    headers = {"Authorization": f"Bearer {link}"}
    spent = await http.post(
        f"{one.url}/api/v1/approvals/{record.approval_id}/approve", json={"action_digest": record.action_digest}, headers=headers
    )
    assert (spent.status_code, spent.json()["status"]) == (200, "pending"), spent.text
    changed = one.decided(action_id=decided.action_id, task_id=decided.task_id, tool="delete_customer_data", args={"customer_id": "c2"})
    await one.escalate(changed)  # the re-proposal clears Dan's vote from the record, not the link's use

    async def cleared() -> Any:
        now = await one.repo.get(record.approval_id)
        return now if now is not None and now.action_digest == changed.action_digest and not now.approvers else None

    fresh = await wait_for(cleared, what="the re-proposal's request, its votes cleared")
    for replica in (one, other):
        seen = await http.get(f"{replica.url}/api/v1/approvals/{record.approval_id}", headers=headers)
        assert seen.status_code == 200, seen.text
        view = seen.json()
        assert (view["can_decide"], view["can_reject"]) == (False, False), replica.url
        assert "already used" in view["cannot_decide_because"]
    again = await http.post(
        f"{other.url}/api/v1/approvals/{record.approval_id}/approve", json={"action_digest": fresh.action_digest}, headers=headers
    )
    assert (again.status_code, again.json()["detail"]["code"]) == (401, "link_used")
