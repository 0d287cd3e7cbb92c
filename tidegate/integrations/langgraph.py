"""LangGraph / LangChain agents: every tool call is a Tidegate proposal; an escalation is a LangGraph `interrupt`.

    agent = create_agent(model, tools, middleware=[TidegateMiddleware(client, serve=tools)], checkpointer=saver)
    state = await agent.ainvoke({"messages": [...]}, config)      # escalations → state["__interrupt__"]
    state = await agent.ainvoke(Command(resume={i.id: True for i in state["__interrupt__"]}), config)

A turn with several escalated calls (a model calling tools in parallel) pauses with one interrupt per
call, and LangGraph then wants the resume value keyed by interrupt id (`Command(resume=True)` is refused
when more than one is pending); the form above works for one interrupt or many. A call to a tool the agent
was not given gets LangChain's own "not a valid tool" error and is never proposed.

The action id is `langgraph:<thread id>:<tool-call id>`, so the node's re-run on resume (and a restarted
process, with `SqliteProposals`) follows the first proposal instead of proposing again, while another
thread whose model numbers its calls the same way ("call_0") proposes its own. Without a thread
(no checkpointer, so no resume) each call gets a fresh action id. What `Command(resume=...)`
carries is only a wake-up: the decision is Tidegate's (signed approval, bound to the exact args).
When a human edited the args, the `ToolMessage` tells the model the args that ran (and its artifact carries `edited_args`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from langchain.agents.middleware import AgentMiddleware
from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool
from langgraph.types import Command, interrupt

from tidegate.client import Escalated, Executed, Tidegate
from tidegate.integrations._common import escalation_payload, outcome_text, serve_function

__all__ = ["TidegateMiddleware"]


class TidegateMiddleware(AgentMiddleware):  # type: ignore[misc]
    """Agent middleware that sends each tool call through Tidegate instead of running it directly.

    Args:
        client: A started `Tidegate` client.
        serve: Tools whose functions this process serves as governed (`topic`) tools; the others are
            catalog tools the executor runs itself.
        decision_timeout_s: After a resume, how long to wait for Tidegate's answer (None: as long as it takes).
    """

    def __init__(self, client: Tidegate, *, serve: Sequence[BaseTool] = (), decision_timeout_s: float | None = None) -> None:
        super().__init__()
        self.client = client
        self.decision_timeout_s = decision_timeout_s
        for tool in serve:
            serve_function(client, tool.name, _runner(tool))

    async def awrap_tool_call(
        self, request: Any, handler: Callable[[Any], Awaitable[ToolMessage | Command[Any]]]
    ) -> ToolMessage | Command[Any]:
        """Propose the call; pause the graph for a human when Tidegate escalates; answer with what really happened."""
        call = request.tool_call
        if request.tool is None:  # not one of the agent's tools: the framework's own "not a valid tool" error, nothing proposed
            return await handler(request)
        config = getattr(request.runtime, "config", None) or {}
        thread = (config.get("configurable") or {}).get("thread_id")
        action_id = f"langgraph:{thread}:{call['id']}" if thread is not None and call["id"] else None
        outcome = await self.client.propose(call["name"], dict(call["args"]), action_id=action_id, rationale="LangGraph tool call")
        if isinstance(outcome, Escalated):
            interrupt(
                escalation_payload(outcome.action_id, outcome.approval_id, outcome.codes, outcome.position, call["name"], call["args"])
            )
            outcome = await outcome.decision(self.decision_timeout_s)
        return ToolMessage(
            content=outcome_text(outcome),
            tool_call_id=call["id"],
            name=call["name"],
            status="success" if isinstance(outcome, Executed) else "error",
            artifact={
                "tidegate": type(outcome).__name__.lower(),
                "action_id": outcome.action_id,
                "edited_args": outcome.edited_args if isinstance(outcome, Executed) else None,
            },
        )


def _runner(tool: BaseTool) -> Callable[[dict[str, Any]], Awaitable[Any]]:
    async def run(args: dict[str, Any]) -> Any:
        return await tool.ainvoke(args)

    return run
