"""A pydantic-ai agent governed by Tidegate, offline: an escalation becomes a deferred approval, approved with an edit.

PYTHONPATH=. .venv-integrations/bin/python examples/integrations/pydantic_ai_agent.py
"""

from __future__ import annotations

import asyncio

from _offline import offline
from pydantic_ai import Agent, DeferredToolRequests
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from tidegate.integrations.pydantic_ai import TidegateCapability, tidegate_results


def issue_refund(payee_id: str, amount_usd: float) -> str:
    """Refund a customer."""
    return f"refunded {amount_usd:.2f} to {payee_id}"


def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    returned = [p for m in messages for p in getattr(m, "parts", []) if isinstance(p, ToolReturnPart)]
    if returned:
        return ModelResponse(parts=[TextPart(f"Done: {returned[-1].content}")])
    return ModelResponse(parts=[ToolCallPart("issue_refund", {"payee_id": "cus_1", "amount_usd": 900.0}, tool_call_id="c1")])


async def main() -> list[str]:
    story: list[str] = []
    _, tidegate, client = offline(("issue_refund",))
    async with tidegate, client:
        agent = Agent(
            FunctionModel(model),
            tools=[issue_refund],
            output_type=[str, DeferredToolRequests],
            capabilities=[TidegateCapability(client, serve=[issue_refund])],
        )
        paused = await agent.run("refund order O-1 (900 USD)")
        assert isinstance(paused.output, DeferredToolRequests)
        story.append(f"deferred: {[c.tool_name for c in paused.output.approvals]} waits for a human")
        approval_id = tidegate.pending()[0].approval_id
        await tidegate.approve(approval_id, "bob@acme.example", edited_args={"payee_id": "cus_1", "amount_usd": 450.0})
        results = await tidegate_results(client, paused.output)
        result = await agent.run(message_history=paused.all_messages(), deferred_tool_results=results)
        story.append(f"resumed: {result.output}")
    for line in story:
        print(line)
    return story


if __name__ == "__main__":
    asyncio.run(main())
