"""pydantic-ai: a call Tidegate has not answered in time is the tool's return, never the end of the run."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from pydantic_ai import Agent, DeferredToolRequests
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from integrations.harness import TASK, rule, wait_pending
from tidegate.client import ClientSettings, MemoryTransport, SqliteProposals, Tidegate
from tidegate.client.scripted import ScriptedTidegate
from tidegate.integrations.pydantic_ai import TidegateCapability, tidegate_results


def client(bus: MemoryTransport, tmp_path: Path, *, waits_s: float) -> Tidegate:
    settings = ClientSettings(state_dir=tmp_path / "state", decision_timeout_s=waits_s, result_timeout_s=waits_s)
    return Tidegate(settings, transport=bus, task_id=TASK, proposals=SqliteProposals(tmp_path / "state" / "proposals.sqlite3"))


def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    returned = [p for m in messages for p in getattr(m, "parts", []) if isinstance(p, ToolReturnPart)]
    if returned:
        return ModelResponse(parts=[TextPart(f"told: {returned[-1].content}")])
    return ModelResponse(parts=[ToolCallPart("issue_refund", {"payee_id": "cus_1", "amount_usd": 60.0}, tool_call_id="call-1")])


def issue_refund(payee_id: str, amount_usd: float) -> str:
    """Refund a customer."""
    raise AssertionError("run by Tidegate's executor (scripted here), never by the agent")


async def test_a_call_whose_result_has_not_come_in_time_is_told_not_to_be_made_again_and_the_run_goes_on(
    bus: MemoryTransport, tmp_path: Path
) -> None:
    """The executor's give-up may come after the client's wait: the model hears so, and the run (its history) is kept."""
    payments_api = asyncio.Event()  # never answers while the agent waits

    async def refund(args: dict[str, Any]) -> dict[str, Any]:
        await payments_api.wait()
        return {"value": "refunded"}

    async with ScriptedTidegate(bus, rule, tools={"issue_refund": refund}) as governance, client(bus, tmp_path, waits_s=0.2) as tg:
        agent = Agent(
            FunctionModel(respond), tools=[issue_refund], output_type=[str, DeferredToolRequests], capabilities=[TidegateCapability(tg)]
        )
        result = await agent.run("refund 60")
        payments_api.set()
    [proposal] = governance.proposals
    assert result.output == (
        f"told: Tidegate has not decided this call yet (action {proposal.action_id}); the proposal stands and may still be "
        "approved and run. Do not make this call again: it would be a second action."
    )


async def test_deferred_results_wait_for_a_granted_calls_result_and_come_once_it_came(bus: MemoryTransport, tmp_path: Path) -> None:
    payments_api = asyncio.Event()

    async def refund(args: dict[str, Any]) -> dict[str, Any]:
        await payments_api.wait()
        return {"value": f"refunded {args['amount_usd']:.2f}"}

    def refund_900(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        returned = [p for m in messages for p in getattr(m, "parts", []) if isinstance(p, ToolReturnPart)]
        if returned:
            return ModelResponse(parts=[TextPart(f"told: {returned[-1].content}")])
        return ModelResponse(parts=[ToolCallPart("issue_refund", {"payee_id": "cus_1", "amount_usd": 900.0}, tool_call_id="call-1")])

    async with ScriptedTidegate(bus, rule, tools={"issue_refund": refund}) as governance, client(bus, tmp_path, waits_s=5) as tg:
        agent = Agent(
            FunctionModel(refund_900), tools=[issue_refund], output_type=[str, DeferredToolRequests], capabilities=[TidegateCapability(tg)]
        )
        paused = await agent.run("refund 900")
        assert isinstance(paused.output, DeferredToolRequests)
        await governance.approve((await wait_pending(governance)), "fin@acme.example")
        assert await tidegate_results(tg, paused.output, timeout_s=0.2) is None  # granted, running: neither raised nor waited out
        payments_api.set()
        results = await tidegate_results(tg, paused.output)
        assert results is not None
        result = await agent.run(message_history=paused.all_messages(), deferred_tool_results=results)
    assert result.output == "told: refunded 900.00"
