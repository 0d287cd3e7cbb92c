"""pydantic-ai: a capability that sends every tool call through Tidegate; an escalation is a deferred approval.

    agent = Agent(model, tools=[...], output_type=[str, DeferredToolRequests], capabilities=[TidegateCapability(client, serve=[...])])
    result = await agent.run("...")
    if isinstance(result.output, DeferredToolRequests):            # a human must decide (in Tidegate)
        results = await tidegate_results(client, result.output)    # Tidegate's decisions, approve-with-edits included
        if results is not None:
            result = await agent.run(message_history=result.all_messages(), deferred_tool_results=results)

The action id is `pydantic-ai:<conversation id>:<tool-call id>` and the task `pydantic-ai:<conversation id>` (a
resumed run carries the conversation id on its message history), so the run resumed with the human's decision, in
this process or a new one, follows the first proposal and another conversation reusing call ids proposes its own;
the tool function runs only when Tidegate's executor invokes it.
Approvals the agent asks for itself (a tool with pydantic-ai's own `requires_approval=True`) are not
Tidegate's: `tidegate_results` leaves them to the application, which adds its answers to the results.
No answer in time (no decision within `decision_timeout_s`, no result of an allowed call within `result_timeout_s`)
does not end the run: the tool returns that the call is not decided yet and must not be made again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic_ai import DeferredToolRequests, DeferredToolResults, RunContext, Tool, ToolApproved, ToolDenied
from pydantic_ai.capabilities import AbstractCapability
from pydantic_ai.exceptions import ApprovalRequired, ModelRetry, UserError
from pydantic_ai.messages import ModelResponse, ToolCallPart
from pydantic_ai.toolsets import AbstractToolset, ToolsetTool, WrapperToolset

from tidegate.client import Escalated, Executed, Tidegate
from tidegate.integrations._common import (
    REFUSED_ARGS,
    escalation_payload,
    function_runner,
    outcome_text,
    proposal_error_text,
    refused_text,
    result_value,
    serve_function,
)

__all__ = ["TidegateCapability", "tidegate_results"]


class TidegateCapability(AbstractCapability[Any]):  # type: ignore[misc]
    """Every tool call of the agent becomes a proposal; the tool's own function never runs on the model's say-so.

    Args:
        client: A started `Tidegate` client.
        serve: The agent's tools whose functions this process runs when Tidegate's executor invokes them
            (each a catalog tool of kind `topic`): a `Tool` is served under its name (`Tool(fn, name="refund")`
            as `refund`), a plain function under the function's name, as pydantic-ai names it.
    """

    def __init__(self, client: Tidegate, *, serve: Sequence[Tool[Any] | Callable[..., Any]] = ()) -> None:
        self.client = client
        for item in serve:
            name, fn = _served(item)
            serve_function(client, name, function_runner(fn))

    async def wrap_output_process(self, ctx: RunContext[Any], *, output_context: Any, output: Any, handler: Any) -> Any:
        """Refuse an output function: pydantic-ai would run it in this process on the model's say-so, with no proposal.

        An output function (`output_type=[some_function, ...]`) is how a pydantic-ai run often ends with an action; it is
        not a tool call, so `wrap_tool_execute` never saw it, and a 5,000 USD refund to a new payee ran with no decision
        and nothing in the audit (the frameworks probe). Make such an action a tool (governed like the others) and end
        the run with a plain output type.
        """
        if output_context.has_function:
            raise UserError(
                f"TidegateCapability does not govern output functions: {output_context.function_name or 'the output function'} "
                "would run in this process on the model's say-so, with no proposal and no policy decision. Make the action a tool "
                "(governed like the agent's other tools) and give the agent an output type that is not a function"
            )
        return await handler(output)

    def get_wrapper_toolset(self, toolset: AbstractToolset[Any]) -> AbstractToolset[Any]:
        """The agent's tools, each call of which is proposed instead of run: inside pydantic-ai's tool lifecycle.

        Every other capability's `before_tool_execute`, `on_tool_execute_error` and `after_tool_execute` runs around the
        proposal, as around a tool's function: a team's own check that raises `ModelRetry` before a refund still stops it
        before anything is proposed. (Proposed from `wrap_tool_execute` instead, which never called its handler, the
        lifecycle was skipped: such a check never ran, and the refund it refused was paid; the frameworks probe.)
        """
        return _GovernedToolset(toolset, client=self.client)


@dataclass
class _GovernedToolset(WrapperToolset[Any]):
    """The agent's assembled toolset, each call proposed to Tidegate; the tool's own function runs only on the executor's invocation."""

    client: Tidegate = field(kw_only=True)

    async def call_tool(self, name: str, tool_args: dict[str, Any], ctx: RunContext[Any], tool: ToolsetTool[Any]) -> Any:
        """Propose; defer to a human when Tidegate escalates; return what Tidegate's executor got, or why nothing ran."""
        call_id = ctx.tool_call_id or ""
        action_id, task = _action_id(ctx, call_id), _task(ctx)
        given = _given_args(ctx, call_id)
        proposed = {key: value for key, value in tool_args.items() if given is None or key in given}  # without defaults left out
        if ctx.tool_call_approved and isinstance(ctx.tool_call_metadata, dict) and "tidegate" in ctx.tool_call_metadata:
            # Resuming the escalated call: follow it as proposed (the args may now be the approver's edits).
            escalated = ctx.tool_call_metadata["tidegate"]
            action_id, proposed, task = escalated["action_id"], escalated["args"], _escalated_task(self.client, escalated)
        try:
            outcome = await self.client.propose(name, proposed, task=task, action_id=action_id, rationale="pydantic-ai tool call")
            if isinstance(outcome, Escalated) and ctx.tool_call_approved:  # approved in pydantic-ai alone: Tidegate's human decides
                outcome = await outcome.decision(self.client.settings.decision_timeout_s)
        except REFUSED_ARGS as exc:  # the model's args (too large, a U+0000): a retry prompt for it, not the run's end
            raise ModelRetry(refused_text(exc)) from exc
        except TimeoutError as exc:  # not decided yet (or still running): the proposal stands, so the model must not call again
            return proposal_error_text(exc, action_id) or str(exc)
        if isinstance(outcome, Escalated):
            payload = escalation_payload(outcome.action_id, outcome.approval_id, outcome.codes, outcome.position, name, proposed)
            payload["tidegate"]["task"] = task
            raise ApprovalRequired(metadata=payload)
        if isinstance(outcome, Executed) and outcome.edited_args is None:
            return result_value(outcome)
        return outcome_text(outcome)  # why nothing ran, or the result after the args a human chose instead of the model's


def _given_args(ctx: RunContext[Any], call_id: str) -> dict[str, Any] | None:
    """The args the model gave the call (before the tool's defaults filled in the rest), from the run's messages."""
    for message in reversed(ctx.messages):
        if isinstance(message, ModelResponse):
            for part in message.parts:
                if isinstance(part, ToolCallPart) and part.tool_call_id == call_id:
                    given: dict[str, Any] = part.args_as_dict()
                    return given
    return None


async def tidegate_results(client: Tidegate, requests: DeferredToolRequests, *, timeout_s: float = 2.0) -> DeferredToolResults | None:
    """The humans' decisions, from Tidegate, as deferred results; None while any is still waiting (each for `timeout_s` at most).

    An approval with edits becomes `ToolApproved(override_args=...)`; a rejection, an expiry or a
    denial after the grant becomes `ToolDenied` saying why (the reason codes, policy's messages, the
    approver's comment, quoted). Each result carries the escalation as metadata, so the resumed call
    follows the proposal it answers. Only the approvals Tidegate asked
    for are answered: one the agent asked for itself (pydantic-ai's `requires_approval=True`) has no
    Tidegate request, so the application adds its own answer (`results.approvals[call_id] = ...`) before resuming.
    """
    approvals: dict[str, ToolApproved | ToolDenied] = {}
    metadata: dict[str, dict[str, Any]] = {}
    for call in requests.approvals:
        proposal = requests.metadata.get(call.tool_call_id) or {}
        if "tidegate" not in proposal:  # not Tidegate's escalation: the application's to answer
            continue
        escalated = proposal["tidegate"]
        try:
            outcome = await client.propose(
                call.tool_name,
                escalated["args"],
                task=_escalated_task(client, escalated),
                action_id=escalated["action_id"],
                timeout_s=timeout_s,
                result_timeout_s=timeout_s,
            )
            if isinstance(outcome, Escalated):
                outcome = await outcome.decision(timeout_s)
        except TimeoutError:  # a human has not decided, or the granted call's result has not come: answered later
            return None
        if isinstance(outcome, Executed):
            approvals[call.tool_call_id] = ToolApproved(override_args=outcome.edited_args)
        else:
            approvals[call.tool_call_id] = ToolDenied(outcome_text(outcome))
        metadata[call.tool_call_id] = proposal
    return DeferredToolResults(approvals=approvals, metadata=metadata)


def _action_id(ctx: RunContext[Any], call_id: str) -> str:
    """`pydantic-ai:<conversation>:<call id>`, then the call's turn when an earlier turn of the conversation used the call id.

    A provider may number its calls `call_0` in every turn: the same refund asked for again in a later turn was taken for
    the first one and answered with its outcome, never proposed nor run (the frameworks probe). The turn is the count of
    the conversation's model responses that made a call of this id, read from the run's messages: a run resumed with a
    human's decision carries the same history, so it finds the same id; a first use keeps the plain form.
    """
    plain = f"pydantic-ai:{ctx.conversation_id or ctx.run_id}:{call_id}"
    made = sum(
        1
        for message in ctx.messages
        if isinstance(message, ModelResponse) and any(isinstance(p, ToolCallPart) and p.tool_call_id == call_id for p in message.parts)
    )
    return plain if made < 2 else f"{plain}:{made}"


def _task(ctx: RunContext[Any]) -> str:
    """`pydantic-ai:<conversation>`: each conversation is a task of its own, the same in whichever process resumes it.

    Proposed under the client's task (by default a random one per process), a call resumed in a new process (the history
    and `DeferredToolRequests` kept while a human decided, as the docs say) was another task's call under the same action
    id: `tidegate_results` raised `ActionIdReused` on the proposal ledger, and without one the policy refused the repeat
    and the decision was never read (the integrator probe). A task id is at most 200 characters: a longer one is hashed.
    """
    task = f"pydantic-ai:{ctx.conversation_id or ctx.run_id}"
    return task if len(task) <= 200 else f"pydantic-ai:{hashlib.sha256(task.encode()).hexdigest()}"


def _escalated_task(client: Tidegate, escalated: dict[str, Any]) -> str:
    """The task an escalated call was proposed under: its metadata's, or the client's for one paused before tasks were kept."""
    task = escalated.get("task")
    return task if isinstance(task, str) and task else client.task_id


def _served(item: Tool[Any] | Callable[..., Any]) -> tuple[str, Callable[..., Any]]:
    """The name Tidegate knows the tool by (pydantic-ai's own naming), and the function its executor's invocation runs."""
    tool = item if isinstance(item, Tool) else Tool(item)
    if tool.takes_ctx:
        raise ValueError(f"serve= got tool {tool.name!r}, whose function takes a RunContext that Tidegate's executor cannot give it")
    return tool.name, tool.function
