"""A LangGraph agent governed by Tidegate, offline: a scripted model asks for a 900 USD refund; a human approves.

PYTHONPATH=. .venv-integrations/bin/python examples/integrations/langgraph_agent.py

`refund_customer` is the agent's own function, not a catalog tool Tidegate's executor runs: this process serves
it (`serve=`). Against a running deployment (docs/integrations.md, "Serving your own tools"):
1. `export TIDEGATE_EXTRA_TOOLS_DIRS='["'$PWD'/examples/integrations/catalog"]'` (or copy its YAML into `catalog/tools/`),
   `tidegate keys add-tool refund_customer`,
   `tidegate infra up`, `tidegate topics ensure`, restart the services (`tidegate down && tidegate up -d`);
2. in `main`, replace `_, tidegate, client = offline(...)` and `async with tidegate, client:` by
   `async with Tidegate() as client:` (its TIDEGATE_CLIENT_* settings, TOOL_KEYS_DIR included), and the
   `tidegate.approve(...)` line by a human approving on the approver page: the resume waits for their decision
   while this process keeps serving `refund_customer`; and the scripted payee `cus_1` by one the tenant pays
   (`cus_1001`, `tidegate tenant show acme`): a new payee is denied `new_payee_blocked`, never escalated.
"""

from __future__ import annotations

import asyncio
from typing import Any

from _offline import offline
from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from tidegate.integrations.langgraph import TidegateMiddleware


class ScriptedModel(GenericFakeChatModel):
    def bind_tools(self, tools: Any, **kwargs: Any) -> ScriptedModel:
        return self


@tool
def refund_customer(payee_id: str, amount_usd: float) -> str:
    """Refund a customer."""
    return f"refunded {amount_usd:.2f} to {payee_id}"


async def main() -> list[str]:
    story: list[str] = []
    _, tidegate, client = offline(("refund_customer",))
    model = ScriptedModel(
        messages=iter(
            [
                AIMessage("", tool_calls=[{"name": "refund_customer", "args": {"payee_id": "cus_1", "amount_usd": 900.0}, "id": "c1"}]),
                AIMessage("Refunded."),
            ]
        )
    )
    async with tidegate, client:
        # The three lines that govern an existing agent: a client, the middleware, a checkpointer.
        # (In production a durable one, e.g. langgraph-checkpoint-sqlite's AsyncSqliteSaver: a worker restarted while a
        # human decides resumes the thread from it; docs/integrations.md, LangGraph.)
        agent = create_agent(
            model, tools=[refund_customer], middleware=[TidegateMiddleware(client, serve=[refund_customer])], checkpointer=InMemorySaver()
        )
        config = {"configurable": {"thread_id": "ticket-1007"}}
        paused = await agent.ainvoke({"messages": [("user", "refund order O-1 (900 USD)")]}, config)
        request = paused["__interrupt__"][0].value["tidegate"]
        story.append(f"paused: {request['tool']} needs a human ({', '.join(request['reasons'])}), approval {request['approval_id']}")
        await tidegate.approve(request["approval_id"], "bob@acme.example")  # in real life: the approver page or API
        # One resume value per pending interrupt: a turn with several escalated calls pauses with one interrupt each.
        done = await agent.ainvoke(Command(resume={i.id: True for i in paused["__interrupt__"]}), config)
        story.append(f"resumed: {done['messages'][-2].content} → {done['messages'][-1].content}")
    for line in story:
        print(line)
    return story


if __name__ == "__main__":
    asyncio.run(main())
