"""Tidegate's catalog as an MCP server: every `tools/call` is a governed proposal.

allowed → executed once by the executor, its result returned; denied or rejected → a tool error
(`is_error`) carrying the reason codes; escalated → the call waits for the human with progress
notifications, or returns a pending result that `tidegate_action_status` answers later. A call whose
decision does not come within the client's decision timeout also returns a pending result: the
proposal stands, and the action id in the result is how to follow it (or to retry the call without
proposing it twice). A call or a poll that cannot reach the governance bus is a tool error saying so,
with the action id to retry under. A call no service could read (too large, nested too deep, NaN,
U+0000) or a malformed action id in `_meta` is refused at once (`invalid_request`), nothing proposed.
A call made again without an action id after its caller was cut off unanswered (the gateway restarted,
the call was cancelled) follows the first proposal (`tasks.ActionTasks`).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable
from typing import Any

from mcp import types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from pydantic import ValidationError

from schemas import ToolSpec, action_digest
from tidegate.client import ActionIdReused, Decided, Escalated, Tidegate, Unsendable
from tidegate.client.limits import check_args
from tidegate.integrations._common import quoted
from tidegate.mcp_gateway.answers import (
    BUS_DOWN,
    IDEMPOTENCY_META,
    STATUS_TOOL,
    error,
    invalid,
    pending,
    refused_call,
    result_of,
    reused,
    said,
    waiting,
)
from tidegate.mcp_gateway.settings import GatewaySettings
from tidegate.mcp_gateway.status import MAX_ACTION_ID, STATUS_SCHEMA, id_problem, status
from tidegate.mcp_gateway.tasks import ActionTasks, MemoryActionTasks

__all__ = ["IDEMPOTENCY_META", "STATUS_TOOL", "build_server", "result_of"]


def build_server(
    client: Tidegate,
    catalog: Iterable[ToolSpec],
    settings: GatewaySettings,
    tasks: ActionTasks | None = None,
    stopping: asyncio.Event | None = None,
) -> Server[Any]:
    """An MCP low-level server over a started client; serve it with stdio or streamable HTTP.

    `tasks`: the task of each action proposed, and the calls still open (default: this process's memory; `run.gateway`
    keeps them on disk). `stopping`: once set, a call waiting for a human returns its pending result at once.
    """
    tasks = tasks or MemoryActionTasks()
    stopping = stopping or asyncio.Event()
    specs = {s.name: s for s in catalog if settings.tools is None or s.name in settings.tools}
    listed = [types.Tool(name=s.name, description=s.description, input_schema=s.args_schema) for s in specs.values()]
    # Listed in both modes: a waiting call that reaches `wait_limit_s` also returns a pending result to poll.
    listed.append(types.Tool(name=STATUS_TOOL, description="Where a pending governed call stands.", input_schema=STATUS_SCHEMA))

    async def list_tools(ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        return types.ListToolsResult(tools=listed)

    async def call_tool(ctx: ServerRequestContext[Any], params: types.CallToolRequestParams) -> types.CallToolResult:
        arguments = params.arguments or {}
        if params.name == STATUS_TOOL:
            return await status(client, arguments)
        if params.name not in specs:
            return error(f"unknown tool {quoted(params.name, limit=100)}; call one of tools/list", {"outcome": "unknown_tool"})
        meta: dict[str, Any] = dict(ctx.meta or {})
        if IDEMPOTENCY_META in meta and (problem := id_problem(meta[IDEMPOTENCY_META])):
            return invalid(
                f"_meta {IDEMPOTENCY_META} {problem}; give a non-blank string of at most {MAX_ACTION_ID} printable characters, "
                "or leave it out (nothing was proposed)",
                f"_meta {IDEMPOTENCY_META}",
            )
        try:
            check_args(arguments, max_depth=client.settings.max_json_depth)  # before the call is named or digested
        except (Unsendable, ValidationError) as exc:
            return refused_call(exc)
        call = action_digest(client.settings.tenant, params.name, arguments)
        # Named here, so a call without an answer can say what to poll; the same call cut off unanswered is followed, not proposed again.
        named: str | None = meta.get(IDEMPOTENCY_META)  # a valid id, or absent (checked above)
        action_id = named or tasks.orphan(call) or f"mcp-{uuid.uuid4().hex}"
        tasks.hold(action_id, call)
        try:
            answer = await governed(ctx, params.name, arguments, action_id)
        except BaseException:  # cancelled (the caller left, the gateway stops) or a bug: a retry of the call follows this one
            tasks.left(action_id)
            raise
        tasks.answered(action_id)
        return answer

    async def governed(ctx: ServerRequestContext[Any], tool: str, arguments: dict[str, Any], action_id: str) -> types.CallToolResult:
        try:
            task = tasks.bind(action_id, client.task_id)  # a retry after a restart: the task it was first proposed in
            outcome = await client.propose(tool, arguments, action_id=action_id, task=task, rationale="MCP tools/call")
        except ActionIdReused as exc:  # the retry key names another call (here, or at the deployment): never its outcome
            return reused(exc)
        except (Unsendable, ValidationError) as exc:  # too large for the services or the broker, a field the contract refuses
            return refused_call(exc)
        except TimeoutError:  # proposed, but no decision yet: the model polls this action, it does not propose it again
            return _undecided(client, action_id)
        except BUS_DOWN as exc:  # the proposal stays recorded, unsent: a retry under its action id sends that very proposal
            return error(
                f"the governance bus is unreachable ({said(exc)}): action {action_id} may not have reached Tidegate, and nothing "
                f"was decided here. Call the tool again with this action_id in _meta {IDEMPOTENCY_META} once it is back: "
                "it is proposed once, never twice",
                {"outcome": "unreachable", "action_id": action_id},
            )
        if isinstance(outcome, Escalated) and settings.on_escalation == "wait":
            return await _wait_for_human(ctx, outcome, settings, stopping)
        return result_of(outcome)

    return Server(
        "tidegate",
        version="1",
        instructions="Tools governed by Tidegate policy and approvals.",
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


async def _wait_for_human(
    ctx: ServerRequestContext[Any], outcome: Escalated, settings: GatewaySettings, stopping: asyncio.Event
) -> types.CallToolResult:
    """Wait for the human's decision, sending progress; at `wait_limit_s`, or once the gateway stops, the pending result."""
    waited = 0.0
    while waited < settings.wait_limit_s and not stopping.is_set():
        await ctx.session.report_progress(waited, None, waiting(outcome))
        decided = await _decided(outcome, settings.progress_every_s, stopping)
        if decided is not None:
            return result_of(decided)
        waited += settings.progress_every_s
    if stopping.is_set():
        return pending(
            outcome.action_id,
            outcome.position,
            f"The gateway is stopping before a human decided this call (approval {outcome.approval_id}); it has not run, "
            "and the gateway knows it again once restarted.",
            approval_id=outcome.approval_id,
            reasons=outcome.codes,
        )
    return result_of(outcome)


async def _decided(outcome: Escalated, timeout_s: float, stopping: asyncio.Event) -> Decided | None:
    """The human's decision (and what followed) if it comes within `timeout_s` and before the gateway stops, else None."""
    decision = asyncio.ensure_future(outcome.decision(timeout_s))
    stop = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait({decision, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in (decision, stop):
            waiter.cancel()
    if not decision.done() or decision.cancelled() or isinstance(decision.exception(), TimeoutError):
        return None
    return decision.result()


def _undecided(client: Tidegate, action_id: str) -> types.CallToolResult:
    recorded = client.proposals.lookup(action_id)
    return pending(
        action_id,
        recorded[0] if recorded else None,
        "Proposed, but Tidegate has not decided yet; it has not run. If no answer ever comes, the action id may be another's "
        "(the policy then refused this call): call the tool without it, or with a new one.",
    )
