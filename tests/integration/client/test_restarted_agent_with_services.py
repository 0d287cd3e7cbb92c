"""An agent restarted without its proposals ledger proposes its waiting call again: it is told the call's story, not a timeout.

The LangGraph integrator's restart: a worker paused a thread on an escalation and went away (a crash, a deploy, another
worker picking the thread up); the new process re-runs the tool node, which proposes the same call under the same action
id, with the client's default in-memory ledger. The policy answers the repeat with the decision it made before, but the
approval request, the human's answer and the result were published before the new client began reading: before, the
client waited for an approval request it could never read and raised a bare `TimeoutError` (integrator probe F1).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from conftest import Stack

from tidegate.client import ClientSettings, Escalated, Executed, Tidegate, governed

CALL = {"payee_id": "cus_1001", "amount_usd": 650.0, "invoice_id": "INV-31"}
ACTION = "langgraph:thread-31:call_0"


@pytest.fixture(autouse=True)
def _every_repeat_answered(monkeypatch: pytest.MonkeyPatch) -> None:
    """The policy answers each repeat (by default a call's repeats at most once a minute: the third process came sooner)."""
    monkeypatch.setenv("TIDEGATE_POLICY_REPEAT_ANSWER_INTERVAL_S", "0")


async def test_a_restarted_agent_proposing_its_waiting_call_again_is_told_it_waits_then_how_it_ended(
    stack: Stack, client_settings: ClientSettings
) -> None:
    ran: list[float] = []

    def pay_vendor(payee_id: str, amount_usd: float, invoice_id: str) -> str:
        ran.append(amount_usd)
        return invoice_id

    async with Tidegate(client_settings, task_id="task-thread-31") as first:  # the worker that went away
        escalated = await first.propose("pay_vendor", CALL, action_id=ACTION)
        assert isinstance(escalated, Escalated), escalated

    async with Tidegate(client_settings, task_id="task-thread-31") as second:  # a new process: its ledger knows nothing
        governed("pay_vendor", client=second)(pay_vendor)
        again = await second.propose("pay_vendor", CALL, action_id=ACTION, timeout_s=30)
        assert isinstance(again, Escalated), again
        assert again.approval_id == escalated.approval_id  # the same request: no second approval, nothing run
        assert [r.code for r in again.reasons] == [r.code for r in escalated.reasons]
        assert ran == []

        token = await stack.approver_token("bob@acme.example", ["finance"])
        await stack.decide(escalated.approval_id, "approve", token)
        done = await again.decision(60)
    assert isinstance(done, Executed), done
    assert (done.result, done.via, done.approver) == ({"value": "INV-31"}, "approval", "bob@acme.example")
    assert ran == [650.0]

    # Later still, a third process asking again is told how the call ended, and nothing runs twice.
    async with Tidegate(client_settings, task_id="task-thread-31") as third:
        told: Any = await asyncio.wait_for(third.propose("pay_vendor", CALL, action_id=ACTION, timeout_s=30), 60)
    assert isinstance(told, Executed), told
    assert (told.result, told.approver) == ({"value": "INV-31"}, "bob@acme.example")
    assert ran == [650.0]
