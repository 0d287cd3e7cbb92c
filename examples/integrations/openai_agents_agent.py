"""An OpenAI Agents SDK agent governed by Tidegate, offline: the run is interrupted for a human and resumed from saved state.

PYTHONPATH=. .venv-integrations/bin/python examples/integrations/openai_agents_agent.py
"""

from __future__ import annotations

import asyncio

from _offline import offline
from agents import Agent, Runner, RunState, set_tracing_disabled
from agents.testing import ScriptedModel, assistant_message, function_call

from tidegate.integrations.openai_agents import governed_function_tool, settle_interruptions


def issue_refund(payee_id: str, amount_usd: float) -> str:
    """Refund a customer."""
    return f"refunded {amount_usd:.2f} to {payee_id}"


async def main() -> list[str]:
    set_tracing_disabled(True)
    story: list[str] = []
    _, tidegate, client = offline(("issue_refund",))
    model = ScriptedModel(
        [[function_call("issue_refund", {"payee_id": "cus_1", "amount_usd": 900.0}, call_id="c1")], [assistant_message("Refunded.")]]
    )
    async with tidegate, client:
        agent = Agent(name="support", model=model, tools=[governed_function_tool(client, issue_refund)])
        paused = await Runner.run(agent, "refund order O-1 (900 USD)")
        saved = paused.to_state().to_string()  # keep it anywhere while a human decides
        story.append(f"interrupted: {[i.tool_name for i in paused.interruptions]} waits for a human")
        await tidegate.approve(tidegate.pending()[0].approval_id, "bob@acme.example")
        state = await RunState.from_string(agent, saved)
        if await settle_interruptions(client, state):
            result = await Runner.run(agent, state)
            story.append(f"resumed: {result.final_output}")
    for line in story:
        print(line)
    return story


if __name__ == "__main__":
    asyncio.run(main())
