"""The Python client and `@governed` against the real policy, approval and executor services."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from conftest import Stack

from tidegate.client import ClientSettings, Denied, Escalated, Executed, GovernanceError, Rejected, SqliteLedger, Tidegate, governed


async def test_allowed_denied_and_escalated_calls_of_a_governed_function(stack: Stack, client_settings: ClientSettings) -> None:
    ran: list[dict[str, Any]] = []
    async with Tidegate(client_settings) as tg:

        @governed("reorder_stock", client=tg)
        async def reorder_stock(sku: str, quantity: int) -> dict[str, Any]:
            ran.append({"sku": sku, "quantity": quantity})
            return {"po": f"PO-{sku}-{quantity}"}

        @governed("pay_vendor", client=tg)
        def pay_vendor(payee_id: str, amount_usd: float, invoice_id: str) -> str:
            ran.append({"paid": amount_usd})
            return f"paid {amount_usd:.2f} on {invoice_id}"

        # allow: policy allows a low-risk write; the executor invokes the function here, once.
        assert await reorder_stock("KB-1", 3) == {"po": "PO-KB-1-3"}
        assert ran == [{"sku": "KB-1", "quantity": 3}]

        # deny: human-only tools are never run for an agent.
        denied = await tg.propose("delete_customer_data", {"customer_id": "cus_1001", "reason": "asked"})
        assert isinstance(denied, Denied), denied
        assert "human_only" in denied.codes

        # escalate → approve with edits, through the approval API: the function runs the edited call.
        token = await stack.approver_token("bob@acme.example", ["finance"])
        call = asyncio.create_task(pay_vendor("cus_1001", 900.0, "INV-7"))
        approval_id = await _pending_approval(stack, token)
        assert ran == [{"sku": "KB-1", "quantity": 3}]
        await stack.decide(approval_id, "approve", token, edited_args={"payee_id": "cus_1001", "amount_usd": 450.0, "invoice_id": "INV-7"})
        assert await asyncio.wait_for(call, 60) == "paid 450.00 on INV-7"
        assert ran[-1] == {"paid": 450.0}

        # escalate → reject: nothing runs, the caller gets the rejection.
        call = asyncio.create_task(pay_vendor("cus_1001", 800.0, "INV-8"))
        approval_id = await _pending_approval(stack, token)
        await stack.decide(approval_id, "reject", token, comment="duplicate invoice")
        with pytest.raises(GovernanceError) as rejected:
            await asyncio.wait_for(call, 60)
        assert isinstance(rejected.value.outcome, Rejected)
        assert rejected.value.outcome.codes == ["approval_rejected"]
        assert len(ran) == 2


async def test_a_client_restarted_while_a_human_decides_resumes_and_the_call_runs_once(
    stack: Stack, client_settings: ClientSettings, tmp_path: Path
) -> None:
    ledger = tmp_path / "pay_vendor.sqlite3"
    ran: list[float] = []

    def pay_vendor(payee_id: str, amount_usd: float, invoice_id: str) -> str:
        ran.append(amount_usd)
        return invoice_id

    async with Tidegate(client_settings) as first:
        governed("pay_vendor", client=first, ledger=SqliteLedger(ledger))(pay_vendor)
        outcome = await first.propose("pay_vendor", {"payee_id": "cus_1002", "amount_usd": 700.0, "invoice_id": "INV-9"})
        assert isinstance(outcome, Escalated), outcome
        kept = (outcome.action_id, outcome.position)  # what the agent records before it goes away

    token = await stack.approver_token("bob@acme.example", ["finance"])
    await stack.decide(outcome.approval_id, "approve", token)  # while no client runs: the invocation waits on the topic

    async with Tidegate(client_settings) as second:
        governed("pay_vendor", client=second, ledger=SqliteLedger(ledger))(pay_vendor)
        final = await second.resume(kept[0], position=kept[1], timeout_s=60)
    assert isinstance(final, Executed), final
    assert (final.result, final.via, final.approver) == ({"value": "INV-9"}, "approval", "bob@acme.example")
    assert ran == [700.0]


async def _pending_approval(stack: Stack, token: str) -> str:
    """The id of the one pending request, once the approval service has it."""
    deadline = asyncio.get_running_loop().time() + 45
    while True:
        listing = await stack.http.get(f"{stack.approval.http_url}/api/v1/approvals", headers={"Authorization": f"Bearer {token}"})
        pending = [a for a in listing.json() if a["status"] == "pending"] if listing.status_code == 200 else []
        if pending:
            return str(pending[0]["approval_id"])
        assert asyncio.get_running_loop().time() < deadline, listing.text
        await asyncio.sleep(0.1)
