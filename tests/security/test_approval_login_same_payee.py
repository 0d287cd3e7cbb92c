"""The approval service's database login makes a split refund's other piece look small beside the piece an approver decides.

The attacker holds only `tidegate_approval`'s login. Two 4,900 USD refunds to one new payee wait, each its own task: the
approver of one reads the other beside it ("same payee") to see the split. The login lowers the other row's amount to
49 USD (its args and digest rewritten to match). That request itself is shown as the policy signed it, flagged; but the
same-payee section of its sibling read the raw row and listed "49.0". Now each listed piece is what was signed, and says so.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import pytest
from approval_harness import StartApproval, bearer

from servicekit import action_digest

pytestmark = pytest.mark.integration

WaitFor = Callable[..., Awaitable[Any]]


async def test_the_same_payee_section_lists_the_other_piece_as_signed_not_as_the_login_lowered_it(
    start_approval: StartApproval, http: httpx.AsyncClient, approval_login: asyncpg.Connection, wait_for: WaitFor
) -> None:
    h = await start_approval()
    bob = await h.token("bob@acme.example", ["finance"])
    pieces = [h.decided(args={"payee_id": "cus_evil", "amount_usd": 4900.0, "order_id": f"O-{n}"}) for n in (1, 2)]
    for d in pieces:
        await h.escalate(d)
    decided, other = [await h.request_for(d.action_id, wait_for) for d in pieces]

    row = json.loads(await approval_login.fetchval("SELECT record FROM approval.approvals WHERE approval_id = $1", other.approval_id))
    row["args"]["amount_usd"] = 49.0
    row["action_digest"] = action_digest(row["tenant_id"], row["tool"], row["args"])
    update = "UPDATE approval.approvals SET record = $2::jsonb WHERE approval_id = $1"
    await approval_login.execute(update, other.approval_id, json.dumps(row))

    shown = (await http.get(f"{h.url}/api/v1/approvals/{decided.approval_id}", headers=bearer(bob))).json()
    assert shown["not_as_signed"] is None
    [listed] = [p for p in shown["same_payee"] if p["approval_id"] == other.approval_id]
    assert listed["amount_usd"] == 4900.0, "the split refund's other piece was listed as the login lowered it"
    assert "changed in the database" in (listed["not_as_signed"] or "")
