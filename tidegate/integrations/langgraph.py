"""LangGraph / LangChain agents: every tool call is a Tidegate proposal; an escalation is a LangGraph `interrupt`.

    agent = create_agent(model, tools, middleware=[TidegateMiddleware(client, serve=tools)], checkpointer=saver)
    state = await agent.ainvoke({"messages": [...]}, config)      # escalations → state["__interrupt__"]
    state = await agent.ainvoke(Command(resume={i.id: True for i in state["__interrupt__"]}), config)

    # or a graph of your own: its ToolNode sends each call through the same middleware
    builder.add_node("tools", ToolNode(tools, awrap_tool_call=TidegateMiddleware(client, serve=tools).awrap_tool_call))
    graph = builder.compile(checkpointer=saver)

A turn with several escalated calls (a model calling tools in parallel) pauses with one interrupt per
call, and LangGraph then wants the resume value keyed by interrupt id (`Command(resume=True)` is refused
when more than one is pending); the form above works for one interrupt or many. A call to a tool the agent
was not given gets LangChain's own "not a valid tool" error, and a call whose args do not fit the tool's
schema gets LangChain's own "Error invoking tool … Please fix the error and try again."; neither is proposed.
What is proposed is the args the schema accepted, in JSON form (`"900"` for a number is proposed as `900.0`).

Only a checkpointed thread can be resumed, so a graph without a checkpointer or a `thread_id` is refused
when it starts, before the model is asked anything (`create_agent`), or at its first tool call, before
anything is proposed (a `ToolNode` of a graph of your own: it runs no agent hooks). The action id is `langgraph:<thread id>:<tool-call id>`,
so the node's re-run on resume (and a restarted process, with `SqliteProposals`) follows the first proposal
instead of proposing again, while another thread whose model numbers its calls the same way ("call_0")
proposes its own, and so does a later turn of the thread whose call has an id an earlier turn's had (its id
then ends with the id of the model's message that made it). What `Command(resume=...)` carries is only a
wake-up: the decision is Tidegate's (signed approval, bound to the exact args). When a human edited the
args, the `ToolMessage` tells the model the args that ran (and its artifact carries `edited_args`); when
the call did not run, why: the reason codes, policy's messages and the approver's comment, quoted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from langchain.agents.middleware import AgentMiddleware
from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool
from langgraph.config import get_config
from langgraph.constants import CONF, CONFIG_KEY_CHECKPOINTER
from langgraph.prebuilt.tool_node import INVALID_TOOL_NAME_ERROR_TEMPLATE, ToolInvocationError
from langgraph.types import Command, interrupt
from pydantic import BaseModel, ValidationError

from tidegate.client import Escalated, Executed, Tidegate
from tidegate.integrations._common import REFUSED_ARGS, checked_args, escalation_payload, outcome_text, refused_text, serve_function

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

    def before_agent(self, state: Any, runtime: Any) -> None:
        """Refuse a run whose escalations could not be resumed: no checkpointer, or no thread to resume."""
        _refuse_unresumable(get_config())

    async def awrap_tool_call(
        self, request: Any, handler: Callable[[Any], Awaitable[ToolMessage | Command[Any]]]
    ) -> ToolMessage | Command[Any]:
        """Propose the call; pause the graph for a human when Tidegate escalates; answer with what really happened."""
        call = request.tool_call
        if request.tool is None:  # not one of the agent's tools: the framework's own "not a valid tool" error, nothing proposed
            return _not_a_tool(request)
        # Checked again here, not only in `before_agent`: a hand-built graph's `ToolNode(awrap_tool_call=...)` runs no
        # agent hooks, and a pause it could not resume would leave a human's grant unrun (the action ends `unknown`).
        configurable = _refuse_unresumable(getattr(request.runtime, "config", None))
        args = _checked(request.tool, call)
        action_id = _action_id(configurable["thread_id"], call["id"], request.state)
        try:
            outcome = await self.client.propose(
                call["name"], args, task=_task(configurable["thread_id"]), action_id=action_id, rationale="LangGraph tool call"
            )
        except REFUSED_ARGS as exc:  # the model's args (too large, a U+0000): its to fix, not the run's end
            refused = {"tidegate": "refused", "action_id": None, "edited_args": None}
            return ToolMessage(content=refused_text(exc), tool_call_id=call["id"], name=call["name"], status="error", artifact=refused)
        if isinstance(outcome, Escalated):
            interrupt(escalation_payload(outcome.action_id, outcome.approval_id, outcome.codes, outcome.position, call["name"], args))
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


_NOT_RESUMABLE = (
    "TidegateMiddleware needs a checkpointed thread: an escalated call pauses the graph with interrupt(), which only "
    "a checkpointer can resume. Pass checkpointer= to create_agent, or to compile() for a graph of your own with "
    'ToolNode(awrap_tool_call=...) (a durable one in production), and {"configurable": {"thread_id": ...}} as the config.'
)


def _not_a_tool(request: Any) -> ToolMessage:
    """LangChain's own answer to a call of a tool the agent was not given, made here: never handed on, never run.

    Handed on to the next middleware, a call whose tool a middleware inside this one resolves at run time (LangChain's
    dynamic tools, `request.override(tool=...)`) ran in the agent's process with no proposal at all: a 99,999 USD refund
    to a new payee, no decision, no audit row. Such a middleware goes before this one, so that what it resolves is governed.
    """
    call = request.tool_call
    tools = getattr(request.runtime, "tools", None) or ()
    content = INVALID_TOOL_NAME_ERROR_TEMPLATE.format(requested_tool=call["name"], available_tools=", ".join(t.name for t in tools))
    return ToolMessage(content, name=call["name"], tool_call_id=call["id"], status="error")


def _refuse_unresumable(config: Any) -> dict[str, Any]:
    """The run's `configurable` when a pause of it can be resumed, else `ValueError` (before anything is proposed).

    LangGraph puts the graph's checkpointer there for every node it runs, a `ToolNode`'s tool calls included.
    """
    configurable: dict[str, Any] = (config or {}).get(CONF) or {}
    if configurable.get(CONFIG_KEY_CHECKPOINTER) is None or configurable.get("thread_id") is None:
        raise ValueError(_NOT_RESUMABLE)
    return configurable


def _task(thread: Any) -> str:
    """`langgraph:<thread>`: each thread (conversation) is a task of its own, whichever process runs it.

    The policy keeps its task state per task: what the task read (its taint), how its calls ended (`tool_error_limit`),
    and for how long (`TIDEGATE_POLICY_TASK_STATE_KEPT_S`, 7 days, after which every call of the task is denied
    `task_expired`). Proposed under the client's one task, every thread a worker ran shared it: one thread's failures
    escalated another's writes, and a worker up for a week had every call denied (integrator probe F9). A thread id too
    long for a task id (200 characters) is hashed.
    """
    task = f"langgraph:{thread}"
    return task if len(task) <= 200 else f"langgraph:{hashlib.sha256(str(thread).encode()).hexdigest()}"


def _action_id(thread: Any, call_id: str | None, state: Any) -> str | None:
    """`langgraph:<thread>:<call id>`, then the id of the model's message that made the call if an earlier turn used the call id.

    A provider may number its calls `call_0` in every turn. Without the message's id, the same call made again in a
    later turn (the same refund asked for twice) was taken for the first one and answered with its outcome: reported
    done, never run. Read from the thread's checkpointed messages, so the node's
    re-run on resume finds the same id; a first use keeps the plain form (a thread paused before this release resumes
    under the id it proposed with).
    """
    if not call_id:
        return None
    plain = f"langgraph:{thread}:{call_id}"
    made_by = [m for m in _messages(state) if call_id in {c.get("id") for c in getattr(m, "tool_calls", None) or ()}]
    if len(made_by) < 2:
        return plain
    this = made_by[-1]  # the newest message making a call of this id is the one whose calls the tool node runs
    return f"{plain}:{getattr(this, 'id', None) or len(made_by)}"


def _messages(state: Any) -> list[Any]:
    """The thread's messages from the agent state (a dict, a model, or the list itself, as `ToolNode` accepts)."""
    if isinstance(state, list):
        return state
    messages = state.get("messages") if isinstance(state, dict) else getattr(state, "messages", None)
    return list(messages or ())


def _checked(tool: BaseTool, call: Any) -> dict[str, Any]:
    """The call's args as the tool's own schema accepts them (as `ToolNode` checks before running a tool), in JSON form.

    Raises LangGraph's `ToolInvocationError`, which `ToolNode` answers with its usual "Error invoking tool …
    Please fix the error and try again." message, so bad args are never proposed; a tool with a JSON-schema
    dict is not validated by LangChain either, and its args are proposed as the model gave them.
    """
    schema = tool.tool_call_schema  # the args the model controls (injected ones excluded)
    if not (isinstance(schema, type) and issubclass(schema, BaseModel)):
        return dict(call["args"])
    try:
        return checked_args(schema.model_validate(call["args"]))
    except ValidationError as exc:
        raise ToolInvocationError(call["name"], exc, call["args"], exc.errors()) from exc


def _runner(tool: BaseTool) -> Callable[[dict[str, Any]], Awaitable[Any]]:
    async def run(args: dict[str, Any]) -> Any:
        return await tool.ainvoke(args)

    return run
