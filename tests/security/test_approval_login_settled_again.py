"""The approval service's database login sets a settled request back to pending, so it is decided again the other way.

The attacker holds only `tidegate_approval`'s login. Bob found that a refund whose outcome was unknown went through
("in the ledger"): the service signed and published `approval.resolved confirmed_done`. The login then sets the row back
to `pending` (resolution, decider and time taken out, the executor's signed `action.unknown` kept). Before, the
follow-up was shown proven and waiting, and a second approver's "it did not happen" was signed and published too: two
opposite signed findings on one call (review64, run live by attacker7). A follow-up now keeps its signed resolution, as
a request keeps its decision, and a row set back to pending beside the service's signed decision of it is shown as
signed and takes no vote of either kind: a request's reject too (a second, opposite `approval.rejected` after a grant).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import pytest
from approval_harness import ApprovalHarness, StartApproval, bearer
from test_approval_login_follow_ups import REFUND, unknown

from servicekit.metrics import ROWS_REFUSED

pytestmark = pytest.mark.integration

WaitFor = Callable[..., Awaitable[Any]]
PENDING_AGAIN = {"status": "pending", "decided_by": None, "decided_at": None, "approvers": [], "comment": None, "votes": []}


async def set_back_to_pending(login: asyncpg.Connection, approval_id: str, **fields: Any) -> None:
    row = json.loads(await login.fetchval("SELECT record FROM approval.approvals WHERE approval_id = $1", approval_id))
    row.update(PENDING_AGAIN | fields)
    update = "UPDATE approval.approvals SET record = $2::jsonb, status = 'pending' WHERE approval_id = $1"
    await login.execute(update, approval_id, json.dumps(row))


async def decisions(h: ApprovalHarness, action_id: str) -> list[tuple[str, str | None]]:
    """The approval service's signed decisions of `action_id` on the bus: (type, resolution)."""
    found = [(e.type.removeprefix("tidegate.approval."), e.data.resolution) for e in await h.approvals() if e.data.action_id == action_id]
    return [f for f in found if f[0] != "requested"]


async def with_approvers(start_approval: StartApproval) -> tuple[ApprovalHarness, str, str]:
    """The approval service, and the tokens of bob and cy, both of finance."""
    h = await start_approval()
    return h, await h.token("bob@acme.example", ["finance"]), await h.token("cy@acme.example", ["finance"])


async def test_a_resolved_follow_up_set_back_to_pending_is_shown_resolved_and_is_resolved_neither_way_again(
    start_approval: StartApproval, http: httpx.AsyncClient, approval_login: asyncpg.Connection, wait_for: WaitFor
) -> None:
    h, bob, cy = await with_approvers(start_approval)
    follow_up = await unknown(h, wait_for)  # a refund granted, run, and ended `unknown`: the executor's signed event
    url = f"{h.url}/api/v1/approvals/{follow_up.approval_id}"
    done = await http.post(
        f"{url}/approve", json={"comment": "in the ledger", "action_digest": follow_up.action_digest}, headers=bearer(bob)
    )
    assert (done.json()["status"], done.json()["resolution"]) == ("resolved", "confirmed_done"), done.text
    assert await wait_for(lambda: decisions(h, follow_up.action_id), what="the signed resolution") == [("resolved", "confirmed_done")]

    await set_back_to_pending(approval_login, follow_up.approval_id, resolution=None)
    shown = (await http.get(url, headers=bearer(cy))).json()
    assert (shown["status"], shown["resolution"], shown["decided_by"]) == ("resolved", "confirmed_done", "bob@acme.example"), (
        "a follow-up the login set back to pending was shown waiting"
    )
    assert "after it was settled" in (shown["not_as_signed"] or "")
    assert (shown["can_decide"], shown["can_reject"]) == (False, False)
    for decision in ("reject", "approve"):  # it did not happen: the opposite finding; it happened: a second one
        answer = await http.post(f"{url}/{decision}", json={"action_digest": follow_up.action_digest}, headers=bearer(cy))
        assert answer.status_code == 409, f"{decision}: a resolved follow-up was resolved again: {answer.text}"
        assert answer.json()["detail"]["code"] == "not_pending"
    assert await h.all_published()
    second = "a second signed finding on one call reached the bus"
    assert await decisions(h, follow_up.action_id) == [("resolved", "confirmed_done")], second


async def granted_by_bob(h: ApprovalHarness, http: httpx.AsyncClient, bob: str, wait_for: WaitFor) -> Any:
    """A refund escalated to the service and granted by bob over the API: its request."""
    await h.escalate(d := h.decided(args=REFUND))
    record = await h.request_for(d.action_id, wait_for)
    url = f"{h.url}/api/v1/approvals/{record.approval_id}"
    granted = await http.post(f"{url}/approve", json={"action_digest": record.action_digest}, headers=bearer(bob))
    assert granted.json()["status"] == "granted", granted.text
    return record


async def test_a_granted_request_set_back_to_pending_is_rejected_no_more(
    start_approval: StartApproval, http: httpx.AsyncClient, approval_login: asyncpg.Connection, wait_for: WaitFor
) -> None:
    h, bob, cy = await with_approvers(start_approval)
    record = await granted_by_bob(h, http, bob, wait_for)
    url = f"{h.url}/api/v1/approvals/{record.approval_id}"

    await set_back_to_pending(approval_login, record.approval_id, approver_groups={}, ballots={}, approved_via={})
    rejected = await http.post(f"{url}/reject", json={"action_digest": record.action_digest, "comment": "no"}, headers=bearer(cy))
    assert rejected.status_code == 409, f"a granted request was rejected again: {rejected.text}"
    assert rejected.json()["detail"]["code"] == "not_pending"
    assert await h.all_published()
    assert await decisions(h, record.action_id) == [("granted", None)], "a second, opposite decision of one request reached the bus"


async def test_a_granted_request_set_back_to_pending_and_overdue_is_not_expired_by_the_sweep(
    start_approval: StartApproval, http: httpx.AsyncClient, approval_login: asyncpg.Connection, wait_for: WaitFor
) -> None:
    """The sweep read the row, not its proof: it published `approval.expired` after the grant the service had signed."""
    h, bob, _ = await with_approvers(start_approval)
    record = await granted_by_bob(h, http, bob, wait_for)

    past = "2000-01-01T00:00:00+00:00"
    await set_back_to_pending(approval_login, record.approval_id, expires_at=past, approver_groups={}, ballots={}, approved_via={})
    await approval_login.execute(
        "UPDATE approval.approvals SET expires_at = $2::text::timestamptz WHERE approval_id = $1", record.approval_id, past
    )
    counted = ROWS_REFUSED.labels("approval", "approvals", "invalid")._value.get()

    async def swept() -> Any:  # expired, or read as settled by two sweeps (each counts the row it refuses as pending)
        found = await approval_login.fetchval("SELECT status FROM approval.approvals WHERE approval_id = $1", record.approval_id)
        return found != "pending" or ROWS_REFUSED.labels("approval", "approvals", "invalid")._value.get() >= counted + 2

    await wait_for(swept, what="two sweeps past the row")
    assert await h.all_published()
    assert await decisions(h, record.action_id) == [("granted", None)], "the sweep expired a request the service had granted"
