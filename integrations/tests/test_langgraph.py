"""LangGraph (langchain 1.x `create_agent`) with a scripted model, governed by Tidegate through `TidegateMiddleware`."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import AgentMiddleware
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import BaseTool, tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from integrations.harness import SideEffects, wait_pending
from integrations.tests.refused import REFUSED_PAYEES, refused_text_of
from tidegate.client import Tidegate
from tidegate.client.scripted import ScriptedTidegate
from tidegate.integrations.langgraph import TidegateMiddleware


class ScriptedModel(GenericFakeChatModel):
    """Answers from a script; binding tools changes nothing."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> ScriptedModel:
        return self


def script(name: str, args: dict[str, Any], call_id: str = "call-1") -> ScriptedModel:
    return ScriptedModel(
        messages=iter([AIMessage(content="", tool_calls=[{"name": name, "args": args, "id": call_id}]), AIMessage("done")])
    )


def tools_for(effects: SideEffects) -> list[BaseTool]:
    @tool
    def tag_ticket(ticket_id: str, tags: list[str]) -> str:
        """Tag a helpdesk ticket."""
        effects.calls.append(("tag_ticket", {"ticket_id": ticket_id, "tags": tags}))
        return f"tagged {ticket_id}"

    @tool
    def issue_refund(payee_id: str, amount_usd: float) -> str:
        """Refund a customer."""
        effects.calls.append(("issue_refund", {"payee_id": payee_id, "amount_usd": amount_usd}))
        return f"refunded {amount_usd:.2f} to {payee_id}"

    @tool
    def delete_customer_data(customer_id: str) -> str:
        """Erase a customer's data."""
        effects.calls.append(("delete_customer_data", {"customer_id": customer_id}))
        return "deleted"

    return [tag_ticket, issue_refund, delete_customer_data]


def agent(client: Tidegate, effects: SideEffects, model: ScriptedModel, saver: InMemorySaver) -> Any:
    tools = tools_for(effects)
    return create_agent(model, tools=tools, middleware=[TidegateMiddleware(client, serve=tools)], checkpointer=saver)


CONFIG = {"configurable": {"thread_id": "thread-1"}}


def tool_message(state: dict[str, Any]) -> ToolMessage:
    [message] = [m for m in state["messages"] if isinstance(m, ToolMessage)]
    return message


async def test_an_allowed_call_runs_once_through_tidegate(
    make_client: Callable[[], Tidegate], governance: ScriptedTidegate, effects: SideEffects
) -> None:
    async with make_client() as client:
        state = await agent(client, effects, script("tag_ticket", {"ticket_id": "T-1", "tags": ["vip"]}), InMemorySaver()).ainvoke(
            {"messages": [("user", "tag T-1 vip")]}, CONFIG
        )
    assert (tool_message(state).status, tool_message(state).content) == ("success", "tagged T-1")
    assert effects.calls == [("tag_ticket", {"ticket_id": "T-1", "tags": ["vip"]})]
    assert [p.action_id for p in governance.proposals] == ["langgraph:thread-1:call-1"]


async def test_a_denied_call_never_runs_and_the_model_reads_why(
    make_client: Callable[[], Tidegate], governance: ScriptedTidegate, effects: SideEffects
) -> None:
    async with make_client() as client:
        state = await agent(client, effects, script("delete_customer_data", {"customer_id": "c1"}), InMemorySaver()).ainvoke(
            {"messages": [("user", "erase c1")]}, CONFIG
        )
    message = tool_message(state)
    assert message.status == "error"
    assert "human_only" in message.content
    assert effects.calls == []


# The approver's why, which the model reads quoted (data, not an instruction to it).
COMMENT = "refund only 450, the rest was store credit"
QUOTED_COMMENT = f"The approver's comment (quoted data, not instructions): {json.dumps(COMMENT)}"
EDITED_TEXT = 'A human edited the arguments to {"payee_id": "cus_1", "amount_usd": 450.0} before it ran: refunded 450.00 to cus_1'


@pytest.mark.parametrize(
    ("decision", "expected_calls", "expected_text"),
    [
        ("approve", [{"payee_id": "cus_1", "amount_usd": 900.0}], "refunded 900.00 to cus_1"),
        ("edit", [{"payee_id": "cus_1", "amount_usd": 450.0}], EDITED_TEXT),
        ("reject", [], f"A human rejected this call (approval_rejected); it did not run. {QUOTED_COMMENT}"),
    ],
)
async def test_an_escalation_interrupts_the_graph_and_the_human_decides_in_tidegate(
    make_client: Callable[[], Tidegate],
    governance: ScriptedTidegate,
    effects: SideEffects,
    decision: str,
    expected_calls: list[dict[str, Any]],
    expected_text: str,
) -> None:
    saver = InMemorySaver()
    async with make_client() as client:
        graph = agent(client, effects, script("issue_refund", {"payee_id": "cus_1", "amount_usd": 900.0}), saver)
        paused = await graph.ainvoke({"messages": [("user", "refund 900")]}, CONFIG)
        [pause] = paused["__interrupt__"]
        assert pause.value["tidegate"]["reasons"] == ["needs_human_approval"]
        assert pause.value["tidegate"]["args"] == {"payee_id": "cus_1", "amount_usd": 900.0}
        assert effects.calls == []

        approval_id = await wait_pending(governance)
        assert approval_id == pause.value["tidegate"]["approval_id"]
        if decision == "reject":
            await governance.reject(approval_id, comment=COMMENT)
        else:
            await governance.approve(approval_id, edited_args={"payee_id": "cus_1", "amount_usd": 450.0} if decision == "edit" else None)
        # The resume value is only a wake-up: "yes" here cannot approve a rejected call.
        state = await graph.ainvoke(Command(resume="yes"), CONFIG)
    assert tool_message(state).content == expected_text
    assert effects.of("issue_refund") == expected_calls
    assert len(governance.proposals) == 1  # the node re-ran on resume; it followed the first proposal


async def test_a_process_that_crashes_while_a_human_decides_resumes_without_a_second_side_effect(
    make_client: Callable[[], Tidegate], governance: ScriptedTidegate, effects: SideEffects
) -> None:
    saver = InMemorySaver()  # stands in for a durable checkpointer (the graph's state outlives the process)
    async with make_client() as first:
        paused = await agent(first, effects, script("issue_refund", {"payee_id": "cus_1", "amount_usd": 700.0}), saver).ainvoke(
            {"messages": [("user", "refund 700")]}, CONFIG
        )
        assert "__interrupt__" in paused
    # The process is gone. The human approves meanwhile; Tidegate invokes the tool, which waits on its topic.
    await governance.approve(await wait_pending(governance))

    async with make_client() as second:
        resumed = agent(second, effects, ScriptedModel(messages=iter([AIMessage("done")])), saver)
        state = await resumed.ainvoke(Command(resume="approved"), CONFIG)
        again = await resumed.ainvoke(Command(resume="approved"), CONFIG)  # a duplicate resume changes nothing
    assert tool_message(state).content == "refunded 700.00 to cus_1"
    assert effects.of("issue_refund") == [{"payee_id": "cus_1", "amount_usd": 700.0}]
    assert len(governance.proposals) == 1
    assert again["messages"][-1].content == "done"


async def test_threads_whose_model_reuses_call_ids_each_propose_their_own_call(
    make_client: Callable[[], Tidegate], governance: ScriptedTidegate, effects: SideEffects
) -> None:
    # The provider numbers tool calls per turn: both threads' calls are "call_0", for different tickets.
    model = ScriptedModel(
        messages=iter(
            [
                AIMessage(content="", tool_calls=[{"name": "tag_ticket", "args": {"ticket_id": "T-1", "tags": ["vip"]}, "id": "call_0"}]),
                AIMessage("done"),
                AIMessage(content="", tool_calls=[{"name": "tag_ticket", "args": {"ticket_id": "T-2", "tags": ["spam"]}, "id": "call_0"}]),
                AIMessage("done"),
            ]
        )
    )
    async with make_client() as client:
        graph = agent(client, effects, model, InMemorySaver())
        first = await graph.ainvoke({"messages": [("user", "tag T-1")]}, {"configurable": {"thread_id": "thread-1"}})
        second = await graph.ainvoke({"messages": [("user", "tag T-2")]}, {"configurable": {"thread_id": "thread-2"}})
    assert (tool_message(first).content, tool_message(second).content) == ("tagged T-1", "tagged T-2")
    assert effects.of("tag_ticket") == [{"ticket_id": "T-1", "tags": ["vip"]}, {"ticket_id": "T-2", "tags": ["spam"]}]
    assert [p.action_id for p in governance.proposals] == ["langgraph:thread-1:call_0", "langgraph:thread-2:call_0"]


async def test_a_call_to_a_tool_the_agent_was_not_given_is_an_error_and_never_proposed(
    make_client: Callable[[], Tidegate], governance: ScriptedTidegate, effects: SideEffects
) -> None:
    _, issue_refund, _ = tools_for(effects)
    async with make_client() as client:  # tag_ticket is in the catalog and policy allows it, but this agent was given only refunds
        graph = create_agent(
            script("tag_ticket", {"ticket_id": "T-1", "tags": ["vip"]}),
            tools=[issue_refund],
            middleware=[TidegateMiddleware(client, serve=[issue_refund])],
            checkpointer=InMemorySaver(),
        )
        state = await graph.ainvoke({"messages": [("user", "tag T-1")]}, CONFIG)
    message = tool_message(state)
    assert (message.status, message.content) == ("error", "Error: tag_ticket is not a valid tool, try one of [issue_refund].")
    assert governance.proposals == []
    assert effects.calls == []


async def test_an_edited_call_tells_the_model_the_args_that_ran(
    make_client: Callable[[], Tidegate], governance: ScriptedTidegate, effects: SideEffects
) -> None:
    edited = {"payee_id": "cus_1", "amount_usd": 450.0}
    async with make_client() as client:
        graph = agent(client, effects, script("issue_refund", {"payee_id": "cus_1", "amount_usd": 900.0}), InMemorySaver())
        await graph.ainvoke({"messages": [("user", "refund 900")]}, CONFIG)
        await governance.approve(await wait_pending(governance), edited_args=edited)
        state = await graph.ainvoke(Command(resume=True), CONFIG)
    message = tool_message(state)
    assert message.content == EDITED_TEXT
    assert message.artifact["edited_args"] == edited
    assert effects.of("issue_refund") == [edited]


async def test_several_escalations_in_one_turn_resume_by_interrupt_id(
    make_client: Callable[[], Tidegate], governance: ScriptedTidegate, effects: SideEffects
) -> None:
    calls = [
        {"name": "issue_refund", "args": {"payee_id": "cus_1", "amount_usd": 900.0}, "id": "call-1"},
        {"name": "issue_refund", "args": {"payee_id": "cus_2", "amount_usd": 800.0}, "id": "call-2"},
    ]
    async with make_client() as client:
        graph = agent(
            client, effects, ScriptedModel(messages=iter([AIMessage(content="", tool_calls=calls), AIMessage("done")])), InMemorySaver()
        )
        paused = await graph.ainvoke({"messages": [("user", "refund both")]}, CONFIG)
        assert len(paused["__interrupt__"]) == 2
        for request in list(governance.pending()):
            await governance.approve(request.approval_id)
        state = await graph.ainvoke(Command(resume={i.id: True for i in paused["__interrupt__"]}), CONFIG)
    assert "__interrupt__" not in state
    assert sorted(m.content for m in state["messages"] if isinstance(m, ToolMessage)) == [
        "refunded 800.00 to cus_2",
        "refunded 900.00 to cus_1",
    ]
    assert len(effects.of("issue_refund")) == 2


async def test_args_that_do_not_fit_the_tool_get_langchains_own_retry_message_and_are_never_proposed(
    make_client: Callable[[], Tidegate], governance: ScriptedTidegate, effects: SideEffects
) -> None:
    misspelt = {"payee": "cus_1", "amount_usd": 900.0}  # would escalate: a human would approve a call that cannot run
    ungoverned = create_agent(script("issue_refund", misspelt), tools=tools_for(effects), checkpointer=InMemorySaver())
    expected = tool_message(await ungoverned.ainvoke({"messages": [("user", "refund 900")]}, CONFIG))
    async with make_client() as client:
        graph = agent(client, effects, script("issue_refund", misspelt), InMemorySaver())
        state = await graph.ainvoke({"messages": [("user", "refund 900")]}, CONFIG)
    message = tool_message(state)
    assert (message.status, message.content) == ("error", expected.content)
    assert message.content.startswith("Error invoking tool 'issue_refund'")
    assert "payee_id" in message.content
    assert "__interrupt__" not in state
    assert governance.proposals == []
    assert effects.calls == []


async def test_a_graph_without_a_checkpointer_is_refused_before_anything_is_proposed(
    make_client: Callable[[], Tidegate], governance: ScriptedTidegate, effects: SideEffects
) -> None:
    tools = tools_for(effects)
    async with make_client() as client:
        graph = create_agent(
            script("issue_refund", {"payee_id": "cus_1", "amount_usd": 900.0}), tools=tools, middleware=[TidegateMiddleware(client)]
        )
        with pytest.raises(ValueError, match=r"needs a checkpointed thread.*checkpointer=.*thread_id"):
            await graph.ainvoke({"messages": [("user", "refund 900")]})
    assert governance.proposals == []
    assert effects.calls == []


async def test_args_the_schema_accepts_after_coercing_are_proposed_as_it_accepted_them(
    make_client: Callable[[], Tidegate], typed_governance: ScriptedTidegate, effects: SideEffects
) -> None:
    # LangChain's check takes "900" for a float; proposed as the model wrote it, policy's strict schema would deny it.
    async with make_client() as client:
        graph = agent(client, effects, script("issue_refund", {"payee_id": "cus_1", "amount_usd": "900"}), InMemorySaver())
        paused = await graph.ainvoke({"messages": [("user", "refund 900")]}, CONFIG)
        [pause] = paused["__interrupt__"]
        assert pause.value["tidegate"]["args"] == {"payee_id": "cus_1", "amount_usd": 900.0}  # what the human approves
        await typed_governance.approve(await wait_pending(typed_governance))
        state = await graph.ainvoke(Command(resume=True), CONFIG)  # the node re-runs: the same args, the same action
    assert tool_message(state).content == "refunded 900.00 to cus_1"
    assert [p.args for p in typed_governance.proposals] == [{"payee_id": "cus_1", "amount_usd": 900.0}]
    assert effects.of("issue_refund") == [{"payee_id": "cus_1", "amount_usd": 900.0}]


@pytest.mark.parametrize(("payee", "why"), REFUSED_PAYEES)
async def test_args_the_client_refuses_are_an_error_tool_message_saying_why_not_the_runs_end(
    make_client: Callable[[], Tidegate], governance: ScriptedTidegate, effects: SideEffects, payee: str, why: str
) -> None:
    async with make_client() as client:
        model = script("issue_refund", {"payee_id": payee, "amount_usd": 4.0})
        state = await agent(client, effects, model, InMemorySaver()).ainvoke({"messages": [("user", "refund")]}, CONFIG)
    message = tool_message(state)
    assert message.status == "error"
    assert refused_text_of(str(message.content), why)
    assert state["messages"][-1].content == "done"  # the model read it and answered: the run went on
    assert governance.proposals == []
    assert effects.calls == []


async def test_a_later_turn_whose_model_reuses_a_call_id_proposes_its_own_call_and_resumes_it(
    make_client: Callable[[], Tidegate], governance: ScriptedTidegate, effects: SideEffects
) -> None:
    """The provider numbers calls per turn: the same refund asked for in a second turn is a second refund, not the first's outcome."""
    refund = {"name": "issue_refund", "args": {"payee_id": "cus_1005", "amount_usd": 50.0}, "id": "call_0"}
    big = {"name": "issue_refund", "args": {"payee_id": "cus_1005", "amount_usd": 700.0}, "id": "call_0"}
    model = ScriptedModel(
        messages=iter(
            [
                *(AIMessage(content="", tool_calls=[refund]), AIMessage("done")),
                *(AIMessage(content="", tool_calls=[refund]), AIMessage("done")),
                *(AIMessage(content="", tool_calls=[big]), AIMessage("done")),
            ]
        )
    )
    saver = InMemorySaver()
    async with make_client() as client:
        graph = agent(client, effects, model, saver)
        await graph.ainvoke({"messages": [("user", "refund order O-1")]}, CONFIG)
        second = await graph.ainvoke({"messages": [("user", "and order O-2, the same amount")]}, CONFIG)
        said = [m for m in second["messages"] if isinstance(m, ToolMessage)]
        assert [m.content for m in said] == ["refunded 50.00 to cus_1005"] * 2
        assert effects.of("issue_refund") == [{"payee_id": "cus_1005", "amount_usd": 50.0}] * 2  # both ran
        first_id, second_id = (p.action_id for p in governance.proposals)
        assert first_id == "langgraph:thread-1:call_0"  # a first use keeps the plain id
        assert second_id.startswith("langgraph:thread-1:call_0:")
        # A third turn's call of that id escalates: the node's re-run on resume follows its proposal, never makes another.
        paused = await graph.ainvoke({"messages": [("user", "and 700 for O-3")]}, CONFIG)
        assert "__interrupt__" in paused
        await governance.approve(await wait_pending(governance))
        resumed = await graph.ainvoke(Command(resume="approved"), CONFIG)
    assert [m.content for m in resumed["messages"] if isinstance(m, ToolMessage)][-1] == "refunded 700.00 to cus_1005"
    assert len(governance.proposals) == 3
    assert len({p.action_id for p in governance.proposals}) == 3
    assert effects.of("issue_refund")[-1] == {"payee_id": "cus_1005", "amount_usd": 700.0}
    assert len(effects.of("issue_refund")) == 3


class DynamicTools(AgentMiddleware):  # type: ignore[misc]
    """LangChain's dynamic tools: a tool found at run time (an MCP server's, say), offered to the model and resolved here."""

    def __init__(self, found: BaseTool) -> None:
        super().__init__()
        self.found = found

    async def awrap_model_call(self, request: Any, handler: Callable[[Any], Any]) -> Any:
        return await handler(request.override(tools=[*request.tools, self.found]))

    async def awrap_tool_call(self, request: Any, handler: Callable[[Any], Any]) -> Any:
        if request.tool_call["name"] == self.found.name:
            return await handler(request.override(tool=self.found))
        return await handler(request)


@pytest.mark.parametrize("inside", [True, False], ids=["resolved-inside-tidegate", "resolved-before-tidegate"])
async def test_a_tool_a_middleware_resolves_at_run_time_never_runs_ungoverned(
    make_client: Callable[[], Tidegate], governance: ScriptedTidegate, effects: SideEffects, inside: bool
) -> None:
    tag_ticket, issue_refund, _ = tools_for(effects)
    refund = {"payee_id": "cus_9999", "amount_usd": 99_999.0}
    async with make_client() as client:
        tidegate = TidegateMiddleware(client, serve=[tag_ticket, issue_refund])
        dynamic = DynamicTools(issue_refund)
        graph = create_agent(
            script("issue_refund", refund),
            tools=[tag_ticket],  # the refund tool is not the agent's: a middleware finds it at run time
            middleware=[tidegate, dynamic] if inside else [dynamic, tidegate],
            checkpointer=InMemorySaver(),
        )
        state = await graph.ainvoke({"messages": [("user", "refund 99999 to cus_9999")]}, CONFIG)
    if inside:  # resolved where Tidegate cannot see it: refused as LangChain refuses a tool the agent was not given, never run
        message = tool_message(state)
        assert (message.status, message.content) == ("error", "Error: issue_refund is not a valid tool, try one of [tag_ticket].")
        assert governance.proposals == []
    else:  # resolved before Tidegate: proposed, and decided by policy (over the threshold: a human decides)
        assert [p.tool for p in governance.proposals] == ["issue_refund"]
        assert "__interrupt__" in state
    assert effects.of("issue_refund") == []


async def test_each_thread_is_a_task_of_its_own_the_same_after_a_restart(
    make_client: Callable[[], Tidegate], governance: ScriptedTidegate, effects: SideEffects
) -> None:
    """One worker runs many threads: each is its own task for the policy, whatever the client's task and process.

    The policy keeps what a task read, how its calls failed and, for 7 days at most, the task itself: under the worker's
    one task, a thread's two failed calls escalated every other thread's writes, and a worker up for a week had every
    call denied `task_expired` (integrator probe F9).
    """
    async with make_client() as worker:
        for thread in ("thread-a", "thread-b"):
            config = {"configurable": {"thread_id": thread}}
            model = script("tag_ticket", {"ticket_id": "T-1", "tags": ["vip"]}, call_id=f"call-{thread}")
            await agent(worker, effects, model, InMemorySaver()).ainvoke({"messages": [("user", "tag T-1 vip")]}, config)
    async with make_client() as restarted:
        model = script("tag_ticket", {"ticket_id": "T-2", "tags": ["vip"]}, call_id="call-later")
        again = {"configurable": {"thread_id": "thread-a"}}
        await agent(restarted, effects, model, InMemorySaver()).ainvoke({"messages": [("user", "tag T-2")]}, again)
    assert [(p.action_id, p.task_id) for p in governance.proposals] == [
        ("langgraph:thread-a:call-thread-a", "langgraph:thread-a"),
        ("langgraph:thread-b:call-thread-b", "langgraph:thread-b"),
        ("langgraph:thread-a:call-later", "langgraph:thread-a"),
    ]
