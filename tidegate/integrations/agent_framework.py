"""Microsoft Agent Framework (AutoGen's successor): function middleware that sends each call through Tidegate.

    agent = Agent(client=chat_client, tools=[issue_refund], middleware=[TidegateFunctionMiddleware(client, serve=[issue_refund_fn])])
    result = await agent.run("...", session=session)                 # escalation → result.user_input_requests
    responses = await tidegate_approval_responses(client, result.user_input_requests)   # None while waiting
    result = await agent.run(Message(role="user", contents=responses), session=session)

An escalation becomes the framework's own `function_approval_request` (the middleware returns it
as the call's result); the approval responses are built from Tidegate's decisions, never the other
way round. The action id is `agent-framework:<task id>:<call id>`, so the call's re-run after approval
follows the first proposal; use a task (`Tidegate(task_id=...)`) per session and keep it when resuming.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from agent_framework import Content, FunctionInvocationContext, FunctionMiddleware

from tidegate.client import Escalated, Executed, Tidegate
from tidegate.integrations._common import escalation_payload, outcome_text, result_value, serve_function

__all__ = ["TidegateFunctionMiddleware", "tidegate_approval_responses"]


class TidegateFunctionMiddleware(FunctionMiddleware):  # type: ignore[misc]
    """Never calls the function itself: Tidegate's executor does (functions in `serve` are served from this process)."""

    def __init__(self, client: Tidegate, *, serve: Sequence[Callable[..., Any]] = ()) -> None:
        self.client = client
        for fn in serve:
            serve_function(client, fn.__name__, _runner(fn))

    async def process(self, context: FunctionInvocationContext, call_next: Callable[[], Awaitable[None]]) -> None:
        """Propose; on escalation return the framework's approval request; otherwise return Tidegate's outcome."""
        call_id = str(context.metadata.get("call_id") or "")
        name = context.function.name
        args = dict(context.arguments)
        outcome = await self.client.propose(name, args, action_id=_action_id(self.client, call_id), rationale="Agent Framework tool call")
        if isinstance(outcome, Escalated):  # still undecided in Tidegate: (again) the framework's approval request
            call = Content.from_function_call(call_id=call_id, name=name, arguments=args, id=call_id)
            payload = escalation_payload(outcome.action_id, outcome.approval_id, outcome.codes, outcome.position, name, args)
            context.result = Content.from_function_approval_request(id=call_id, function_call=call, additional_properties=payload)
            return
        # The function's value, or (a call that did not run, or ran with the args a human chose instead) what to tell the model.
        value = result_value(outcome) if isinstance(outcome, Executed) and outcome.edited_args is None else outcome_text(outcome)
        context.result = value if isinstance(value, str) else str(value)


async def tidegate_approval_responses(client: Tidegate, requests: Sequence[Any], *, timeout_s: float = 2.0) -> list[Any] | None:
    """Approval responses from Tidegate's decisions (executed → approved; anything else → rejected); None while waiting."""
    responses: list[Any] = []
    for request in requests:
        if request.type != "function_approval_request":
            continue
        call = request.function_call
        outcome = await client.propose(call.name, dict(call.parse_arguments() or {}), action_id=_action_id(client, call.call_id))
        if isinstance(outcome, Escalated):
            try:
                outcome = await outcome.decision(timeout_s)
            except TimeoutError:
                return None
        responses.append(request.to_function_approval_response(isinstance(outcome, Executed)))
    return responses


def _action_id(client: Tidegate, call_id: str | None) -> str | None:
    return f"agent-framework:{client.task_id}:{call_id}" if call_id else None


def _runner(fn: Callable[..., Any]) -> Callable[[dict[str, Any]], Awaitable[Any]]:
    async def run(args: dict[str, Any]) -> Any:
        value = fn(**args)
        if hasattr(value, "__await__"):
            value = await value
        return value

    return run
