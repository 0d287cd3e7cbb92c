"""pydantic-ai 2.x with `FunctionModel`, governed by Tidegate through `TidegateCapability` and deferred approvals."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic_ai import Agent, DeferredToolRequests, RunContext, Tool, ToolApproved
from pydantic_ai.capabilities import AbstractCapability
from pydantic_ai.exceptions import ModelRetry, UserError
from pydantic_ai.messages import ModelMessage, ModelResponse, RetryPromptPart, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from integrations.harness import SideEffects, rule, wait_pending
from integrations.tests.refused import REFUSED_PAYEES, refused_text_of
from tidegate.client import ClientSettings, MemoryTransport, SqliteProposals, Tidegate
from tidegate.client.scripted import ScriptedTidegate
from tidegate.integrations.pydantic_ai import TidegateCapability, tidegate_results


def scripted(name: str, args: dict[str, Any]) -> FunctionModel:
    """Calls the tool once, then answers with what the tool returned."""

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        returned = [p for m in messages for p in getattr(m, "parts", []) if isinstance(p, ToolReturnPart)]
        if returned:
            return ModelResponse(parts=[TextPart(f"done: {returned[-1].content}")])
        return ModelResponse(parts=[ToolCallPart(name, args, tool_call_id="call-1")])

    return FunctionModel(respond)


def build_agent(client: Tidegate, effects: SideEffects, model: FunctionModel) -> Agent[None, str | DeferredToolRequests]:
    def issue_refund(payee_id: str, amount_usd: float) -> str:
        """Refund a customer."""
        effects.calls.append(("issue_refund", {"payee_id": payee_id, "amount_usd": amount_usd}))
        return f"refunded {amount_usd:.2f} to {payee_id}"

    def delete_customer_data(customer_id: str) -> str:
        """Erase a customer's data."""
        effects.calls.append(("delete_customer_data", {"customer_id": customer_id}))
        return "deleted"

    functions = [issue_refund, delete_customer_data]
    return Agent(
        model, tools=functions, output_type=[str, DeferredToolRequests], capabilities=[TidegateCapability(client, serve=functions)]
    )


async def test_an_allowed_call_runs_once(make_client: Callable[[], Tidegate], governance: ScriptedTidegate, effects: SideEffects) -> None:
    async with make_client() as client:
        result = await build_agent(client, effects, scripted("issue_refund", {"payee_id": "cus_1", "amount_usd": 40.0})).run("refund 40")
    assert result.output == "done: refunded 40.00 to cus_1"
    assert effects.of("issue_refund") == [{"payee_id": "cus_1", "amount_usd": 40.0}]
    [proposal] = governance.proposals
    assert proposal.action_id == f"pydantic-ai:{result.conversation_id}:call-1"


async def test_a_denied_call_never_runs(make_client: Callable[[], Tidegate], governance: ScriptedTidegate, effects: SideEffects) -> None:
    async with make_client() as client:
        result = await build_agent(client, effects, scripted("delete_customer_data", {"customer_id": "c1"})).run("erase c1")
    assert "human_only" in str(result.output)
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
        ("approve", [{"payee_id": "cus_1", "amount_usd": 900.0}], "done: refunded 900.00 to cus_1"),
        ("edit", [{"payee_id": "cus_1", "amount_usd": 450.0}], f"done: {EDITED_TEXT}"),
        ("reject", [], f"done: {REJECTED_TEXT}"),
    ],
)
async def test_an_escalation_is_a_deferred_approval_answered_from_tidegate(
    make_client: Callable[[], Tidegate],
    governance: ScriptedTidegate,
    effects: SideEffects,
    decision: str,
    expected_calls: list[dict[str, Any]],
    expected_text: str,
) -> None:
    async with make_client() as client:
        agent = build_agent(client, effects, scripted("issue_refund", {"payee_id": "cus_1", "amount_usd": 900.0}))
        paused = await agent.run("refund 900")
        assert isinstance(paused.output, DeferredToolRequests)
        assert paused.output.metadata["call-1"]["tidegate"]["reasons"] == ["needs_human_approval"]
        assert await tidegate_results(client, paused.output, timeout_s=0.2) is None  # nobody decided yet
        assert effects.calls == []

        approval_id = await wait_pending(governance)
        if decision == "reject":
            await governance.reject(approval_id, comment=COMMENT)
        else:
            await governance.approve(approval_id, edited_args={"payee_id": "cus_1", "amount_usd": 450.0} if decision == "edit" else None)
        results = await tidegate_results(client, paused.output)
        assert results is not None
        if decision == "edit":
            assert results.approvals["call-1"].override_args == {"payee_id": "cus_1", "amount_usd": 450.0}
        result = await agent.run(message_history=paused.all_messages(), deferred_tool_results=results)
    assert result.output == expected_text
    assert effects.of("issue_refund") == expected_calls
    assert len(governance.proposals) == 1


async def test_deferred_requests_kept_across_a_crash_resume_without_a_second_side_effect(
    make_client: Callable[[], Tidegate], governance: ScriptedTidegate, effects: SideEffects
) -> None:
    from pydantic_ai.messages import ModelMessagesTypeAdapter

    async with make_client() as first:
        paused = await build_agent(first, effects, scripted("issue_refund", {"payee_id": "cus_1", "amount_usd": 700.0})).run("refund")
        assert isinstance(paused.output, DeferredToolRequests)
        kept = (ModelMessagesTypeAdapter.dump_json(paused.all_messages()), paused.output)  # what the application stores
    await governance.approve(await wait_pending(governance))

    async with make_client() as second:
        agent = build_agent(second, effects, scripted("issue_refund", {"payee_id": "cus_1", "amount_usd": 700.0}))
        results = await tidegate_results(second, kept[1])
        assert results is not None
        history = ModelMessagesTypeAdapter.validate_json(kept[0])
        result = await agent.run(message_history=history, deferred_tool_results=results)
    assert result.output == "done: refunded 700.00 to cus_1"
    assert effects.of("issue_refund") == [{"payee_id": "cus_1", "amount_usd": 700.0}]
    assert len(governance.proposals) == 1


async def test_a_run_resumed_in_a_new_process_with_the_docs_client_gets_the_decision_and_runs_once(
    bus: MemoryTransport, governance: ScriptedTidegate, effects: SideEffects, tmp_path: Path
) -> None:
    """The integrator's restart: `Tidegate(proposals=SqliteProposals(path))` as the docs write it, no `task_id`.

    Each process's client then has a task of its own; the paused conversation is resumed from what the application kept
    on disk (the history and the `DeferredToolRequests`, serialized) while its first process is gone. Proposed under the
    client's task, `tidegate_results` raised `ActionIdReused` here and the human's decision was never read.
    """
    from pydantic import TypeAdapter
    from pydantic_ai.messages import ModelMessagesTypeAdapter

    def process() -> Tidegate:  # no task_id: each process gets a task of its own, as the docs' snippet does
        settings = ClientSettings(state_dir=tmp_path / "state", decision_timeout_s=5)
        return Tidegate(settings, transport=bus, proposals=SqliteProposals(tmp_path / "state" / "proposals.sqlite3"))

    deferred = TypeAdapter(DeferredToolRequests)
    async with process() as first:
        paused = await build_agent(first, effects, scripted("issue_refund", {"payee_id": "cus_1", "amount_usd": 700.0})).run("refund")
        assert isinstance(paused.output, DeferredToolRequests)
        kept = (ModelMessagesTypeAdapter.dump_json(paused.all_messages()), deferred.dump_json(paused.output))
    await governance.approve(await wait_pending(governance))

    async with process() as second:
        agent = build_agent(second, effects, scripted("issue_refund", {"payee_id": "cus_1", "amount_usd": 700.0}))
        results = await tidegate_results(second, deferred.validate_json(kept[1]))
        assert results is not None
        result = await agent.run(message_history=ModelMessagesTypeAdapter.validate_json(kept[0]), deferred_tool_results=results)
    assert result.output == "done: refunded 700.00 to cus_1"
    assert effects.of("issue_refund") == [{"payee_id": "cus_1", "amount_usd": 700.0}]
    [proposal] = governance.proposals  # one proposal, one approval: nothing proposed again under another task
    assert proposal.task_id == f"pydantic-ai:{paused.conversation_id}"


async def test_conversations_whose_model_reuses_call_ids_each_propose_their_own_call(
    make_client: Callable[[], Tidegate], governance: ScriptedTidegate, effects: SideEffects
) -> None:
    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        returned = [p for m in messages for p in getattr(m, "parts", []) if isinstance(p, ToolReturnPart)]
        if returned:
            return ModelResponse(parts=[TextPart(f"done: {returned[-1].content}")])
        asked = [p.content for m in messages for p in getattr(m, "parts", []) if getattr(p, "part_kind", "") == "user-prompt"]
        amount = 40.0 if "40" in str(asked[-1]) else 60.0
        return ModelResponse(parts=[ToolCallPart("issue_refund", {"payee_id": "cus_1", "amount_usd": amount}, tool_call_id="call_0")])

    async with make_client() as client:
        refunds = build_agent(client, effects, FunctionModel(respond))
        first = await refunds.run("refund 40")
        second = await refunds.run("refund 60")  # a new conversation: its "call_0" is another call
    assert (first.output, second.output) == ("done: refunded 40.00 to cus_1", "done: refunded 60.00 to cus_1")
    assert effects.of("issue_refund") == [{"payee_id": "cus_1", "amount_usd": 40.0}, {"payee_id": "cus_1", "amount_usd": 60.0}]
    assert len({p.action_id for p in governance.proposals}) == 2


async def test_a_tool_named_apart_from_its_function_is_served_under_the_tools_name(
    bus: MemoryTransport, make_client: Callable[[], Tidegate], effects: SideEffects
) -> None:
    def issue_refund(payee_id: str, amount_usd: float) -> str:
        """Refund a customer."""
        effects.calls.append(("issue_refund", {"payee_id": payee_id, "amount_usd": amount_usd}))
        return f"refunded {amount_usd:.2f} to {payee_id}"

    refund = Tool(issue_refund, name="refund")
    async with ScriptedTidegate(bus, rule, topic_tools=("refund",)) as governance, make_client() as client:
        agent = Agent(
            scripted("refund", {"payee_id": "cus_1", "amount_usd": 40.0}),
            tools=[refund],
            output_type=[str, DeferredToolRequests],
            capabilities=[TidegateCapability(client, serve=[refund])],
        )
        result = await agent.run("refund 40")
    assert result.output == "done: refunded 40.00 to cus_1"
    assert [p.tool for p in governance.proposals] == ["refund"]
    assert effects.of("issue_refund") == [{"payee_id": "cus_1", "amount_usd": 40.0}]


async def test_the_proposal_holds_the_args_the_model_gave_checked_not_the_defaults_it_left_out(
    bus: MemoryTransport, make_client: Callable[[], Tidegate], effects: SideEffects
) -> None:
    """A default the model never chose (`note: None`) is not part of the call a strict catalog or an approver reads."""

    def tag_ticket(ticket_id: str, count: int, note: str | None = None) -> str:
        """Tag a ticket."""
        effects.calls.append(("tag_ticket", {"ticket_id": ticket_id, "count": count, "note": note}))
        return f"tagged {ticket_id}"

    async with ScriptedTidegate(bus, rule, topic_tools=("tag_ticket",)) as governance, make_client() as client:
        agent = Agent(
            scripted("tag_ticket", {"ticket_id": "T-1", "count": "3"}),
            tools=[tag_ticket],
            output_type=[str, DeferredToolRequests],
            capabilities=[TidegateCapability(client, serve=[tag_ticket])],
        )
        result = await agent.run("tag T-1")
    assert result.output == "done: tagged T-1"
    [proposal] = governance.proposals
    assert proposal.args == {"ticket_id": "T-1", "count": 3}  # checked ("3" → 3), and no `note` the model never gave
    assert effects.of("tag_ticket") == [{"ticket_id": "T-1", "count": 3, "note": None}]  # the function's default, where it runs


async def test_serving_a_tool_whose_function_takes_the_run_context_is_refused(
    make_client: Callable[[], Tidegate], governance: ScriptedTidegate
) -> None:
    def issue_refund(ctx: RunContext[None], payee_id: str, amount_usd: float) -> str:
        """Refund a customer."""
        return "refunded"

    async with make_client() as client:
        with pytest.raises(ValueError, match="'issue_refund', whose function takes a RunContext"):
            TidegateCapability(client, serve=[issue_refund])


async def test_an_approval_the_agent_asked_for_itself_is_left_to_the_application(
    make_client: Callable[[], Tidegate], governance: ScriptedTidegate, effects: SideEffects
) -> None:
    def tag_ticket(ticket_id: str, tags: list[str]) -> str:
        """Tag a helpdesk ticket."""
        effects.calls.append(("tag_ticket", {"ticket_id": ticket_id, "tags": tags}))
        return f"tagged {ticket_id}"

    def issue_refund(payee_id: str, amount_usd: float) -> str:
        """Refund a customer."""
        effects.calls.append(("issue_refund", {"payee_id": payee_id, "amount_usd": amount_usd}))
        return f"refunded {amount_usd:.2f} to {payee_id}"

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        returned = sorted(str(p.content) for m in messages for p in getattr(m, "parts", []) if isinstance(p, ToolReturnPart))
        if returned:
            return ModelResponse(parts=[TextPart(f"done: {returned}")])
        tag = ToolCallPart("tag_ticket", {"ticket_id": "T-1", "tags": ["vip"]}, tool_call_id="call-tag")
        return ModelResponse(
            parts=[tag, ToolCallPart("issue_refund", {"payee_id": "cus_1", "amount_usd": 900.0}, tool_call_id="call-refund")]
        )

    async with make_client() as client:
        agent = Agent(
            FunctionModel(respond),
            tools=[Tool(tag_ticket, requires_approval=True), issue_refund],  # pydantic-ai's own approval beside Tidegate's
            output_type=[str, DeferredToolRequests],
            capabilities=[TidegateCapability(client, serve=[tag_ticket, issue_refund])],
        )
        paused = await agent.run("tag T-1 and refund 900")
        assert isinstance(paused.output, DeferredToolRequests)
        assert sorted(call.tool_call_id for call in paused.output.approvals) == ["call-refund", "call-tag"]
        await governance.approve(await wait_pending(governance))
        results = await tidegate_results(client, paused.output)
        assert results is not None
        assert list(results.approvals) == ["call-refund"]  # Tidegate's; the application answers its own
        results.approvals["call-tag"] = ToolApproved()
        result = await agent.run(message_history=paused.all_messages(), deferred_tool_results=results)
    assert result.output == "done: ['refunded 900.00 to cus_1', 'tagged T-1']"
    assert effects.of("tag_ticket") == [{"ticket_id": "T-1", "tags": ["vip"]}]  # approved by the application, then allowed by Tidegate
    assert [p.tool for p in governance.proposals] == ["issue_refund", "tag_ticket"]


@pytest.mark.parametrize(("payee", "why"), REFUSED_PAYEES)
async def test_args_the_client_refuses_are_a_retry_prompt_saying_why_not_the_runs_end(
    make_client: Callable[[], Tidegate], governance: ScriptedTidegate, effects: SideEffects, payee: str, why: str
) -> None:
    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        told = [p for m in messages for p in getattr(m, "parts", []) if isinstance(p, RetryPromptPart | ToolReturnPart)]
        if told:  # the framework's retry of a tool (a `ModelRetry`), which this version hands the model as the tool's return
            return ModelResponse(parts=[TextPart(f"told: {told[-1].content}")])
        return ModelResponse(parts=[ToolCallPart("issue_refund", {"payee_id": payee, "amount_usd": 4.0}, tool_call_id="call-1")])

    async with make_client() as client:
        result = await build_agent(client, effects, FunctionModel(respond)).run("refund")
    assert isinstance(result.output, str)
    assert refused_text_of(result.output.removeprefix("told: "), why)
    assert governance.proposals == []
    assert effects.calls == []


def per_turn_ids(name: str, args: dict[str, Any]) -> FunctionModel:
    """A provider that numbers its calls per turn: each user turn calls the tool as `call_0`, then answers with its result."""

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        last = messages[-1]
        if any(isinstance(p, ToolReturnPart) for p in getattr(last, "parts", [])):
            returned = [p for p in last.parts if isinstance(p, ToolReturnPart)]
            return ModelResponse(parts=[TextPart(f"done: {returned[-1].content}")])
        return ModelResponse(parts=[ToolCallPart(name, args, tool_call_id="call_0")])

    return FunctionModel(respond)


async def test_a_later_turn_whose_provider_reuses_a_call_id_proposes_its_own_call(
    make_client: Callable[[], Tidegate], governance: ScriptedTidegate, effects: SideEffects
) -> None:
    """The same refund asked for in a second turn is a second refund: it was answered with the first's outcome, never run."""
    refund = {"payee_id": "cus_1", "amount_usd": 40.0}
    async with make_client() as client:
        agent = build_agent(client, effects, per_turn_ids("issue_refund", refund))
        first = await agent.run("refund order O-1")
        second = await agent.run("and order O-2, the same amount", message_history=first.all_messages())
    assert (first.output, second.output) == ("done: refunded 40.00 to cus_1", "done: refunded 40.00 to cus_1")
    assert effects.of("issue_refund") == [refund, refund]  # both ran
    ids = [p.action_id for p in governance.proposals]
    assert ids[0] == f"pydantic-ai:{first.conversation_id}:call_0"  # a first use keeps the plain id
    assert len(set(ids)) == 2


async def test_an_output_function_is_refused_never_run_on_the_models_say_so(
    make_client: Callable[[], Tidegate], governance: ScriptedTidegate, effects: SideEffects
) -> None:
    """An output function is no tool call: it ran in the agent's process with no proposal (a 5,000 USD refund to a new payee)."""

    def refund_and_finish(payee_id: str, amount_usd: float) -> str:
        effects.calls.append(("refund_and_finish", {"payee_id": payee_id, "amount_usd": amount_usd}))
        return "refunded"

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        [output_tool] = info.output_tools
        return ModelResponse(parts=[ToolCallPart(output_tool.name, {"payee_id": "cus_9999", "amount_usd": 5000.0}, tool_call_id="o-1")])

    async with make_client() as client:
        agent = Agent(
            FunctionModel(respond), output_type=[refund_and_finish, DeferredToolRequests], capabilities=[TidegateCapability(client)]
        )
        with pytest.raises(UserError, match="TidegateCapability does not govern output functions: refund_and_finish"):
            await agent.run("refund 5000 to cus_9999")
    assert effects.calls == []
    assert governance.proposals == []


class FraudCheck(AbstractCapability[Any]):  # type: ignore[misc]
    """A team's own check, an ordinary pydantic-ai capability: refunds to a flagged customer are refused before they run."""

    def __init__(self) -> None:
        super().__init__()
        self.saw: list[dict[str, Any]] = []
        self.results: list[Any] = []

    async def before_tool_execute(self, ctx: RunContext[Any], *, call: Any, tool_def: Any, args: Any) -> Any:
        self.saw.append(dict(args))
        if args.get("payee_id") == "cus_flagged":
            raise ModelRetry("cus_flagged is flagged for fraud: no refunds")
        return args

    async def after_tool_execute(self, ctx: RunContext[Any], *, call: Any, tool_def: Any, args: Any, result: Any) -> Any:
        self.results.append(result)
        return result


@pytest.mark.parametrize("tidegate_first", [True, False], ids=["tidegate-listed-first", "tidegate-listed-last"])
@pytest.mark.parametrize("payee", ["cus_flagged", "cus_1"])
async def test_the_agents_other_capabilities_still_check_each_call_before_it_is_proposed(
    make_client: Callable[[], Tidegate], governance: ScriptedTidegate, effects: SideEffects, tidegate_first: bool, payee: str
) -> None:
    """Proposed from `wrap_tool_execute`, which never called its handler, no other capability's tool hooks ran: a refund the
    team's own check refused was paid (the frameworks probe)."""

    def issue_refund(payee_id: str, amount_usd: float) -> str:
        """Refund a customer."""
        effects.calls.append(("issue_refund", {"payee_id": payee_id, "amount_usd": amount_usd}))
        return f"refunded {amount_usd:.2f} to {payee_id}"

    check = FraudCheck()
    async with make_client() as client:
        tidegate = TidegateCapability(client, serve=[issue_refund])
        agent = Agent(
            scripted("issue_refund", {"payee_id": payee, "amount_usd": 30.0}),
            tools=[issue_refund],
            output_type=[str, DeferredToolRequests],
            capabilities=[tidegate, check] if tidegate_first else [check, tidegate],
        )
        result = await agent.run("refund 30")
    assert check.saw == [{"payee_id": payee, "amount_usd": 30.0}]  # the team's check saw the call, wherever Tidegate is listed
    if payee == "cus_flagged":
        assert governance.proposals == []  # refused by the team's check: never proposed, never run
        assert effects.calls == []
    else:
        assert result.output == "done: refunded 30.00 to cus_1"
        assert [p.tool for p in governance.proposals] == ["issue_refund"]
        assert check.results == ["refunded 30.00 to cus_1"]  # and its after-hook read what Tidegate's executor got
