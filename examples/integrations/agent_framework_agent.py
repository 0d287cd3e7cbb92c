"""A Microsoft Agent Framework agent governed by Tidegate, offline: the refund becomes the framework's approval request.

PYTHONPATH=. .venv-integrations/bin/python examples/integrations/agent_framework_agent.py
"""

from __future__ import annotations

import asyncio
from typing import Any

from _offline import offline
from agent_framework import Agent, BaseChatClient, ChatResponse, Content, Message, tool
from agent_framework._middleware import ChatMiddlewareLayer
from agent_framework._tools import FunctionInvocationLayer

from tidegate.integrations.agent_framework import TidegateFunctionMiddleware, tidegate_approval_responses


class ScriptedChatClient(FunctionInvocationLayer, ChatMiddlewareLayer, BaseChatClient):  # stands in for a provider's client
    """Asks for a 900 USD refund, then reports what the tool said."""

    async def _inner_get_response(self, *, messages: Any, stream: bool, options: Any, **kwargs: Any) -> ChatResponse:
        results = [c for m in messages for c in m.contents if c.type == "function_result"]
        if results:
            return ChatResponse(messages=[Message(role="assistant", contents=[f"Done: {results[-1].result}"])])
        call = Content.from_function_call(call_id="c1", name="issue_refund", arguments={"payee_id": "cus_1", "amount_usd": 900.0}, id="c1")
        return ChatResponse(messages=[Message(role="assistant", contents=[call])])


def issue_refund(payee_id: str, amount_usd: float) -> str:
    """Refund a customer."""
    return f"refunded {amount_usd:.2f} to {payee_id}"


async def main() -> list[str]:
    story: list[str] = []
    _, tidegate, client = offline(("issue_refund",))
    async with tidegate, client:
        # The lines that govern an existing agent: the function middleware, and approval responses from Tidegate.
        agent = Agent(
            client=ScriptedChatClient(),
            tools=[tool(issue_refund, approval_mode="never_require")],
            middleware=[TidegateFunctionMiddleware(client, serve=[issue_refund])],
        )
        session = agent.create_session()
        paused = await agent.run("refund order O-1 (900 USD)", session=session)
        request = paused.user_input_requests[0].additional_properties["tidegate"]
        story.append(f"paused: {request['tool']} needs a human ({', '.join(request['reasons'])}), approval {request['approval_id']}")
        await tidegate.approve(request["approval_id"], "bob@acme.example")  # in real life: the approver page or API
        responses = await tidegate_approval_responses(client, paused.user_input_requests, timeout_s=5)
        assert responses is not None
        done = await agent.run(Message(role="user", contents=responses), session=session)
        story.append(f"resumed: {done.text}")
    for line in story:
        print(line)
    return story


if __name__ == "__main__":
    asyncio.run(main())
