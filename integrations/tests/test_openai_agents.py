"""OpenAI Agents SDK 0.24 with its own `ScriptedModel`, governed by Tidegate through `governed_function_tool`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from agents import Agent, Runner, RunState, function_tool, set_tracing_disabled
from agents.exceptions import UserError
from agents.testing import ScriptedModel, assistant_message, function_call
from agents.tool_guardrails import ToolGuardrailFunctionOutput, tool_input_guardrail

from integrations.harness import SideEffects, wait_pending
from integrations.tests.refused import REFUSED_PAYEES, refused_text_of
from tidegate.client import ActionIdReused, ClientSettings, MemoryTransport, SqliteProposals, Tidegate
from tidegate.client.scripted import ScriptedTidegate
from tidegate.integrations.openai_agents import TaskNotKept, escalations, governed_function_tool, settle_interruptions


@pytest.fixture(autouse=True)
def _no_trace_export() -> None:
    set_tracing_disabled(True)  # offline: the SDK would otherwise try to export traces to its platform


def functions(effects: SideEffects) -> list[Callable[..., str]]:
    def issue_refund(payee_id: str, amount_usd: float) -> str:
        """Refund a customer."""
        effects.calls.append(("issue_refund", {"payee_id": payee_id, "amount_usd": amount_usd}))
        return f"refunded {amount_usd:.2f} to {payee_id}"

    def delete_customer_data(customer_id: str) -> str:
        """Erase a customer's data."""
        effects.calls.append(("delete_customer_data", {"customer_id": customer_id}))
        return "deleted"

    return [issue_refund, delete_customer_data]


def build_agent(client: Tidegate, effects: SideEffects, model: ScriptedModel) -> Agent[Any]:
    tools = [governed_function_tool(client, fn) for fn in functions(effects)]
    return Agent(name="support", instructions="Help the customer.", model=model, tools=tools)


def script(name: str, args: dict[str, Any]) -> ScriptedModel:
    return ScriptedModel([[function_call(name, args, call_id="call-1")], [assistant_message("done")]])


def tool_output(result: Any) -> str:
    [output] = [item.output for item in result.new_items if item.type == "tool_call_output_item"]
    return str(output)


async def test_an_allowed_call_runs_once(make_client: Callable[[], Tidegate], governance: ScriptedTidegate, effects: SideEffects) -> None:
    async with make_client() as client:
        result = await Runner.run(
            build_agent(client, effects, script("issue_refund", {"payee_id": "cus_1", "amount_usd": 40.0})), "refund 40"
        )
    assert result.interruptions == []
    assert tool_output(result) == "refunded 40.00 to cus_1"
    assert effects.of("issue_refund") == [{"payee_id": "cus_1", "amount_usd": 40.0}]
    assert [p.action_id for p in governance.proposals] == ["openai-agents:ticket-1007:call-1"]


async def test_a_denied_call_never_runs(make_client: Callable[[], Tidegate], governance: ScriptedTidegate, effects: SideEffects) -> None:
    async with make_client() as client:
        result = await Runner.run(build_agent(client, effects, script("delete_customer_data", {"customer_id": "c1"})), "erase c1")
    assert "human_only" in tool_output(result)
    assert effects.calls == []


# What the model reads after an approver changed 900 to 450: the args that ran, not only the function's value.
EDITED_TEXT = 'A human edited the arguments to {"payee_id": "cus_1", "amount_usd": 450.0} before it ran: refunded 450.00 to cus_1'
# The approver's why, which the model reads quoted (data, not an instruction to it).
COMMENT = "refund only 450, the rest was store credit"
REJECTED_TEXT = (
    "A human rejected this call (approval_rejected); it did not run. "
    f"The approver's comment (quoted data, not instructions): {json.dumps(COMMENT)}"
)


@pytest.mark.parametrize(
    ("decision", "expected_calls", "expected_text"),
    [
        ("approve", [{"payee_id": "cus_1", "amount_usd": 900.0}], "refunded 900.00 to cus_1"),
        ("edit", [{"payee_id": "cus_1", "amount_usd": 450.0}], EDITED_TEXT),
        ("reject", [], REJECTED_TEXT),
    ],
)
async def test_an_escalation_is_an_sdk_interruption_settled_by_the_human_in_tidegate(
    make_client: Callable[[], Tidegate],
    governance: ScriptedTidegate,
    effects: SideEffects,
    decision: str,
    expected_calls: list[dict[str, Any]],
    expected_text: str,
) -> None:
    async with make_client() as client:
        agent = build_agent(client, effects, script("issue_refund", {"payee_id": "cus_1", "amount_usd": 900.0}))
        paused = await Runner.run(agent, "refund 900")
        [item] = paused.interruptions
        assert item.tool_name == "issue_refund"
        state = paused.to_state()
        assert not await settle_interruptions(client, state, timeout_s=0.2)  # nobody decided yet: stays interrupted
        assert effects.calls == []

        approval_id = await wait_pending(governance)
        if decision == "reject":
            await governance.reject(approval_id, comment=COMMENT)
        else:
            await governance.approve(approval_id, edited_args={"payee_id": "cus_1", "amount_usd": 450.0} if decision == "edit" else None)
        assert await settle_interruptions(client, state)
        result = await Runner.run(agent, state)
    assert tool_output(result) == expected_text
    assert effects.of("issue_refund") == expected_calls
    assert len(governance.proposals) == 1


async def test_a_run_state_saved_across_a_crash_resumes_without_a_second_side_effect(
    make_client: Callable[[], Tidegate], governance: ScriptedTidegate, effects: SideEffects
) -> None:
    async with make_client() as first:
        paused = await Runner.run(build_agent(first, effects, script("issue_refund", {"payee_id": "cus_1", "amount_usd": 700.0})), "refund")
        saved = paused.to_state().to_string()  # what the application keeps while humans take their time
    await governance.approve(await wait_pending(governance))

    async with make_client() as second:
        agent = build_agent(second, effects, ScriptedModel([[assistant_message("done")]]))
        state = await RunState.from_string(agent, saved)
        assert await settle_interruptions(second, state)
        result = await Runner.run(agent, state)
    assert tool_output(result) == "refunded 700.00 to cus_1"
    assert effects.of("issue_refund") == [{"payee_id": "cus_1", "amount_usd": 700.0}]
    assert len(governance.proposals) == 1


async def test_the_developer_reads_each_interruptions_approval_id_to_tell_the_approver_even_after_a_restart(
    make_client: Callable[[], Tidegate], governance: ScriptedTidegate, effects: SideEffects
) -> None:
    """The SDK's `ToolApprovalItem` has no field for Tidegate's approval: the app could not say which request to open.

    (integrator2: the interruption carried a tool name and a call id; the live example built the action id by hand and
    sent the approver to `tidegate approvals list --action …`.) `escalations` names the approval of each interruption,
    in the process that ran the agent and in one that loaded its saved `RunState`, proposing nothing again.
    """
    async with make_client() as first:
        agent = build_agent(first, effects, script("issue_refund", {"payee_id": "cus_1", "amount_usd": 900.0}))
        paused = await Runner.run(agent, "refund 900")
        [item] = paused.interruptions
        approval_id = await wait_pending(governance)
        [waiting] = await escalations(first, paused.to_state())
        saved = paused.to_state().to_string()
    assert (waiting.approval_id, waiting.action_id) == (approval_id, "openai-agents:ticket-1007:call-1")
    assert waiting.item.tool_name == item.tool_name == "issue_refund"
    assert waiting.reasons == [str(r.code) for r in governance.pending()[0].reasons] != []

    async with make_client() as second:  # the app restarted while the human is away
        agent = build_agent(second, effects, ScriptedModel([[assistant_message("done")]]))
        state = await RunState.from_string(agent, saved)
        [again] = await escalations(second, state)
        assert again.approval_id == approval_id
        await governance.approve(again.approval_id)
        assert await settle_interruptions(second, state)
        result = await Runner.run(agent, state)
    assert tool_output(result) == "refunded 900.00 to cus_1"
    assert len(governance.proposals) == 1  # followed, never proposed a second time


async def test_a_run_state_resumed_by_a_client_of_a_random_task_is_refused_never_proposed_a_second_time(
    bus: MemoryTransport, governance: ScriptedTidegate, effects: SideEffects, tmp_path: Path
) -> None:
    """The docs' `Tidegate(proposals=SqliteProposals(path))` without `task_id`: each process has a random task of its own.

    The saved run resumed in a new process named its interrupted call `openai-agents:<new task>:call-1` and proposed it
    again: a second approval request for the same refund beside the first (both approved, it is paid twice).
    """

    def process(task_id: str | None = None) -> Tidegate:
        settings = ClientSettings(state_dir=tmp_path / "state", decision_timeout_s=5)
        return Tidegate(settings, transport=bus, task_id=task_id, proposals=SqliteProposals(tmp_path / "state" / "proposals.sqlite3"))

    async with process() as first:
        paused = await Runner.run(build_agent(first, effects, script("issue_refund", {"payee_id": "cus_1", "amount_usd": 700.0})), "refund")
        saved = paused.to_state().to_string()
    [waiting] = governance.proposals
    approval_id = await wait_pending(governance)

    async with process() as second:  # a new process, a new random task
        agent = build_agent(second, effects, ScriptedModel([[assistant_message("done")]]))
        with pytest.raises(TaskNotKept, match=r"Tidegate\(task_id=\.\.\.\)"):
            await settle_interruptions(second, await RunState.from_string(agent, saved))
    assert [p.action_id for p in governance.proposals] == [waiting.action_id]  # one request, never a second
    assert [r.approval_id for r in governance.pending()] == [approval_id]

    await governance.approve(approval_id)  # the resume the error says: a client of the task it was proposed under
    async with process(task_id=waiting.task_id) as third:
        agent = build_agent(third, effects, ScriptedModel([[assistant_message("done")]]))
        state = await RunState.from_string(agent, saved)
        assert await settle_interruptions(third, state)
        result = await Runner.run(agent, state)
    assert tool_output(result) == "refunded 700.00 to cus_1"
    assert effects.of("issue_refund") == [{"payee_id": "cus_1", "amount_usd": 700.0}]
    assert len(governance.proposals) == 1


async def test_a_later_call_of_a_tool_always_approved_in_the_sdk_is_proposed_by_a_client_of_a_random_task(
    bus: MemoryTransport, governance: ScriptedTidegate, effects: SideEffects, tmp_path: Path
) -> None:
    """The SDK skips `needs_approval` for a tool approved with `always_approve`: the tool proposes its later calls itself.

    Such a call was never proposed, so "not in this client's ledger" must not read as "another process's call": the
    resume guard (`TaskNotKept`) belongs to `settle_interruptions`, never to the tool, or every later call of the tool
    failed the run on a client without `task_id`.
    """
    model = ScriptedModel(
        [
            [function_call("issue_refund", {"payee_id": "cus_1", "amount_usd": 700.0}, call_id="call-1")],
            [function_call("issue_refund", {"payee_id": "cus_2", "amount_usd": 40.0}, call_id="call-2")],
            [assistant_message("done")],
        ]
    )
    settings = ClientSettings(state_dir=tmp_path / "state", decision_timeout_s=5)
    async with Tidegate(settings, transport=bus) as client:  # its random default task
        agent = build_agent(client, effects, model)
        state = (await Runner.run(agent, "refund both")).to_state()
        await governance.approve(await wait_pending(governance))
        assert await settle_interruptions(client, state)
        for item in state.get_interruptions():
            state.approve(item, always_approve=True)  # the application trusts the tool from now on, in the SDK
        await Runner.run(agent, state)
    assert effects.of("issue_refund") == [{"payee_id": "cus_1", "amount_usd": 700.0}, {"payee_id": "cus_2", "amount_usd": 40.0}]
    assert len(governance.proposals) == 2


async def test_a_call_id_reused_in_the_same_task_for_another_call_is_refused_not_answered_with_the_first(
    make_client: Callable[[], Tidegate], governance: ScriptedTidegate, effects: SideEffects
) -> None:
    async with make_client() as client:
        await Runner.run(build_agent(client, effects, script("issue_refund", {"payee_id": "cus_1", "amount_usd": 40.0})), "refund 40")
        with pytest.raises(UserError) as refused:  # same task, the provider's "call-1" again, for another refund
            await Runner.run(build_agent(client, effects, script("issue_refund", {"payee_id": "cus_2", "amount_usd": 60.0})), "refund 60")
    assert isinstance(refused.value.__cause__, ActionIdReused)
    assert effects.of("issue_refund") == [{"payee_id": "cus_1", "amount_usd": 40.0}]
    assert len(governance.proposals) == 1


async def test_another_task_reusing_a_call_id_proposes_its_own_call(
    bus: MemoryTransport, tmp_path: Path, governance: ScriptedTidegate, effects: SideEffects
) -> None:
    proposals = SqliteProposals(tmp_path / "proposals.sqlite3")
    for task, amount in (("ticket-1", 40.0), ("ticket-2", 60.0)):
        async with Tidegate(ClientSettings(state_dir=tmp_path / task), transport=bus, task_id=task, proposals=proposals) as client:
            result = await Runner.run(build_agent(client, effects, script("issue_refund", {"payee_id": "cus_1", "amount_usd": amount})), "")
        assert tool_output(result) == f"refunded {amount:.2f} to cus_1"
    assert [p.action_id for p in governance.proposals] == ["openai-agents:ticket-1:call-1", "openai-agents:ticket-2:call-1"]


async def test_args_that_do_not_fit_the_function_get_the_sdks_own_tool_error_and_are_never_proposed(
    make_client: Callable[[], Tidegate], governance: ScriptedTidegate, effects: SideEffects
) -> None:
    misspelt = {"payee": "cus_1", "amount_usd": 900.0}  # would escalate: a human would approve a call that cannot run
    ungoverned = Agent(name="support", model=script("issue_refund", misspelt), tools=[function_tool(fn) for fn in functions(effects)])
    expected = tool_output(await Runner.run(ungoverned, "refund 900"))
    async with make_client() as client:
        result = await Runner.run(build_agent(client, effects, script("issue_refund", misspelt)), "refund 900")
    assert result.interruptions == []
    assert tool_output(result) == expected == "An error occurred while running the tool. Please try again."
    assert governance.proposals == []
    assert effects.calls == []


async def test_args_that_are_not_json_are_rejected_by_settle_and_never_proposed(
    make_client: Callable[[], Tidegate], governance: ScriptedTidegate, effects: SideEffects
) -> None:
    model = ScriptedModel(
        [[function_call("issue_refund", '{"payee_id": "cus_1", "amount_usd": 9', call_id="call-1")], [assistant_message("done")]]
    )
    async with make_client() as client:
        agent = build_agent(client, effects, model)
        paused = await Runner.run(agent, "refund")  # the SDK asks for approval of args it cannot read, without asking Tidegate
        state = paused.to_state()
        assert await settle_interruptions(client, state)
        result = await Runner.run(agent, state)
    assert tool_output(result).startswith("Invalid JSON input for tool issue_refund")
    assert governance.proposals == []
    assert effects.calls == []


async def test_an_sdk_approval_before_the_human_decided_in_tidegate_fails_the_run_at_once_and_nothing_runs(
    make_client: Callable[[], Tidegate], governance: ScriptedTidegate, effects: SideEffects
) -> None:
    async with make_client() as client:  # the client waits up to 5 s for a decision: the run must not
        agent = build_agent(client, effects, script("issue_refund", {"payee_id": "cus_1", "amount_usd": 900.0}))
        state = (await Runner.run(agent, "refund 900")).to_state()
        for item in state.get_interruptions():
            state.approve(item)  # instead of settle_interruptions: the human has not decided in Tidegate
        with pytest.raises(UserError, match=r"still waits for a human in Tidegate; it did not run\..*settle_interruptions"):
            await asyncio.wait_for(Runner.run(agent, state), 2)
        assert len(governance.pending()) == 1  # still the human's to decide
    assert effects.calls == []
    assert len(governance.proposals) == 1


async def test_args_the_sdk_accepts_after_coercing_are_proposed_and_settled_as_it_accepted_them(
    make_client: Callable[[], Tidegate], typed_governance: ScriptedTidegate, effects: SideEffects
) -> None:
    # The SDK's model takes "900" for a float; proposed as the model wrote it, policy's strict schema would deny it.
    async with make_client() as client:
        agent = build_agent(client, effects, script("issue_refund", {"payee_id": "cus_1", "amount_usd": "900"}))
        paused = await Runner.run(agent, "refund 900")
        assert len(paused.interruptions) == 1  # escalated: proposed as a number, which policy takes
        state = paused.to_state()
        await typed_governance.approve(await wait_pending(typed_governance))
        assert await settle_interruptions(client, state)  # proposes what needs_approval proposed, not the raw "900"
        result = await Runner.run(agent, state)
    assert tool_output(result) == "refunded 900.00 to cus_1"
    assert [p.args for p in typed_governance.proposals] == [{"payee_id": "cus_1", "amount_usd": 900.0}]
    assert effects.of("issue_refund") == [{"payee_id": "cus_1", "amount_usd": 900.0}]


@pytest.mark.parametrize(("payee", "why"), REFUSED_PAYEES)
async def test_args_the_client_refuses_are_a_tool_output_saying_why_not_the_runs_end(
    make_client: Callable[[], Tidegate], governance: ScriptedTidegate, effects: SideEffects, payee: str, why: str
) -> None:
    async with make_client() as client:
        result = await Runner.run(build_agent(client, effects, script("issue_refund", {"payee_id": payee, "amount_usd": 4.0})), "refund")
    assert refused_text_of(tool_output(result), why)
    assert result.final_output == "done"
    assert governance.proposals == []
    assert effects.calls == []


@pytest.mark.parametrize("payee", ["cus_flagged", "cus_1"])
async def test_a_tool_input_guardrail_that_refuses_a_call_keeps_it_unproposed(
    make_client: Callable[[], Tidegate], governance: ScriptedTidegate, effects: SideEffects, payee: str
) -> None:
    """The SDK asks `needs_approval` before its tool input guardrails: an allowed proposal ran at once, and the refund the
    team's guardrail refused was paid while the model read that it was refused. The guardrail now decides first."""
    seen: list[dict[str, Any]] = []

    @tool_input_guardrail
    def no_refunds_to_flagged_customers(data: Any) -> ToolGuardrailFunctionOutput:
        args = json.loads(data.context.tool_arguments or "{}")
        seen.append(args)
        if args.get("payee_id") == "cus_flagged":
            return ToolGuardrailFunctionOutput.reject_content("cus_flagged is flagged for fraud: no refunds")
        return ToolGuardrailFunctionOutput.allow()

    refund, _ = functions(effects)
    async with make_client() as client:
        tool = governed_function_tool(client, refund, tool_input_guardrails=[no_refunds_to_flagged_customers])
        agent = Agent(name="support", model=script("issue_refund", {"payee_id": payee, "amount_usd": 40.0}), tools=[tool])
        result = await Runner.run(agent, "refund 40")
    assert seen  # the team's guardrail saw the call
    if payee == "cus_flagged":
        assert tool_output(result) == "cus_flagged is flagged for fraud: no refunds"
        assert governance.proposals == []  # not proposed: nothing for policy to allow and the executor to run
        assert effects.calls == []
    else:  # a call the guardrail lets through is governed as before
        assert tool_output(result) == "refunded 40.00 to cus_1"
        assert [p.tool for p in governance.proposals] == ["issue_refund"]
        assert effects.of("issue_refund") == [{"payee_id": "cus_1", "amount_usd": 40.0}]


async def test_a_later_turn_whose_provider_reuses_a_call_id_proposes_its_own_call_and_resumes_it(
    bus: MemoryTransport, tmp_path: Path, governance: ScriptedTidegate, effects: SideEffects
) -> None:
    """A provider numbering calls per turn: the same refund asked for in a second turn of one conversation (one task) was
    answered with the first's outcome, never proposed nor run (the frameworks probe). A third turn's escalation of that id
    is resumed by a new process (its RunState and ledger kept) under the id it was proposed with."""
    refund = {"payee_id": "cus_1", "amount_usd": 40.0}
    big = {"payee_id": "cus_1", "amount_usd": 900.0}
    model = ScriptedModel(
        [
            [function_call("issue_refund", refund, call_id="call_0")],
            [assistant_message("first done")],
            [function_call("issue_refund", refund, call_id="call_0")],
            [assistant_message("second done")],
            [function_call("issue_refund", big, call_id="call_0")],
            [assistant_message("third done")],
        ]
    )
    proposals = SqliteProposals(tmp_path / "proposals.sqlite3")
    settings = ClientSettings(state_dir=tmp_path / "state")
    async with Tidegate(settings, transport=bus, task_id="conversation-1", proposals=proposals) as client:
        agent = build_agent(client, effects, model)
        first = await Runner.run(agent, "refund order O-1")
        second = await Runner.run(agent, [*first.to_input_list(), {"role": "user", "content": "and O-2, the same amount"}])
        paused = await Runner.run(agent, [*second.to_input_list(), {"role": "user", "content": "and 900 for O-3"}])
        saved = paused.to_state().to_string()
    assert (tool_output(first), tool_output(second)) == ("refunded 40.00 to cus_1", "refunded 40.00 to cus_1")
    assert effects.of("issue_refund") == [refund, refund]  # both ran
    assert [p.action_id for p in governance.proposals] == [
        "openai-agents:conversation-1:call_0",  # a first use keeps the plain id
        "openai-agents:conversation-1:call_0:2",
        "openai-agents:conversation-1:call_0:3",
    ]
    await governance.approve(await wait_pending(governance))
    async with Tidegate(settings, transport=bus, task_id="conversation-1", proposals=proposals) as client:  # a new process
        agent = build_agent(client, effects, model)
        state = await RunState.from_string(agent, saved)
        assert await settle_interruptions(client, state, timeout_s=5)
        resumed = await Runner.run(agent, state)
    assert "refunded 900.00 to cus_1" in [str(i.output) for i in resumed.new_items if i.type == "tool_call_output_item"]
    assert len(governance.proposals) == 3  # the resumed call followed its proposal
    assert effects.of("issue_refund") == [refund, refund, big]
