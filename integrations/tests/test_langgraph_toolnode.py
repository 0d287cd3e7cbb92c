"""A hand-built `StateGraph` whose `ToolNode` sends each call through `TidegateMiddleware.awrap_tool_call`.

Finding integrator4 #8: the route works, but `before_agent` (the checkpointer check) runs only under `create_agent`;
a graph of one's own without a checkpointer proposed, paused, and a human's grant then could not be resumed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from langchain_core.messages import ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from langgraph.types import Command

from integrations.harness import SideEffects, wait_pending
from integrations.tests.test_langgraph import CONFIG, ScriptedModel, script, tools_for
from tidegate.client import Tidegate
from tidegate.client.scripted import ScriptedTidegate
from tidegate.integrations.langgraph import TidegateMiddleware


def graph_of_my_own(client: Tidegate, effects: SideEffects, model: ScriptedModel) -> StateGraph[Any]:
    """Model node → ToolNode → model, as existing LangGraph agents are built (no `create_agent`)."""
    tools = tools_for(effects)

    async def call_model(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("model", call_model)
    builder.add_node("tools", ToolNode(tools, awrap_tool_call=TidegateMiddleware(client, serve=tools).awrap_tool_call))
    builder.add_edge(START, "model")
    builder.add_conditional_edges("model", tools_condition)
    builder.add_edge("tools", "model")
    return builder


async def test_a_toolnode_of_a_graph_of_ones_own_pauses_for_a_human_and_runs_once_on_resume(
    make_client: Callable[[], Tidegate], governance: ScriptedTidegate, effects: SideEffects
) -> None:
    async with make_client() as client:
        graph = graph_of_my_own(client, effects, script("issue_refund", {"payee_id": "cus_1", "amount_usd": 950.0})).compile(
            checkpointer=InMemorySaver()
        )
        paused = await graph.ainvoke({"messages": [("user", "refund 950")]}, CONFIG)
        [pause] = paused["__interrupt__"]
        assert pause.value["tidegate"]["reasons"] == ["needs_human_approval"]
        assert effects.calls == []
        await governance.approve(await wait_pending(governance))
        state = await graph.ainvoke(Command(resume={pause.id: True}), CONFIG)
    [message] = [m for m in state["messages"] if isinstance(m, ToolMessage)]
    assert (message.status, message.content) == ("success", "refunded 950.00 to cus_1")
    assert effects.of("issue_refund") == [{"payee_id": "cus_1", "amount_usd": 950.0}]
    assert [p.action_id for p in governance.proposals] == ["langgraph:thread-1:call-1"]  # the re-run followed the first proposal


async def test_a_toolnode_graph_without_a_checkpointer_is_refused_before_anything_is_proposed(
    make_client: Callable[[], Tidegate], governance: ScriptedTidegate, effects: SideEffects
) -> None:
    async with make_client() as client:
        graph = graph_of_my_own(client, effects, script("issue_refund", {"payee_id": "cus_1", "amount_usd": 950.0})).compile()
        with pytest.raises(ValueError, match=r"needs a checkpointed thread.*compile\(\).*ToolNode"):
            await graph.ainvoke({"messages": [("user", "refund 950")]}, CONFIG)  # a thread id, but nothing to resume it from
    assert governance.proposals == []  # no approver is asked to grant what could never run
    assert effects.calls == []
