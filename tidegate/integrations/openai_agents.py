"""OpenAI Agents SDK: function tools whose calls Tidegate decides; an escalation is the SDK's own approval interruption.

    refund = governed_function_tool(client, issue_refund)        # instead of @function_tool
    result = await Runner.run(agent, "...")                      # escalations → result.interruptions
    state = result.to_state(); saved = state.to_string()         # wait as long as humans take
    ...
    state = await RunState.from_string(agent, saved)
    if await settle_interruptions(client, state):                # Tidegate's decisions → approve/reject
        result = await Runner.run(agent, state)

`needs_approval` proposes the call and asks for the SDK's approval only when Tidegate escalated;
the SDK's approve/reject mirrors what the human decided in Tidegate, never the other way round.
The SDK gives a run no id that survives `RunState`, so the action id is `openai-agents:<task id>:<call id>`:
use a task (a client, or `Tidegate(task_id=...)`) per conversation, and keep it when resuming.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from agents import FunctionTool, RunContextWrapper, RunState, function_tool
from agents.tool_context import ToolContext

from tidegate.client import Escalated, Executed, Tidegate
from tidegate.integrations._common import outcome_text, serve_function

__all__ = ["governed_function_tool", "settle_interruptions"]


def governed_function_tool(client: Tidegate, fn: Callable[..., Any], *, serve: bool = True, **function_tool_kwargs: Any) -> FunctionTool:
    """A `FunctionTool` for `fn` (same schema as `@function_tool`) whose calls go through Tidegate.

    With `serve`, this process runs `fn` when Tidegate's executor invokes it (a catalog tool of kind `topic`).
    """

    async def needs_approval(ctx: RunContextWrapper[Any], params: dict[str, Any], call_id: str) -> bool:
        outcome = await client.propose(
            tool.name, dict(params), action_id=_action_id(client, call_id), rationale="OpenAI Agents SDK tool call"
        )
        return isinstance(outcome, Escalated)

    async def invoke(ctx: ToolContext[Any], arguments: str) -> str:
        outcome = await client.propose(tool.name, json.loads(arguments or "{}"), action_id=_action_id(client, ctx.tool_call_id))
        if isinstance(outcome, Escalated):  # approved in the SDK before Tidegate answered: Tidegate's answer decides
            outcome = await outcome.decision(client.settings.decision_timeout_s)
        return outcome_text(outcome)

    tool = function_tool(fn, needs_approval=needs_approval, **function_tool_kwargs)
    tool.on_invoke_tool = invoke
    if serve:
        serve_function(client, tool.name, _runner(fn))
    return tool


async def settle_interruptions(client: Tidegate, state: RunState[Any, Any], *, timeout_s: float = 2.0) -> bool:
    """Mirror Tidegate's decisions into the run state; True when no interruption is left waiting for a human.

    Executed → approve (the tool reports the result Tidegate's executor got); denied, rejected or
    expired → reject, with the reason codes as the message the model reads.
    """
    settled = True
    for item in state.get_interruptions():
        raw = item.raw_item
        call_id = raw.get("call_id") if isinstance(raw, dict) else getattr(raw, "call_id", None)
        arguments = raw.get("arguments") if isinstance(raw, dict) else getattr(raw, "arguments", None)
        if not call_id or not item.tool_name:
            settled = False
            continue
        outcome = await client.propose(item.tool_name, json.loads(arguments or "{}"), action_id=_action_id(client, str(call_id)))
        if isinstance(outcome, Escalated):
            try:
                outcome = await outcome.decision(timeout_s)
            except TimeoutError:
                settled = False
                continue
        if isinstance(outcome, Executed):
            state.approve(item)
        else:
            state.reject(item, rejection_message=outcome_text(outcome))
    return settled


def _action_id(client: Tidegate, call_id: str) -> str:
    return f"openai-agents:{client.task_id}:{call_id}"


def _runner(fn: Callable[..., Any]) -> Callable[[dict[str, Any]], Any]:
    async def run(args: dict[str, Any]) -> Any:
        value = fn(**args)
        if hasattr(value, "__await__"):
            value = await value
        return value

    return run
