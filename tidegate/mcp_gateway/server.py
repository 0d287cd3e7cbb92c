"""Tidegate's catalog as an MCP server: every `tools/call` is a governed proposal.

allowed → executed once by the executor, its result returned; denied or rejected → a tool error
(`is_error`) carrying the reason codes; escalated → the call waits for the human with progress
notifications, or returns a pending result that `tidegate_action_status` answers later. A call whose
decision does not come within the client's decision timeout also returns a pending result: the
proposal stands, and the action id in the result is how to follow it (or to retry the call without
proposing it twice). A call or a poll that cannot reach the governance bus is a tool error saying so,
with the action id to retry under.
`tidegate_action_status` answers only the actions this gateway proposed (its ledger of proposals), each with
its own call's answers: any other id is `unknown`, however the tool caller learned it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from typing import Any

from aiokafka.errors import KafkaError
from mcp import types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server

from schemas import ToolSpec
from tidegate.client import ActionIdReused, Decided, Denied, Escalated, Executed, Failed, Outcome, Position, Rejected, Tidegate
from tidegate.mcp_gateway.settings import GatewaySettings
from tidegate.mcp_gateway.tasks import ActionTasks, MemoryActionTasks

__all__ = ["IDEMPOTENCY_META", "STATUS_TOOL", "build_server", "result_of"]

STATUS_TOOL = "tidegate_action_status"
IDEMPOTENCY_META = "io.tidegate/action_id"
"""A client may name the action in `_meta` so a retried `tools/call` never proposes twice."""
_BUS_DOWN = (KafkaError, ConnectionError)  # aiokafka's errors are RuntimeErrors; the client's own say ConnectionError

_STATUS_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["action_id"],
    "properties": {
        "action_id": {"type": "string", "description": "The action id of a pending result."},
        "position": {"type": "string", "description": "The position of that pending result (faster than reading from the start)."},
    },
}


def build_server(client: Tidegate, catalog: Iterable[ToolSpec], settings: GatewaySettings, tasks: ActionTasks | None = None) -> Server[Any]:
    """An MCP low-level server over a started client; serve it with stdio or streamable HTTP.

    `tasks`: the task of each action proposed (default: this process's memory; `run.gateway` keeps it on disk).
    """
    tasks = tasks or MemoryActionTasks()
    specs = {s.name: s for s in catalog if settings.tools is None or s.name in settings.tools}
    listed = [types.Tool(name=s.name, description=s.description, input_schema=s.args_schema) for s in specs.values()]
    # Listed in both modes: a waiting call that reaches `wait_limit_s` also returns a pending result to poll.
    listed.append(types.Tool(name=STATUS_TOOL, description="Where a pending governed call stands.", input_schema=_STATUS_SCHEMA))

    async def list_tools(ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        return types.ListToolsResult(tools=listed)

    async def call_tool(ctx: ServerRequestContext[Any], params: types.CallToolRequestParams) -> types.CallToolResult:
        arguments = params.arguments or {}
        if params.name == STATUS_TOOL:
            return await _status(client, arguments)
        if params.name not in specs:
            return _error(f"unknown tool {params.name}", {"outcome": "unknown_tool"})
        named = dict(ctx.meta or {}).get(IDEMPOTENCY_META)
        action_id = str(named) if named else f"mcp-{uuid.uuid4().hex}"  # named here, so a call without an answer can say what to poll
        try:
            task = tasks.bind(action_id, client.task_id)  # a retry after a restart: the task it was first proposed in
            outcome = await client.propose(params.name, arguments, action_id=action_id, task=task, rationale="MCP tools/call")
        except ActionIdReused as reused:  # the retry key names another call (here, or at the deployment): never its outcome
            return _reused(reused)
        except TimeoutError:  # proposed, but no decision yet: the model polls this action, it does not propose it again
            return _undecided(client, action_id)
        except _BUS_DOWN as exc:  # the proposal stays recorded, unsent: a retry under its action id sends that very proposal
            return _error(
                f"the governance bus is unreachable ({_said(exc)}): action {action_id} may not have reached Tidegate, and nothing "
                f"was decided here. Call the tool again with this action_id in _meta {IDEMPOTENCY_META} once it is back: "
                "it is proposed once, never twice",
                {"outcome": "unreachable", "action_id": action_id},
            )
        if isinstance(outcome, Escalated) and settings.on_escalation == "wait":
            outcome = await _wait_for_human(ctx, outcome, settings)
        return result_of(outcome)

    return Server(
        "tidegate",
        version="1",
        instructions="Tools governed by Tidegate policy and approvals.",
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


async def _wait_for_human(ctx: ServerRequestContext[Any], outcome: Escalated, settings: GatewaySettings) -> Outcome:
    waited = 0.0
    while waited < settings.wait_limit_s:
        await ctx.session.report_progress(waited, None, f"waiting for a human: approval {outcome.approval_id} ({', '.join(outcome.codes)})")
        try:
            return await outcome.decision(timeout_s=settings.progress_every_s)
        except TimeoutError:
            waited += settings.progress_every_s
    return outcome


def _undecided(client: Tidegate, action_id: str) -> types.CallToolResult:
    recorded = client.proposals.lookup(action_id)
    return _text(
        {
            "outcome": "pending",
            "action_id": action_id,
            "position": recorded[0] if recorded else None,
            "poll": STATUS_TOOL,
            "message": f"Proposed, but Tidegate has not decided yet. Call {STATUS_TOOL} with this action_id and position to "
            f"learn how it ends; do not call the tool again (or, to retry it, pass this action_id in _meta {IDEMPOTENCY_META}). "
            "If no answer ever comes, the action id may be another's (the policy then refused this call): call the tool "
            "without it, or with a new one.",
        },
        is_error=False,
    )


async def _status(client: Tidegate, arguments: dict[str, Any]) -> types.CallToolResult:
    action_id = arguments.get("action_id")
    if not isinstance(action_id, str) or not action_id.strip():
        return _error("action_id is required: the action_id of a pending result", {"outcome": "invalid_request", "field": "action_id"})
    position = arguments.get("position")
    if position is not None:
        try:
            Position.parse(str(position))
        except ValueError:  # json's JSONDecodeError is a ValueError too
            return _error(
                "position is not a position token: pass the position of the pending result as given, or leave it out",
                {"outcome": "invalid_request", "field": "position", "action_id": action_id},
            )
    recorded = client.proposals.lookup(action_id)
    if recorded is None:  # only what this gateway proposed: another's id (another tenant's, a guessed one) says nothing
        return _error(
            f"unknown action {action_id!r}: this gateway proposed no such action; pass the action_id of a pending result it returned",
            {"outcome": "unknown", "action_id": action_id},
        )
    start = str(position) if position is not None else recorded[0]
    try:
        final = await client.resume(action_id, position=start, timeout_s=2.0)
    except ActionIdReused as reused:
        return _reused(reused)
    except _BUS_DOWN as exc:
        return _error(
            f"the governance bus is unreachable ({_said(exc)}): cannot tell where action {action_id} stands; poll again later",
            {"outcome": "unreachable", "action_id": action_id},
        )
    except TimeoutError:
        if client.proposals.unsent(action_id) is not None:  # recorded, never acknowledged: polling alone never sends it
            return _error(
                f"action {action_id} may never have reached Tidegate (the governance bus was unreachable when it was proposed): "
                f"call the tool again with this action_id in _meta {IDEMPOTENCY_META} to send it",
                {"outcome": "not_sent", "action_id": action_id},
            )
        return _text({"outcome": "pending", "action_id": action_id, "position": start, "poll": STATUS_TOOL}, is_error=False)
    return result_of(final)


def _reused(reused: ActionIdReused) -> types.CallToolResult:
    return _error(str(reused), {"outcome": "action_id_reused", "action_id": reused.action_id})


def result_of(outcome: Outcome | Decided) -> types.CallToolResult:
    """The MCP answer for a Tidegate outcome."""
    if isinstance(outcome, Executed):
        return _text(outcome.result, is_error=False)
    if isinstance(outcome, Escalated):
        return _text(
            {
                "outcome": "pending",
                "action_id": outcome.action_id,
                "approval_id": outcome.approval_id,
                "reasons": outcome.codes,
                "position": outcome.position,
                "poll": STATUS_TOOL,
            },
            is_error=False,
        )
    if isinstance(outcome, Denied | Rejected):
        kind = "denied" if isinstance(outcome, Denied) else ("expired" if outcome.expired else "rejected")
        return _error(
            f"{kind} by Tidegate: {', '.join(outcome.codes)}", {"outcome": kind, "action_id": outcome.action_id, "reasons": outcome.codes}
        )
    assert isinstance(outcome, Failed)
    error = outcome.error.model_dump() if outcome.error else None
    return _error(f"the call {outcome.status}: {error}", {"outcome": outcome.status, "action_id": outcome.action_id, "error": error})


def _said(exc: BaseException) -> str:
    """An exception in one line: its type, and its message when it has one (aiokafka's messages start with the type already)."""
    name, text = type(exc).__name__, str(exc)
    return text if text.startswith(name) else f"{name}: {text}" if text else name


def _text(value: dict[str, Any], *, is_error: bool) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=json.dumps(value))], structured_content=value, is_error=is_error
    )


def _error(message: str, structured: dict[str, Any]) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=message)], structured_content=structured, is_error=True)
