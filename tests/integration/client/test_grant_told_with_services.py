"""Against the real services: a human-edited call's result is told with the grant, however often it is read again.

The client reads the three answer topics independently; the executor's result of an approved call can come off the
broker before the approval service's grant. Fresh clients (a resumed agent, an adapter proposing the call again)
must each report the approver and the args the human chose, never `via=policy` and the model's own amount.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from conftest import Stack

from tidegate.client import ClientSettings, Escalated, Executed, SqliteLedger, SqliteProposals, Tidegate, governed

CALL = {"payee_id": "cus_1001", "amount_usd": 950.0, "invoice_id": "INV-31"}
EDIT = CALL | {"amount_usd": 900.0}
READS = 6  # the integrator saw the grant missing in 3 of 6 fresh reads before the fix


async def test_every_fresh_read_of_an_edited_grant_tells_the_approver_and_the_edit(
    stack: Stack, client_settings: ClientSettings, tmp_path: Path
) -> None:
    action_id, task = f"grant-{uuid.uuid4().hex[:8]}", f"t-{uuid.uuid4().hex[:8]}"
    ledger = SqliteProposals(tmp_path / "proposals.sqlite3")
    ran: list[float] = []

    def pay_vendor(payee_id: str, amount_usd: float, invoice_id: str) -> str:
        ran.append(amount_usd)
        return invoice_id

    async with Tidegate(client_settings, proposals=ledger, task_id=task) as first:
        governed("pay_vendor", client=first, ledger=SqliteLedger(tmp_path / "pay_vendor.sqlite3"))(pay_vendor)
        escalated = await first.propose("pay_vendor", CALL, action_id=action_id)
        assert isinstance(escalated, Escalated), escalated
        token = await stack.approver_token("bob@acme.example", ["finance"])
        await stack.decide(escalated.approval_id, "approve", token, edited_args=EDIT, review_reason="wrong_amount")
        done = await escalated.decision(60)
    assert isinstance(done, Executed), done
    assert ran == [900.0]

    for read in range(READS):
        async with Tidegate(client_settings, proposals=ledger, task_id=task) as again:
            if read % 2:
                outcome = await again.resume(action_id, position=escalated.position, timeout_s=30)
            else:
                outcome = await asyncio.wait_for(again.propose("pay_vendor", CALL, action_id=action_id), 60)
        assert isinstance(outcome, Executed), (read, outcome)
        told = (outcome.via, outcome.approver, outcome.edited_args, outcome.review_reason)
        assert told == ("approval", "bob@acme.example", EDIT, "wrong_amount"), (read, told)
    assert ran == [900.0]
