"""How long a proposal waits, and which step it takes.

An allowed call's result comes only once the executor is done with it: the tool's `timeout_s` × attempts (plus
backoff) when it hangs, which the example catalog puts at ~31 s, past the 30 s the client waits for a decision.
So once the call is seen allowed, the client waits `result_timeout_s` for its result. And a call proposed again
(an adapter's second look at the same call) follows the first proposal: it is no new step of the task.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tidegate.client import ClientSettings, Executed, MemoryTransport, Tidegate
from tidegate.client.scripted import ScriptedTidegate

DECISION_S = 0.05


@pytest.fixture
def bus() -> MemoryTransport:
    return MemoryTransport()


@pytest.fixture
def slow_tool() -> asyncio.Event:
    """Set it and the tool answers; until then it is a payments API taking its time."""
    return asyncio.Event()


@pytest.fixture
async def governance(bus: MemoryTransport, slow_tool: asyncio.Event) -> AsyncIterator[ScriptedTidegate]:
    async def refund(args: dict[str, Any]) -> dict[str, Any]:
        await slow_tool.wait()
        return {"refunded": args["amount_usd"]}

    async with ScriptedTidegate(bus, lambda p: ("allow", "low_risk_write_allowed"), tools={"issue_refund": refund}) as scripted:
        yield scripted


async def test_an_allowed_call_slower_than_the_decision_timeout_is_answered_with_its_result(
    bus: MemoryTransport, governance: ScriptedTidegate, slow_tool: asyncio.Event
) -> None:
    async with Tidegate(ClientSettings(decision_timeout_s=DECISION_S, result_timeout_s=60), transport=bus) as client:
        call = asyncio.create_task(client.propose("issue_refund", {"payee_id": "cus_1", "amount_usd": 60.0}))
        await asyncio.sleep(DECISION_S * 10)  # well past the decision's timeout: the call is decided, the tool still busy
        assert not call.done(), call.result()
        slow_tool.set()
        outcome = await call
    assert isinstance(outcome, Executed)
    assert outcome.result == {"refunded": 60.0}


async def test_no_result_within_the_result_timeout_says_the_call_was_allowed_and_may_still_run(
    bus: MemoryTransport, governance: ScriptedTidegate
) -> None:
    async with Tidegate(ClientSettings(decision_timeout_s=5), transport=bus) as client:
        with pytest.raises(TimeoutError, match=r"within 0\.1 s \(the call was allowed and the executor has not reported its result yet"):
            await client.propose("issue_refund", {"payee_id": "cus_1", "amount_usd": 60.0}, result_timeout_s=0.1)


def test_the_result_is_waited_for_longer_than_the_example_catalogs_tools_take_by_default() -> None:
    """The example catalog's tools time out after 10 s × 3 attempts (+ backoff): ~31 s before the executor's definite answer."""
    settings = ClientSettings()
    assert settings.result_timeout_s > 20 * 3 + 1 + 2  # the catalog's slowest: github_open_pull_request, 20 s × 3 + backoff


async def test_a_call_proposed_again_takes_no_step_of_its_own(bus: MemoryTransport, governance: ScriptedTidegate) -> None:
    """The OpenAI adapter proposes each call twice (`needs_approval`, then the tool): the audit must read step 1, step 2."""
    governance.rule = lambda p: ("allow", "read_allowed")
    async with Tidegate(ClientSettings(decision_timeout_s=5), transport=bus, task_id="t-1") as client:
        await client.propose("lookup_order", {"order_id": "O-1"}, action_id="call-1")
        await client.propose("lookup_order", {"order_id": "O-1"}, action_id="call-1")  # the same call, followed again
        await client.propose("lookup_order", {"order_id": "O-2"}, action_id="call-2")
    assert [(p.action_id, p.step) for p in governance.proposals] == [("call-1", 1), ("call-2", 2)]
