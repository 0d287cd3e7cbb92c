"""Upgrade probe F3, F4: the approval service on the real bus and database opens, lists and decides a request whose
reason code this release does not know, as a later release's policy escalates it.

In a rolling upgrade (a new policy beside this approval service) such an escalation was dead-lettered (`invalid_event`:
no request, the task waiting for nothing), and after a rollback the queue answered 500 to every approver while one
pending request carried such a code.
"""

from __future__ import annotations

from typing import Any

import httpx
from approval_harness import StartApproval

from schemas import Reason

LATER = "a_later_release_code"


async def test_an_escalation_with_a_later_reason_code_is_requested_listed_and_granted(
    start_approval: StartApproval, http: httpx.AsyncClient, wait_for: Any
) -> None:
    h = await start_approval()
    bob = {"Authorization": f"Bearer {await h.token('bob@acme.example', ['finance'])}"}
    decided = h.decided(reasons=[Reason(code=LATER, policy_id="later-rule", message="a human decides")])
    await h.escalate(decided)
    record = await h.request_for(decided.action_id, wait_for)
    listed = await http.get(f"{h.url}/api/v1/approvals", headers=bob)
    assert listed.status_code == 200, listed.text
    assert [r["reasons"][0]["code"] for r in listed.json()] == [LATER]
    shown = await http.get(f"{h.url}/api/v1/approvals/{record.approval_id}", headers=bob)
    assert shown.status_code == 200, shown.text
    response = await http.post(
        f"{h.url}/api/v1/approvals/{record.approval_id}/approve",
        json={"action_digest": record.action_digest, "comment": "seen"},
        headers=bob,
    )
    assert response.status_code == 200, response.text

    async def granted() -> list[Any]:
        return [e for e in await h.approvals() if e.type == "tidegate.approval.granted" and e.data.approval_id == record.approval_id]

    (event,) = await wait_for(granted, what="approval.granted")
    assert [str(r.code) for r in event.data.reasons] == [LATER]  # the signed grant keeps the code as it came
