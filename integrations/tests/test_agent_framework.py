"""Microsoft Agent Framework 1.23 (AutoGen's successor) with a scripted chat client, governed through function middleware."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from agent_framework import Agent, BaseChatClient, ChatResponse, Content, Message, tool
from agent_framework._middleware import ChatMiddlewareLayer
from agent_framework._tools import FunctionInvocationLayer

from integrations.harness import SideEffects, wait_pending
from tidegate.client import Tidegate
from tidegate.client.scripted import ScriptedTidegate
from tidegate.integrations.agent_framework import TidegateFunctionMiddleware, tidegate_approval_responses


class ScriptedChatClient(FunctionInvocationLayer, ChatMiddlewareLayer, BaseChatClient):  # the layers a provider's client has
    """Answers from a script: first a tool call, then a text that quotes the last tool result."""

    def __init__(self, name: str, args: dict[str, Any]) -> None:
        super().__init__()
        self.call = Content.from_function_call(call_id="call-1", name=name, arguments=args, id="call-1")

    async def _inner_get_response(self, *, messages: Any, stream: bool, options: Any, **kwargs: Any) -> ChatResponse:
        results = [c for m in messages for c in m.contents if c.type == "function_result"]
        if results:
            return ChatResponse(messages=[Message(role="assistant", contents=[f"done: {results[-1].result}"])])
        return ChatResponse(messages=[Message(role="assistant", contents=[self.call])])


def build_agent(client: Tidegate, effects: SideEffects, name: str, args: dict[str, Any]) -> Agent:
    def issue_refund(payee_id: str, amount_usd: float) -> str:
        """Refund a customer."""
        effects.calls.append(("issue_refund", {"payee_id": payee_id, "amount_usd": amount_usd}))
        return f"refunded {amount_usd:.2f} to {payee_id}"

    def delete_customer_data(customer_id: str) -> str:
        """Erase a customer's data."""
        effects.calls.append(("delete_customer_data", {"customer_id": customer_id}))
        return "deleted"

    functions = [issue_refund, delete_customer_data]
    tools = [tool(fn, approval_mode="never_require") for fn in functions]
    return Agent(client=ScriptedChatClient(name, args), tools=tools, middleware=[TidegateFunctionMiddleware(client, serve=functions)])


async def test_an_allowed_call_runs_once(make_client: Callable[[], Tidegate], governance: ScriptedTidegate, effects: SideEffects) -> None:
    async with make_client() as client:
        result = await build_agent(client, effects, "issue_refund", {"payee_id": "cus_1", "amount_usd": 40.0}).run("refund 40")
    assert "refunded 40.00 to cus_1" in result.text
    assert effects.of("issue_refund") == [{"payee_id": "cus_1", "amount_usd": 40.0}]
    assert [p.action_id for p in governance.proposals] == ["agent-framework:ticket-1007:call-1"]


async def test_a_denied_call_never_runs(make_client: Callable[[], Tidegate], governance: ScriptedTidegate, effects: SideEffects) -> None:
    async with make_client() as client:
        result = await build_agent(client, effects, "delete_customer_data", {"customer_id": "c1"}).run("erase c1")
    assert "human_only" in result.text
    assert effects.calls == []


# What the model reads after an approver changed 900 to 450: the args that ran, not only the function's value.
EDITED_TEXT = 'A human edited the arguments to {"payee_id": "cus_1", "amount_usd": 450.0} before it ran: refunded 450.00 to cus_1'


@pytest.mark.parametrize(
    ("decision", "expected_calls", "expected_text"),
    [
        ("approve", [{"payee_id": "cus_1", "amount_usd": 900.0}], "refunded 900.00 to cus_1"),
        ("edit", [{"payee_id": "cus_1", "amount_usd": 450.0}], EDITED_TEXT.lower()),
        ("reject", [], "reject"),
    ],
)
async def test_an_escalation_is_a_framework_approval_request_answered_from_tidegate(
    make_client: Callable[[], Tidegate],
    governance: ScriptedTidegate,
    effects: SideEffects,
    decision: str,
    expected_calls: list[dict[str, Any]],
    expected_text: str,
) -> None:
    async with make_client() as client:
        agent = build_agent(client, effects, "issue_refund", {"payee_id": "cus_1", "amount_usd": 900.0})
        session = agent.create_session()
        paused = await agent.run("refund 900", session=session)
        [request] = paused.user_input_requests
        assert request.additional_properties["tidegate"]["reasons"] == ["needs_human_approval"]
        assert await tidegate_approval_responses(client, paused.user_input_requests, timeout_s=0.2) is None
        assert effects.calls == []

        approval_id = await wait_pending(governance)
        if decision == "reject":
            await governance.reject(approval_id, comment="no")
        else:
            await governance.approve(approval_id, edited_args={"payee_id": "cus_1", "amount_usd": 450.0} if decision == "edit" else None)
        responses = await tidegate_approval_responses(client, paused.user_input_requests)
        assert responses is not None
        assert [r.approved for r in responses] == [decision != "reject"]
        result = await agent.run(Message(role="user", contents=responses), session=session)
    assert expected_text in result.text.lower()
    assert effects.of("issue_refund") == expected_calls
    assert len(governance.proposals) == 1


async def test_a_process_restarted_while_a_human_decides_runs_the_call_once(
    make_client: Callable[[], Tidegate], governance: ScriptedTidegate, effects: SideEffects
) -> None:
    async with make_client() as first:
        agent = build_agent(first, effects, "issue_refund", {"payee_id": "cus_1", "amount_usd": 700.0})
        session = agent.create_session()
        paused = await agent.run("refund", session=session)
        kept = (session.to_dict(), paused.user_input_requests)  # what the application stores
    await governance.approve(await wait_pending(governance))

    async with make_client() as second:
        agent = build_agent(second, effects, "issue_refund", {"payee_id": "cus_1", "amount_usd": 700.0})
        session = type(session).from_dict(kept[0])
        responses = await tidegate_approval_responses(second, kept[1])
        assert responses is not None
        result = await agent.run(Message(role="user", contents=responses), session=session)
    assert "refunded 700.00 to cus_1" in result.text
    assert effects.of("issue_refund") == [{"payee_id": "cus_1", "amount_usd": 700.0}]
    assert len(governance.proposals) == 1
