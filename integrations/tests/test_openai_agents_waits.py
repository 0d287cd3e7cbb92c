"""OpenAI Agents SDK: a call Tidegate has not answered in time is told to the model, never the end of the run; steps count calls."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from agents import Agent, Runner, set_tracing_disabled
from agents.testing import ScriptedModel, assistant_message, function_call

from integrations.harness import TASK, rule, wait_pending
from tidegate.client import ClientSettings, MemoryTransport, SqliteProposals, Tidegate
from tidegate.client.scripted import ScriptedTidegate
from tidegate.integrations.openai_agents import governed_function_tool, settle_interruptions

set_tracing_disabled(True)  # offline: the SDK would otherwise try to export traces to its platform

NOT_YET = (
    "Tidegate has not decided this call yet (action openai-agents:ticket-1007:call-1); the proposal stands and may still be "
    "approved and run. Do not make this call again: it would be a second action."
)


def client(bus: MemoryTransport, tmp_path: Path, *, waits_s: float = 5) -> Tidegate:
    settings = ClientSettings(state_dir=tmp_path / "state", decision_timeout_s=waits_s, result_timeout_s=waits_s)
    return Tidegate(settings, transport=bus, task_id=TASK, proposals=SqliteProposals(tmp_path / "state" / "proposals.sqlite3"))


def tool_outputs(result: Any) -> list[str]:
    return [str(item.output) for item in result.new_items if item.type == "tool_call_output_item"]


def issue_refund(payee_id: str, amount_usd: float) -> str:
    """Refund a customer."""
    raise AssertionError("run by Tidegate's executor (scripted here), never by the agent")


def tag_ticket(ticket_id: str, tags: list[str]) -> str:
    """Tag a helpdesk ticket."""
    raise AssertionError("run by Tidegate's executor (scripted here), never by the agent")


async def test_a_call_whose_result_has_not_come_in_time_is_told_not_to_be_made_again_and_the_run_goes_on(
    bus: MemoryTransport, tmp_path: Path
) -> None:
    """The executor's give-up may come after the client's wait: the model hears so, and the run (its state) is kept."""
    payments_api = asyncio.Event()  # never answers while the agent waits

    async def refund(args: dict[str, Any]) -> dict[str, Any]:
        await payments_api.wait()
        return {"value": "refunded"}

    model = ScriptedModel(
        [[function_call("issue_refund", {"payee_id": "cus_1", "amount_usd": 60.0}, call_id="call-1")], [assistant_message("done")]]
    )
    async with ScriptedTidegate(bus, rule, tools={"issue_refund": refund}) as governance, client(bus, tmp_path, waits_s=0.2) as tg:
        agent = Agent(name="support", model=model, tools=[governed_function_tool(tg, issue_refund, serve=False)])
        result = await Runner.run(agent, "refund 60")
        payments_api.set()
    assert tool_outputs(result) == [NOT_YET]
    assert result.final_output == "done"
    assert [p.action_id for p in governance.proposals] == ["openai-agents:ticket-1007:call-1"]  # proposed once, followed after


async def test_each_call_of_a_conversation_takes_one_step_though_the_sdk_proposes_it_twice(bus: MemoryTransport, tmp_path: Path) -> None:
    """`needs_approval` and the tool both propose each call: the audit's steps read 1, 2, not 1, 3."""
    calls = [function_call("tag_ticket", {"ticket_id": f"T-{n}", "tags": ["vip"]}, call_id=f"call-{n}") for n in (1, 2)]
    model = ScriptedModel([[calls[0]], [calls[1]], [assistant_message("done")]])
    tagged = {"tag_ticket": lambda args: {"value": f"tagged {args['ticket_id']}"}}
    async with ScriptedTidegate(bus, rule, tools=tagged) as governance, client(bus, tmp_path) as tg:
        agent = Agent(name="support", model=model, tools=[governed_function_tool(tg, tag_ticket, serve=False)])
        result = await Runner.run(agent, "tag both")
    assert tool_outputs(result) == ["tagged T-1", "tagged T-2"]
    assert [(p.action_id.rsplit(":", 1)[-1], p.step) for p in governance.proposals] == [("call-1", 1), ("call-2", 2)]


async def test_an_interruption_whose_granted_call_still_runs_stays_and_settles_once_its_result_came(
    bus: MemoryTransport, tmp_path: Path
) -> None:
    payments_api = asyncio.Event()

    async def refund(args: dict[str, Any]) -> dict[str, Any]:
        await payments_api.wait()
        return {"value": f"refunded {args['amount_usd']:.2f}"}

    model = ScriptedModel(
        [[function_call("issue_refund", {"payee_id": "cus_1", "amount_usd": 900.0}, call_id="call-1")], [assistant_message("done")]]
    )
    async with ScriptedTidegate(bus, rule, tools={"issue_refund": refund}) as governance, client(bus, tmp_path) as tg:
        agent = Agent(name="support", model=model, tools=[governed_function_tool(tg, issue_refund, serve=False)])
        state = (await Runner.run(agent, "refund 900")).to_state()
        await governance.approve((await wait_pending(governance)), "fin@acme.example")
        assert not await settle_interruptions(tg, state, timeout_s=0.2)  # granted, running: neither raised nor waited out
        payments_api.set()
        assert await settle_interruptions(tg, state)
        result = await Runner.run(agent, state)
    assert tool_outputs(result) == ["refunded 900.00"]


async def test_an_escalation_that_comes_after_needs_approval_stopped_waiting_is_told_and_the_run_goes_on(
    bus: MemoryTransport, tmp_path: Path
) -> None:
    """The policy slow (a restart, a backlog): `needs_approval` met no decision in time, then the tool met the escalation. The
    run ended with "approved in the SDK while approval … still waits", which nobody had done, and no state to resume."""
    model = ScriptedModel(
        [[function_call("issue_refund", {"payee_id": "cus_1", "amount_usd": 900.0}, call_id="call-1")], [assistant_message("done")]]
    )
    scripted = ScriptedTidegate(bus, rule, tools={"issue_refund": lambda args: {"value": "refunded"}})  # decides once entered
    async with client(bus, tmp_path, waits_s=2.0) as tg:
        agent = Agent(name="support", model=model, tools=[governed_function_tool(tg, issue_refund, serve=False)])
        run = asyncio.create_task(Runner.run(agent, "refund 900"))
        await asyncio.sleep(3.0)  # `needs_approval` gave up at 2 s; the tool waits on the same proposal until 4 s
        async with scripted:  # the policy is back and escalates it
            result = await asyncio.wait_for(run, 10)
    [said] = tool_outputs(result)
    assert said.startswith("Tidegate escalated this call to a human (approval ap-")
    assert "Do not make this call again" in said
    assert result.final_output == "done"
    assert [p.action_id for p in scripted.proposals] == ["openai-agents:ticket-1007:call-1"]  # proposed once
    assert scripted.calls == {}  # nothing ran
