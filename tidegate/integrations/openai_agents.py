"""OpenAI Agents SDK: function tools whose calls Tidegate decides; an escalation is the SDK's own approval interruption.

    refund = governed_function_tool(client, issue_refund)        # instead of @function_tool
    result = await Runner.run(agent, "...")                      # escalations → result.interruptions
    state = result.to_state(); saved = state.to_string()         # wait as long as humans take
    for waiting in await escalations(client, state):             # each interruption's approval id, to tell the approver
        print(waiting.approval_id, waiting.action_id)
    ...
    state = await RunState.from_string(agent, saved)
    if await settle_interruptions(client, state):                # Tidegate's decisions → approve/reject
        result = await Runner.run(agent, state)

`needs_approval` proposes the call and asks for the SDK's approval only when Tidegate escalated;
the SDK's approve/reject mirrors what the human decided in Tidegate, never the other way round.
Args are checked first with the SDK's own model of the function (what `@function_tool` validates with):
a call whose args do not fit is never proposed, and the model gets the SDK's usual tool error; one that
fits is proposed as that check accepted it, in JSON form (`"900"` for a number as `900.0`). An SDK
approval given while Tidegate's human has not decided fails the run at once (nothing ran): mirror Tidegate's
decision with `settle_interruptions` instead of approving in the SDK.
No answer in time (no decision within `decision_timeout_s`, no result of an allowed call within `result_timeout_s`)
does not end the run: the tool's output tells the model the call is not decided yet and must not be made again.
The SDK gives a run no id that survives `RunState`, so the action id is `openai-agents:<task id>:<call id>`:
use a task (a client, or `Tidegate(task_id=...)`) per conversation, and keep it when resuming. A call id the
conversation's input already holds (a provider numbering its calls per turn) gets `:<n>`, its n-th call of that id.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from agents import FunctionTool, RunContextWrapper, RunState, ToolApprovalItem, function_tool
from agents.exceptions import ModelBehaviorError
from agents.function_schema import function_schema
from agents.tool import maybe_invoke_function_tool_failure_error_function
from agents.tool_context import ToolContext
from agents.tool_guardrails import ToolInputGuardrailData
from pydantic import BaseModel, ValidationError

from tidegate.client import Decided, Escalated, Executed, Tidegate
from tidegate.integrations._common import (
    REFUSED_ARGS,
    TaskNotKept,
    checked_args,
    function_runner,
    outcome_text,
    proposal_error_text,
    refused_text,
    serve_function,
)

__all__ = ["Awaiting", "TaskNotKept", "escalations", "governed_function_tool", "settle_interruptions"]


def governed_function_tool(client: Tidegate, fn: Callable[..., Any], *, serve: bool = True, **function_tool_kwargs: Any) -> FunctionTool:
    """A `FunctionTool` for `fn` (same schema as `@function_tool`) whose calls go through Tidegate.

    With `serve`, this process runs `fn` when Tidegate's executor invokes it (a catalog tool of kind `topic`).
    """
    params = function_schema(fn).params_pydantic_model  # the SDK's own model of fn's args, as `@function_tool` builds it
    # Calls whose `needs_approval` met no decision in time (the policy slow or down) and so asked the SDK for no approval:
    # an escalation `invoke` meets for one of them is the policy's late answer, not an approval the SDK gave too early.
    undecided: set[str] = set()

    async def needs_approval(ctx: RunContextWrapper[Any], args: dict[str, Any], call_id: str) -> bool:
        if await _guardrail_refuses(tool, ctx, args, call_id):
            return False  # not proposed: the SDK runs the guardrails again before `invoke`, and answers the model as they say
        try:
            checked = _checked(params, tool.name, args)
            action_id = _action_id(client, call_id, _earlier_calls(getattr(ctx, "turn_input", None), call_id))
            outcome = await client.propose(tool.name, checked, action_id=action_id, rationale=_RATIONALE)
        except (ModelBehaviorError, *REFUSED_ARGS):
            return False  # not proposed: `invoke` answers it with the SDK's tool error
        except TimeoutError:
            undecided.add(call_id)
            return False  # the proposal stands: `invoke` follows it and, still without an answer, tells the model so
        return isinstance(outcome, Escalated)

    async def invoke(ctx: ToolContext[Any], arguments: str) -> str:
        try:
            args = _checked(params, tool.name, arguments)
        except ModelBehaviorError as exc:  # what the SDK's own invoker does with bad args: its failure function answers the model
            message = await maybe_invoke_function_tool_failure_error_function(function_tool=tool, context=ctx, error=exc)
            if message is None:
                raise
            return str(message)
        action_id = _action_id(client, ctx.tool_call_id, _earlier_calls(getattr(ctx, "turn_input", None), ctx.tool_call_id))
        try:
            outcome = await client.propose(tool.name, args, action_id=action_id)
        except REFUSED_ARGS as exc:  # the model's args (too large, a U+0000): told why, as a denial is (the SDK's default hides why)
            return refused_text(exc)
        except TimeoutError as exc:  # not decided yet (or still running): the proposal stands, so the model must not call again
            return proposal_error_text(exc, action_id) or str(exc)
        if isinstance(outcome, Escalated) and ctx.tool_call_id in undecided:  # the policy escalated after `needs_approval` gave up
            return _escalated_late(action_id, outcome.approval_id)
        if isinstance(outcome, Escalated):  # approved in the SDK while Tidegate's human has not decided
            raise RuntimeError(_approved_too_early(tool.name, outcome.approval_id))
        return outcome_text(outcome)

    tool = function_tool(fn, needs_approval=needs_approval, **function_tool_kwargs)
    tool.on_invoke_tool = invoke
    _PARAMS[invoke] = params
    if serve:
        serve_function(client, tool.name, function_runner(fn))
    return tool


async def settle_interruptions(client: Tidegate, state: RunState[Any, Any], *, timeout_s: float = 2.0) -> bool:
    """Mirror Tidegate's decisions into the run state; True when no interruption is left waiting.

    Executed → approve (the tool reports the result Tidegate's executor got); denied, rejected or
    expired → reject, with why as the message the model reads (the reason codes, policy's messages, the approver's comment).
    An interruption stays while a human has not decided, or while a granted call's result has not come (each waited
    on for `timeout_s` at most).
    """
    settled = True
    async for item, outcome in _interrupted(client, state, timeout_s):
        try:
            if isinstance(outcome, ModelBehaviorError):  # args the SDK could not read asked for approval without Tidegate
                state.reject(item, rejection_message=f"{outcome}; it did not run.")
                continue
            if outcome is None:
                settled = False
                continue
            if isinstance(outcome, Escalated):
                outcome = await outcome.decision(timeout_s)
        except TimeoutError:  # a human has not decided, or the granted call's result has not come: settled later
            settled = False
            continue
        if isinstance(outcome, Executed):
            state.approve(item)
        else:
            state.reject(item, rejection_message=outcome_text(outcome))
    return settled


@dataclass(frozen=True)
class Awaiting:
    """An interruption of the run that Tidegate escalated: the approval a human decides it in, and the action it is."""

    item: ToolApprovalItem
    approval_id: str
    action_id: str
    reasons: list[str]


async def escalations(client: Tidegate, state: RunState[Any, Any], *, timeout_s: float = 2.0) -> list[Awaiting]:
    """The run's interruptions that Tidegate escalated, each with its approval id (the SDK's `ToolApprovalItem` has no field for it).

    What the application tells its approver (`tidegate approvals show ap-…`, the approver page) or polls. Each call is
    followed under the action id it was proposed under, never proposed again (`TaskNotKept` as `settle_interruptions`);
    one without an answer within `timeout_s`, or that the policy did not escalate, is left out. A human's decision is
    mirrored into the run by `settle_interruptions`, as before.
    """
    waiting: list[Awaiting] = []
    async for item, outcome in _interrupted(client, state, timeout_s):
        if isinstance(outcome, Escalated):
            waiting.append(Awaiting(item, outcome.approval_id, outcome.action_id, outcome.codes))
    return waiting


async def _interrupted(
    client: Tidegate, state: RunState[Any, Any], timeout_s: float
) -> AsyncIterator[tuple[ToolApprovalItem, Decided | Escalated | ModelBehaviorError | None]]:
    """Each interruption of the run and what Tidegate answers its call, followed under the id `needs_approval` proposed it.

    None: no call id or tool name, or no answer within `timeout_s`; the SDK's `ModelBehaviorError`: args it could not read.
    """
    for item in state.get_interruptions():
        raw = item.raw_item
        call_id = raw.get("call_id") if isinstance(raw, dict) else getattr(raw, "call_id", None)
        arguments = raw.get("arguments") if isinstance(raw, dict) else getattr(raw, "arguments", None)
        if not call_id or not item.tool_name:
            yield item, None
            continue
        try:
            args = _checked(_params_of(item), item.tool_name, arguments)
        except ModelBehaviorError as exc:
            yield item, exc
            continue
        action_id = _interrupted_id(client, state, str(call_id))
        _require_proposed_here(client, action_id, item.tool_name)
        try:
            outcome: Decided | Escalated | None = await client.propose(
                item.tool_name, args, action_id=action_id, timeout_s=timeout_s, result_timeout_s=timeout_s
            )
        except TimeoutError:
            outcome = None
        yield item, outcome


_RATIONALE = "OpenAI Agents SDK tool call"


async def _guardrail_refuses(tool: FunctionTool, ctx: RunContextWrapper[Any], args: dict[str, Any], call_id: str) -> bool:
    """Whether one of the tool's input guardrails would refuse the call: asked before anything is proposed.

    The SDK asks `needs_approval` before it runs a tool's input guardrails, and an allowed proposal runs at once (the
    executor does not wait for the SDK): a refund the team's guardrail refused was paid, and the model read that it was
    refused (the frameworks probe). So the guardrails are run here first, on the same data the SDK gives them; one that
    refuses (or raises) keeps the call unproposed, and the SDK, running them again, answers the model as they say.
    """
    if not tool.tool_input_guardrails:
        return False
    context = ToolContext.from_agent_context(ctx, call_id, tool_name=tool.name, tool_arguments=json.dumps(args))
    for guardrail in tool.tool_input_guardrails:
        try:
            said = await guardrail.run(ToolInputGuardrailData(context=context, agent=getattr(ctx, "agent", None)))
        except Exception:  # the SDK meets the same failure when it runs it
            return True
        if said.behavior["type"] != "allow":
            return True
    return False


def _action_id(client: Tidegate, call_id: str, earlier: int = 0) -> str:
    """`openai-agents:<task id>:<call id>`, then `:<n>` for the n-th call of that id in the conversation (n ≥ 2).

    A provider may number its calls `call_0` in every turn: the same refund asked for again in a later turn was taken for
    the first one and answered with its outcome, never proposed nor run (the frameworks probe). `earlier` is how many
    calls of that id the turn's input already holds (the conversation so far, `to_input_list()`), which `needs_approval`,
    the tool and a resumed run all read alike; a first use keeps the plain form.
    """
    plain = f"openai-agents:{client.task_id}:{call_id}"
    return plain if earlier == 0 else f"{plain}:{earlier + 1}"


def _earlier_calls(items: Any, call_id: str) -> int:
    """How many function calls of `call_id` a list of input items holds (dicts, or the SDK's models)."""
    count = 0
    for item in items if isinstance(items, list) else ():
        fields = item if isinstance(item, dict) else {"type": getattr(item, "type", None), "call_id": getattr(item, "call_id", None)}
        if fields.get("type") == "function_call" and fields.get("call_id") == call_id:
            count += 1
    return count


def _interrupted_id(client: Tidegate, state: RunState[Any, Any], call_id: str) -> str:
    """The action id `needs_approval` proposed the interrupted call under, from the run's input and the client's ledger.

    The run's input (`RunState`'s, the SDK's own; no public accessor) holds the conversation the interrupted turn read; a
    run whose own earlier turns reused the id may count more, so the ledger has the last word: of the ids the call may
    have, the one it recorded with the highest count (never a new id, which would propose the call again).
    """
    earlier = _earlier_calls(getattr(state, "_original_input", None), call_id)
    candidates = [_action_id(client, call_id, n) for n in range(earlier + 8)]
    if client.proposals.lookup(candidates[earlier]) is not None:
        return candidates[earlier]
    recorded = [c for c in candidates if client.proposals.lookup(c) is not None]
    return recorded[-1] if recorded else candidates[earlier]


# The SDK's model of each governed tool's function, by the tool's invoker: settling an interruption proposes
# the args `needs_approval` proposed (as the SDK's model accepted them), which is what runs once it is approved.
_PARAMS: weakref.WeakKeyDictionary[Callable[..., Any], type[BaseModel]] = weakref.WeakKeyDictionary()


def _params_of(item: Any) -> type[BaseModel] | None:
    """The SDK's model of the interrupted call's function, when the agent's tool of that name is governed here."""
    for tool in getattr(item.agent, "tools", None) or ():
        if isinstance(tool, FunctionTool) and tool.name == item.tool_name:
            return _PARAMS.get(tool.on_invoke_tool)
    return None


def _checked(params: type[BaseModel] | None, tool: str, arguments: str | dict[str, Any] | None) -> dict[str, Any]:
    """The call's args, checked as the SDK's own invoker checks them: as `params` accepts them, in JSON form, when given.

    Raises the SDK's `ModelBehaviorError` ("Invalid JSON input for tool …"), as its invoker does.
    """
    try:
        args = json.loads(arguments) if isinstance(arguments, str) and arguments else arguments or {}
    except ValueError as exc:
        raise ModelBehaviorError(f"Invalid JSON input for tool {tool}: {arguments}") from exc
    if not isinstance(args, dict):
        raise ModelBehaviorError(f"Invalid JSON input for tool {tool}: expected a JSON object")
    if params is None:
        return args
    try:
        return checked_args(params(**args))
    except ValidationError as exc:
        raise ModelBehaviorError(f"Invalid JSON input for tool {tool}: {exc}") from exc


def _require_proposed_here(client: Tidegate, action_id: str, tool: str) -> None:
    """Refuse to propose an interrupted call again under a client's random task, when it was not proposed by this client.

    A client with a chosen task proposes it again under the same id (the policy answers the repeat with its decision).
    """
    if client.task_chosen or client.proposals.lookup(action_id) is not None:
        return
    raise TaskNotKept(
        f"the interrupted {tool} call was not proposed by this client, whose task {client.task_id} is its own random default: "
        f"proposed now, it would be a second action beside the one waiting in Tidegate; nothing was proposed. Resume the run "
        "with a client of the task it was proposed under, Tidegate(task_id=...) (the <task> of the approval's action id "
        "openai-agents:<task>:<call id>), and give each conversation a task of its own from its start"
    )


def _escalated_late(action_id: str, approval_id: str) -> str:
    """What the model reads when the policy's escalation came after `needs_approval` stopped waiting: the run goes on.

    It ended the run with "approved in the SDK while approval … still waits", which nobody had done, and left no RunState
    to resume (the frameworks probe). The call waits for a human in Tidegate; it runs if they approve, once.
    """
    return (
        f"Tidegate escalated this call to a human (approval {approval_id}, action {action_id}); it has not run, and runs once if "
        "they approve it. Do not make this call again: it would be a second action."
    )


def _approved_too_early(tool: str, approval_id: str) -> str:
    return (
        f"{tool} was approved in the SDK while approval {approval_id} still waits for a human in Tidegate; it did not run. "
        "Let the human decide in Tidegate, then mirror the decision with settle_interruptions instead of RunState.approve."
    )
