"""The approval service's database login rewrites a settled request, so the API tells an auditor another story than the signed events.

The attacker holds only `tidegate_approval`'s login. Bob rejected a 9,000 USD refund to a new payee ("wrong payee");
Cy approved another. After the fact the login rewrites the rows: the rejection becomes a grant by someone else, later,
its reason "should not need approval"; the grant names another approver in another group. The audit log keeps the
service's signed `approval.rejected` and `approval.granted` (`tidegate audit explain` and `tidegate autonomy report`
read those), but the API (and so the page and `tidegate approvals show`) read the row: before, they showed the login's
story. Now they show what the service signed when it settled the request, say which fields the row changed, and count it.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import pytest
from approval_harness import ApprovalHarness, StartApproval, bearer

from servicekit.metrics import ROWS_REFUSED

pytestmark = pytest.mark.integration

WaitFor = Callable[..., Awaitable[Any]]


async def settled(h: ApprovalHarness, http: httpx.AsyncClient, token: str, wait_for: WaitFor, decision: str, **said: Any) -> Any:
    """A request the holder of `token` settled with `decision` over the API."""
    await h.escalate(d := h.decided(args={"payee_id": "cus_evil", "amount_usd": 9000.0, "order_id": "O-1"}))
    record = await h.request_for(d.action_id, wait_for)
    body = {"action_digest": record.action_digest, **said}
    answer = await http.post(f"{h.url}/api/v1/approvals/{record.approval_id}/{decision}", json=body, headers=bearer(token))
    assert answer.status_code == 200, answer.text
    return record


async def rewrite(login: asyncpg.Connection, approval_id: str, **fields: Any) -> None:
    row = json.loads(await login.fetchval("SELECT record FROM approval.approvals WHERE approval_id = $1", approval_id))
    row.update(fields)
    await login.execute("UPDATE approval.approvals SET record = $2::jsonb WHERE approval_id = $1", approval_id, json.dumps(row))


def refused() -> float:
    return float(ROWS_REFUSED.labels("approval", "approvals", "invalid")._value.get())


async def test_a_rejection_the_login_rewrote_into_a_grant_is_shown_as_the_service_signed_it(
    start_approval: StartApproval, http: httpx.AsyncClient, approval_login: asyncpg.Connection, wait_for: WaitFor
) -> None:
    h = await start_approval()
    bob = await h.token("bob@acme.example", ["finance"])
    record = await settled(
        h, http, bob, wait_for, "reject", comment="wrong payee: cus_evil is not the customer", review_reason="wrong_recipient"
    )
    url = f"{h.url}/api/v1/approvals/{record.approval_id}"
    before = (await http.get(url, headers=bearer(bob))).json()
    assert (before["status"], before["rejected_by"], before["not_as_signed"]) == ("rejected", "bob@acme.example", None)

    await rewrite(
        approval_login, record.approval_id, status="granted", decided_by="cy@acme.example", approvers=["cy@acme.example"],
        decided_at="2026-01-01T09:00:00+00:00", comment="checked with the customer by phone", review_reason="should_not_need_approval",
    )  # fmt: skip
    counted = refused()
    shown = (await http.get(url, headers=bearer(bob))).json()
    assert (shown["status"], shown["rejected_by"]) == ("rejected", "bob@acme.example"), "the API told the login's story"
    assert shown["comment"] == "wrong payee: cus_evil is not the customer"
    assert (shown["review_reason"], shown["decided_at"]) == ("wrong_recipient", before["decided_at"])
    assert "after it was settled" in shown["not_as_signed"]
    assert "decided_by" in shown["not_as_signed"]
    assert refused() > counted  # told, not silent
    listed = (await http.get(f"{h.url}/api/v1/approvals", params={"tenant_id": h.tenant, "status": "all"}, headers=bearer(bob))).json()
    assert [(a["status"], a["comment"]) for a in listed if a["approval_id"] == record.approval_id] == [
        ("rejected", "wrong payee: cus_evil is not the customer")
    ]


async def test_a_grant_whose_approver_the_login_replaced_is_shown_with_the_approver_the_service_signed(
    start_approval: StartApproval, http: httpx.AsyncClient, approval_login: asyncpg.Connection, wait_for: WaitFor
) -> None:
    h = await start_approval()
    cy = await h.token("cy@acme.example", ["finance"])
    record = await settled(h, http, cy, wait_for, "approve")
    url = f"{h.url}/api/v1/approvals/{record.approval_id}"
    before = (await http.get(url, headers=bearer(cy))).json()
    assert (before["status"], before["approvers"], before["not_as_signed"]) == ("granted", ["cy@acme.example"], None)

    await rewrite(
        approval_login, record.approval_id, decided_by="dan@acme.example", approvers=["dan@acme.example"],
        approver_groups={"dan@acme.example": ["finance"]}, decided_at="2026-01-01T09:00:00+00:00",
    )  # fmt: skip
    shown = (await http.get(url, headers=bearer(cy))).json()
    assert (shown["approvers"], shown["decided_by"]) == (["cy@acme.example"], "cy@acme.example"), "the API named the login's approver"
    assert shown["decided_at"] == before["decided_at"]
    assert "approvers" in shown["not_as_signed"]

    # set back to pending beside its signed grant: shown granted, and nobody may approve it again
    await rewrite(approval_login, record.approval_id, status="pending", decided_by=None, decided_at=None, approvers=[])
    again = (await http.get(url, headers=bearer(cy))).json()
    assert (again["status"], again["can_decide"]) == ("granted", False)
    approve = await http.post(f"{url}/approve", json={"action_digest": record.action_digest}, headers=bearer(cy))
    assert approve.status_code == 409, approve.text


async def test_a_settled_row_stripped_of_the_services_event_is_flagged(
    start_approval: StartApproval, http: httpx.AsyncClient, approval_login: asyncpg.Connection, wait_for: WaitFor
) -> None:
    """Without its signed event nothing here proves who settled it: it is said, and pointed to the audit log's signed events."""
    h = await start_approval()
    bob = await h.token("bob@acme.example", ["finance"])
    record = await settled(h, http, bob, wait_for, "reject", comment="no")
    await rewrite(approval_login, record.approval_id, settled_event=None, decided_by="cy@acme.example")
    shown = (await http.get(f"{h.url}/api/v1/approvals/{record.approval_id}", headers=bearer(bob))).json()
    assert "keeps no signed decision of the approval service" in (shown["not_as_signed"] or "")
    assert "tidegate audit explain" in shown["not_as_signed"]


async def test_a_settled_row_stripped_of_both_signed_events_is_flagged_too(
    start_approval: StartApproval, http: httpx.AsyncClient, approval_login: asyncpg.Connection, wait_for: WaitFor
) -> None:
    """attacker5: the login takes the policy's escalation out as well, so the row looks settled before release 23: still said."""
    h = await start_approval()
    bob = await h.token("bob@acme.example", ["finance"])
    record = await settled(h, http, bob, wait_for, "reject", comment="wrong payee", review_reason="wrong_recipient")
    await rewrite(
        approval_login, record.approval_id, settled_event=None, decision=None, status="granted", decided_by="cy@acme.example",
        approvers=["cy@acme.example"], comment="checked with the customer by phone", review_reason="should_not_need_approval",
    )  # fmt: skip
    shown = (await http.get(f"{h.url}/api/v1/approvals/{record.approval_id}", headers=bearer(bob))).json()
    assert shown["status"] == "granted"  # nothing here proves otherwise: the signed events are the audit log's
    assert "keeps no signed decision of the approval service" in (shown["not_as_signed"] or ""), "the login's story was shown unflagged"
    assert "tidegate audit explain" in shown["not_as_signed"]
