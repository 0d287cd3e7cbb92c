"""An AutoGen agent governed by Tidegate, offline: the refund escalates, the agent waits, a human approves it with an edit.

PYTHONPATH=. .venv-autogen/bin/python examples/integrations/autogen_agent.py
"""

from __future__ import annotations

import asyncio

from _offline import offline
from autogen_agentchat.agents import AssistantAgent
from autogen_core import FunctionCall
from autogen_core.models import CreateResult, ModelFamily, ModelInfo, RequestUsage
from autogen_core.tools import FunctionTool
from autogen_ext.models.replay import ReplayChatCompletionClient

from tidegate.integrations.autogen import GovernedWorkbench


def issue_refund(payee_id: str, amount_usd: float) -> str:
    """Refund a customer."""
    return f"refunded {amount_usd:.2f} to {payee_id}"


async def main() -> list[str]:
    story: list[str] = []
    _, tidegate, client = offline(("issue_refund",))
    call = FunctionCall(id="c1", name="issue_refund", arguments='{"payee_id": "cus_1", "amount_usd": 900.0}')
    model = ReplayChatCompletionClient(
        [
            CreateResult(
                finish_reason="function_calls", content=[call], usage=RequestUsage(prompt_tokens=0, completion_tokens=0), cached=False
            )
        ],
        model_info=ModelInfo(vision=False, function_calling=True, json_output=False, family=ModelFamily.UNKNOWN, structured_output=False),
    )
    async with tidegate, client:
        workbench = GovernedWorkbench(client, [FunctionTool(issue_refund, description="Refund a customer.")])
        agent = AssistantAgent("support", model_client=model, workbench=workbench)
        run = asyncio.create_task(agent.run(task="refund order O-1 (900 USD)"))
        for _ in range(500):  # a person would open the approver page; here we look (up to 5 s) until the request is there
            if tidegate.pending():
                break
            await asyncio.sleep(0.01)
        story.append(f"waiting: {tidegate.pending()[0].tool} needs a human ({tidegate.pending()[0].reasons[0].code})")
        await tidegate.approve(
            tidegate.pending()[0].approval_id, "bob@acme.example", edited_args={"payee_id": "cus_1", "amount_usd": 450.0}
        )
        result = await run
        story.append(f"resumed: {result.messages[-1].to_text()}")
    for line in story:
        print(line)
    return story


if __name__ == "__main__":
    asyncio.run(main())
