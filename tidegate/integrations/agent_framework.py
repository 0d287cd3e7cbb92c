"""Microsoft Agent Framework (AutoGen's successor): function middleware that sends each call through Tidegate.

    refund = tool(issue_refund, approval_mode="never_require")       # Tidegate decides per call
    agent = Agent(client=chat_client, tools=[refund], middleware=[TidegateFunctionMiddleware(client, serve=[refund])])
    result = await agent.run("...", session=session)                 # escalation → result.user_input_requests
    responses = await tidegate_approval_responses(client, result.user_input_requests)   # None while waiting
    result = await agent.run(Message(role="user", contents=responses), session=session)

An escalation becomes the framework's own `function_approval_request` (the middleware returns it
as the call's result); the approval responses are built from Tidegate's decisions, never the other
way round. A response is `approved` once Tidegate decided, whatever it decided: the framework then
re-runs the call through the middleware, which answers the model with Tidegate's outcome (the result,
or why nothing ran: the reason codes, policy's messages, the approver's comment), since the framework's
own rejection tells the model only "rejected by user". Args are checked first with the tool's own
validation: a call whose args do not fit is never proposed, and the model gets the framework's usual
"Argument parsing failed" result; one that fits is proposed as the framework normalized it, in JSON
form (`"900"` for a number as `900.0`).
Args the client refuses, no decision in time (the proposal stands: the model is told not to call again)
and an action id another call holds are answered with why, not the framework's bare "Function failed.".
The action id is `agent-framework:<task id>:<call id>`, so the call's re-run after approval
follows the first proposal; use a task (`Tidegate(task_id=...)`) per session and keep it when resuming.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from agent_framework import Content, FunctionInvocationContext, FunctionMiddleware, FunctionTool, tool

from tidegate.client import Escalated, Executed, Tidegate
from tidegate.integrations._common import (
    TaskNotKept,
    escalation_payload,
    function_runner,
    outcome_dict,
    outcome_text,
    proposal_error_text,
    result_value,
    serve_function,
)

__all__ = ["TaskNotKept", "TidegateFunctionMiddleware", "tidegate_approval_responses"]


class TidegateFunctionMiddleware(FunctionMiddleware):  # type: ignore[misc]
    """Never calls the function itself: Tidegate's executor does (the tools in `serve` are served from this process).

    Args:
        client: A started `Tidegate` client.
        serve: The agent's tools (`tool(fn, ...)`, served under the tool's name) or plain functions (served
            under the function's name, as `tool(fn)` names them) whose functions this process runs when
            Tidegate's executor invokes them; each is a catalog tool of kind `topic`.
    """

    def __init__(self, client: Tidegate, *, serve: Sequence[FunctionTool | Callable[..., Any]] = ()) -> None:
        self.client = client
        for item in serve:
            name, fn = _served(item)
            serve_function(client, name, function_runner(fn))

    async def process(self, context: FunctionInvocationContext, call_next: Callable[[], Awaitable[None]]) -> None:
        """Propose; on escalation return the framework's approval request; otherwise return Tidegate's outcome."""
        # The tool's own validation, which the framework runs before calling the function: bad args raise
        # its argument error, which it answers with "Error: Argument parsing failed."; nothing is proposed.
        context.function._prepare_arguments(context.arguments)
        call_id = str(context.metadata.get("call_id") or "")
        name = context.function.name
        args = dict(context.arguments)  # as the framework normalized them before the middleware: `"900"` for a number is `900.0`
        action_id = _action_id(self.client, call_id)
        try:
            outcome = await self.client.propose(name, args, action_id=action_id, rationale="Agent Framework tool call")
        except Exception as exc:  # the framework would tell the model only "Error: Function failed."
            said = proposal_error_text(exc, action_id)
            if said is None:
                raise
            context.result = said
            return
        if isinstance(outcome, Escalated):  # still undecided in Tidegate: (again) the framework's approval request
            call = Content.from_function_call(call_id=call_id, name=name, arguments=args, id=call_id)
            payload = escalation_payload(outcome.action_id, outcome.approval_id, outcome.codes, outcome.position, name, args)
            context.result = Content.from_function_approval_request(id=call_id, function_call=call, additional_properties=payload)
            return
        if isinstance(outcome, Executed) and outcome.edited_args is None:
            context.result = FunctionTool.parse_result(result_value(outcome))  # as the framework gives a function's value: JSON text
        else:  # a call that did not run, or ran with the args a human chose instead: what to tell the model
            context.result = outcome_text(outcome)


async def tidegate_approval_responses(client: Tidegate, requests: Sequence[Any], *, timeout_s: float = 2.0) -> list[Any] | None:
    """Approval responses for the requests Tidegate raised, once it decided them all; None while a human has not decided.

    Each response is `approved`: the framework re-runs the call through the middleware, which answers
    with Tidegate's outcome (the result, or why nothing ran). What Tidegate decided is in the response's
    `additional_properties["tidegate"]["outcome"]` (`executed`, `rejected`, `expired`, `denied`, `failed`…).
    Requests Tidegate did not raise (a tool with the framework's own `approval_mode="always_require"`) are
    left out: the application answers them itself and sends its responses with these.
    """
    responses: list[Any] = []
    for request in requests:
        if request.type != "function_approval_request" or "tidegate" not in (request.additional_properties or {}):
            continue
        call = request.function_call
        action_id = _action_id(client, call.call_id)
        _require_same_action(request.additional_properties["tidegate"], action_id, str(call.call_id))
        outcome = await client.propose(call.name, dict(call.parse_arguments() or {}), action_id=action_id)
        if isinstance(outcome, Escalated):
            try:
                outcome = await outcome.decision(timeout_s)
            except TimeoutError:
                return None
        response = request.to_function_approval_response(True)
        decided = request.additional_properties["tidegate"] | {"outcome": outcome_dict(outcome)["outcome"]}
        response.additional_properties = request.additional_properties | {"tidegate": decided}
        responses.append(response)
    return responses


def _served(item: FunctionTool | Callable[..., Any]) -> tuple[str, Callable[..., Any]]:
    """The name Tidegate knows the tool by (the framework's own naming), and the function its executor's invocation runs."""
    served = item if isinstance(item, FunctionTool) else tool(item)
    if served.func is None:
        raise ValueError(f"serve= got tool {served.name!r}, which has no function to run (a declaration only)")
    return served.name, served.func


def _require_same_action(escalated: dict[str, Any], action_id: str | None, call_id: str) -> None:
    """Refuse a request proposed under another task than this client's: answered here, the call would be proposed again.

    The request carries the action id it was proposed as (`agent-framework:<task>:<call id>`); a client of another task
    (`Tidegate()` without `task_id` in a new process) names the call otherwise and opened a second approval request for it.
    """
    proposed = escalated.get("action_id")
    if not isinstance(proposed, str) or proposed == action_id:
        return
    prefix, suffix = "agent-framework:", f":{call_id}"
    task = proposed[len(prefix) : -len(suffix)] if proposed.startswith(prefix) and proposed.endswith(suffix) else "?"
    raise TaskNotKept(
        f"approval request {escalated.get('approval_id')} is of the call proposed as {proposed}, not under this client's task "
        f"{action_id and action_id[len(prefix) : -len(suffix)]}: answered here, it would be proposed again, a second action "
        f"beside the one waiting in Tidegate; nothing was proposed. Resume the session with Tidegate(task_id={task!r}), and "
        "give each session a task of its own from its start"
    )


def _action_id(client: Tidegate, call_id: str | None) -> str | None:
    return f"agent-framework:{client.task_id}:{call_id}" if call_id else None
