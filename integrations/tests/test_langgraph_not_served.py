"""LangGraph with `TidegateMiddleware(client, serve=tools)` in a process whose serve loop the bus refuses (the tool's login
not found, so it tried as `agent`): the agent's refund is never proposed, and `ainvoke` raises why.

Before, the serve loop's `NotServed` went to the log while the middleware proposed the refund: it was escalated, a person
approved it, and it ended `unknown` with nobody to run it (the integrator3 probe).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver

from integrations.harness import TOOLS, SideEffects, rule
from integrations.tests.test_langgraph import ScriptedModel
from tidegate.client import ClientSettings, Tidegate
from tidegate.client.governed import NotServed
from tidegate.client.memory import MemoryTransport
from tidegate.client.scripted import ScriptedTidegate
from tidegate.client.transport import Position, TopicsMissing
from tidegate.integrations.langgraph import TidegateMiddleware


class RefusingBus(MemoryTransport):
    """The broker as the `agent` login sees it: no tool's requests topic may be read."""

    async def end(self, topics: tuple[str, ...]) -> Position:
        if any(t.startswith("tools.") for t in topics):
            raise TopicsMissing(f"topics missing on the broker: {topics}")
        return await super().end(topics)


async def test_a_refund_whose_serve_loop_the_bus_refused_is_never_proposed_and_ainvoke_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, effects: SideEffects
) -> None:
    monkeypatch.setattr(importlib.import_module("tidegate.client.governed"), "CREDENTIALS_DIR", tmp_path)  # no tool login
    for name in ("TIDEGATE_KAFKA_CREDENTIALS_DIR", "TIDEGATE_INFRA_DIR"):
        monkeypatch.delenv(name, raising=False)
    bus = RefusingBus()

    @tool
    def issue_refund(payee_id: str, amount_usd: float) -> str:
        """Refund a customer."""
        effects.calls.append(("issue_refund", {"payee_id": payee_id, "amount_usd": amount_usd}))
        return "refunded"

    model = ScriptedModel(
        messages=iter(
            [AIMessage("", tool_calls=[{"name": "issue_refund", "args": {"payee_id": "cus_1001", "amount_usd": 900.0}, "id": "c1"}])]
        )
    )
    async with ScriptedTidegate(bus, rule, topic_tools=TOOLS) as governance:
        client = Tidegate(ClientSettings(sasl_username="agent", state_dir=tmp_path / "state", decision_timeout_s=5), transport=bus)
        async with client:
            agent = create_agent(
                model, tools=[issue_refund], middleware=[TidegateMiddleware(client, serve=[issue_refund])], checkpointer=InMemorySaver()
            )
            with pytest.raises(NotServed, match=r"tool issue_refund is not served: SASL user 'agent' may not read"):
                await agent.ainvoke({"messages": [("user", "refund O-1, 900 USD")]}, {"configurable": {"thread_id": "t-1"}})
        assert governance.proposals == []  # no person asked to approve a call nobody serves
    assert effects.calls == []
