"""The approver's chat is told of a decision as the service signed it, not that the decision is unproven.

Found by the upgrade to release 24 on a live deployment: bob rejected a request on release 24 and the team's chat got
`approval.rejected` with `not_as_signed` "this request was settled, and keeps no signed decision of the approval
service (settled before release 24, or removed)": the message's body was written from the request before its own
signed decision was kept in it, so every decision's message said so.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from approval_harness import Receiver, StartApproval, bearer

pytestmark = pytest.mark.integration

WaitFor = Callable[..., Awaitable[Any]]


@pytest.mark.parametrize("decision", ["reject", "approve"])
async def test_the_chat_is_told_of_a_decision_as_signed(
    start_approval: StartApproval, http: httpx.AsyncClient, wait_for: WaitFor, decision: str
) -> None:
    async with Receiver.listening(failures=0) as chat:
        h = await start_approval()
        admin = await h.token("ann@acme.example", ["finance", "admin"])
        made = await http.post(
            f"{h.url}/api/v1/webhooks/endpoints", json={"endpoint_id": "chat", "url": chat.url, "approvers": []}, headers=bearer(admin)
        )
        assert made.status_code in (200, 201), made.text
        await h.escalate(d := h.decided(args={"payee_id": "cus_1002", "amount_usd": 899.0, "order_id": "O-1"}))
        record = await h.request_for(d.action_id, wait_for)
        bob = await h.token("bob@acme.example", ["finance"])
        answer = await http.post(
            f"{h.url}/api/v1/approvals/{record.approval_id}/{decision}",
            json={"action_digest": record.action_digest, "comment": "checked"},
            headers=bearer(bob),
        )
        assert answer.status_code == 200, answer.text

        settled = "approval.rejected" if decision == "reject" else "approval.granted"
        await wait_for(lambda: [m for m in chat.messages() if m["type"] == settled] or None, what=settled, timeout=30)
        [told] = [m for m in chat.messages() if m["type"] == settled]
        assert told["data"]["decided_by"] == "bob@acme.example"
        assert told["data"]["not_as_signed"] is None, told["data"]["not_as_signed"]
