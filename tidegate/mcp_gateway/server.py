"""Tidegate's catalog as an MCP server: every `tools/call` is a governed proposal.

allowed → executed once by the executor, its result returned; denied or rejected → a tool error
(`is_error`) carrying the reason codes; escalated → the call waits for the human with progress
notifications, or returns a pending result that `tidegate_action_status` answers later. A call whose
decision does not come within the client's decision timeout also returns a pending result: the
proposal stands, and the action id in the result is how to follow it (or to retry the call without
proposing it twice). A call or a poll that cannot reach the governance bus is a tool error saying so,
with the action id to retry under. A call no service could read (too large, nested too deep, NaN,
U+0000), whose args the tool's schema refuses (`invalid_args`, as the policy would deny them), or a malformed
action id or session in `_meta` is refused at once (`invalid_request`), nothing proposed. A tool the gateway does
not serve is the protocol's error (-32602, invalid params), as the MCP spec has it for an unknown tool. The gateway
serves the client's tenant only the tools it may call (`ToolCatalog.for_tenant`, the policy's `tool_not_granted` rule):
`tools/list` shows no other tenant's tool, and a call of one is answered as an unknown tool's, nothing proposed, and logged.
Each MCP session proposes under a task of its own (`sessions`); a `_meta` session named inside a transport session
(stdio, `Mcp-Session-Id`) is refused (`invalid_request`, reason `session_in_session`), nothing proposed. A call made
again without an action id after its caller was cut off unanswered (the gateway restarted, the call was cancelled),
or while the same call of its session waits for a human, follows the first proposal (`tasks.ActionTasks`).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterable
from typing import Any

from mcp import MCPError, types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from pydantic import ValidationError

from schemas import RiskClass, ToolSpec, action_digest
from servicekit import ToolCatalog
from tidegate.client import ActionIdReused, Decided, Escalated, ResultPending, Tidegate, Unsendable
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
    stage,
    waiting,
)
from tidegate.mcp_gateway.sessions import SESSION_META, SessionInSession, session_of, task_of
from tidegate.mcp_gateway.settings import GatewaySettings
from tidegate.mcp_gateway.status import MAX_ACTION_ID, STATUS_SCHEMA, id_problem, status
from tidegate.mcp_gateway.tasks import ActionTasks, MemoryActionTasks

__all__ = ["IDEMPOTENCY_META", "SESSION_META", "STATUS_TOOL", "build_server", "invalid_args", "result_of", "tool_hints"]

log = logging.getLogger(__name__)


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
    served = ToolCatalog({s.name: s for s in catalog if settings.tools is None or s.name in settings.tools})
    # What the client's tenant may call, and so all a model behind it is shown: another tenant's tools, their descriptions and
    # schemas, are never listed, and a call of one is answered as an unknown tool's (no answer tells a name apart as taken).
    specs = served.for_tenant(client.settings.tenant)  # and the policy's arg check
    listed = [
        types.Tool(name=s.name, description=s.description, input_schema=s.args_schema, annotations=tool_hints(s)) for s in specs.values()
    ]
    # Listed in both modes: a waiting call that reaches `wait_limit_s` also returns a pending result to poll.
    listed.append(types.Tool(name=STATUS_TOOL, description="Where a pending governed call stands.", input_schema=STATUS_SCHEMA))

    async def list_tools(ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        return types.ListToolsResult(tools=listed)

    async def call_tool(ctx: ServerRequestContext[Any], params: types.CallToolRequestParams) -> types.CallToolResult:
        return await proposed_call(ctx, params, rolled=False)

    async def proposed_call(ctx: ServerRequestContext[Any], params: types.CallToolRequestParams, *, rolled: bool) -> types.CallToolResult:
        arguments = params.arguments or {}
        if params.name == STATUS_TOOL:
            return await status(client, arguments, ended=tasks.answered)
        if params.name not in specs:  # the spec's protocol error for an unknown tool; nothing is proposed
            if params.name in served:
                log.warning(
                    "mcp gateway: refused a call of %s, which tenant %s may not call (not granted in its catalog entry's `tenants`), "
                    "as an unknown tool; nothing proposed",
                    quoted(params.name, limit=100),
                    client.settings.tenant,
                )
            raise MCPError(types.INVALID_PARAMS, f"unknown tool {quoted(params.name, limit=100)}; call one of tools/list")
        meta: dict[str, Any] = dict(ctx.meta or {})
        for key in (IDEMPOTENCY_META, SESSION_META):
            if key in meta and (problem := id_problem(meta[key])):
                return invalid(
                    f"_meta {key} {problem}; give a non-blank string of at most {MAX_ACTION_ID} printable characters, "
                    "or leave it out (nothing was proposed)",
                    f"_meta {key}",
                )
        try:
            check_args(arguments, max_depth=client.settings.max_json_depth)  # before the call is named, digested or validated
        except (Unsendable, ValidationError) as exc:
            return refused_call(exc)
        if problems := specs.arg_errors(params.name, arguments):  # what the policy would deny `invalid_args`: not proposed
            return invalid_args(params.name, problems)
        try:
            session = session_of(ctx, meta)
        except SessionInSession as exc:  # a transport session is one task: a _meta session does not leave it
            return invalid(str(exc), f"_meta {SESSION_META}", reason="session_in_session")
        task = task_of(session, client.settings, client.task_id)
        call = action_digest(client.settings.tenant, params.name, arguments)
        # Named here, so a call without an answer can say what to poll. The same call is followed, not proposed again, while
        # its session still waits on it or was not told how it ended, or when its caller was cut off unanswered.
        named: str | None = meta.get(IDEMPOTENCY_META)  # a valid id, or absent (checked above)
        action_id = named or tasks.following(call, task) or tasks.orphan(call) or f"mcp-{uuid.uuid4().hex}"
        task = tasks.bind(action_id, task)  # a retry after a restart, a call followed: the task it was first proposed in
        tasks.hold(action_id, call)
        try:
            answer, owed = await governed(ctx, params.name, arguments, action_id, task, named=named is not None)
        except BaseException:  # cancelled (the caller left, the gateway stops) or a bug: a retry of the call follows this one
            tasks.left(action_id)
            raise
        tasks.answered(action_id, owed=owed)
        if session is None and not rolled and _task_expired(answer):
            # The policy forgot the gateway's own task (it keeps a task TIDEGATE_POLICY_TASK_STATE_KEPT_S, 7 days) and denies
            # every call of it: a gateway up that long (an HTTP one whose clients name no session, a desktop's stdio one)
            # answered every call so. What the task read is forgotten there too, so a new task knows as much. The call,
            # denied and not run, is made again in it, once, unless its caller named it (its id is that denied call's).
            if client.task_id == task:
                client.task_id = f"task-{uuid.uuid4().hex[:12]}"
                log.warning("mcp gateway: the policy forgot its task %s (task_expired); calls go under %s now", task, client.task_id)
            if named is None:
                return await proposed_call(ctx, params, rolled=True)
        return answer

    async def governed(
        ctx: ServerRequestContext[Any], tool: str, arguments: dict[str, Any], action_id: str, task: str, *, named: bool
    ) -> tuple[types.CallToolResult, bool]:
        """The answer to a call, and whether it leaves the caller without how the call ended (pending, bus unreachable).

        `named`: the caller chose the action id (in `_meta`); else the gateway did.
        """
        came = time.monotonic()
        # A host that asked for no progress hears nothing until the answer: the decision and an allowed call's result
        # together fit in its bound (they were 30 s + 30 s, the TypeScript SDK's whole 60 s), then the call is pending.
        bounded = not _asked_for_progress(ctx)
        # A host that asked for progress hears where the call stands while it waits for the decision and an allowed call's
        # result (a slow tool: before, nothing until the answer).
        ticker = None if bounded else asyncio.create_task(_report_stages(ctx, client, action_id, settings.progress_every_s, came))
        try:
            # An allowed call's result is waited for no longer than a decision: a client's request would time out first
            waited = client.settings.decision_timeout_s
            outcome = await client.propose(
                tool,
                arguments,
                action_id=action_id,
                task=task,
                rationale="MCP tools/call",
                result_timeout_s=waited,
                total_timeout_s=settings.wait_without_progress_s if bounded else None,
            )
        except ActionIdReused as exc:  # the retry key names another call (here, or at the deployment): never its outcome
            return reused(exc), False
        except (Unsendable, ValidationError) as exc:  # too large for the services or the broker, a field the contract refuses
            return refused_call(exc), False
        except ResultPending:  # allowed, the executor's answer not in yet: it may be running, the model polls it
            return _still_open(client, action_id, _RUNNING, allowed=True), True
        except TimeoutError:  # proposed, but no decision yet: the model polls this action, it does not propose it again
            return _still_open(client, action_id, _UNDECIDED + (_UNDECIDED_NAMED if named else "")), True
        except BUS_DOWN as exc:  # the proposal stays recorded, unsent: a retry under its action id sends that very proposal
            return error(
                f"the governance bus is unreachable ({said(exc)}): action {action_id} may not have reached Tidegate, and nothing "
                f"was decided here. Call the tool again with this action_id in _meta {IDEMPOTENCY_META} once it is back: "
                "it is proposed once, never twice",
                {"outcome": "unreachable", "action_id": action_id},
            ), True
        finally:
            if ticker is not None:
                ticker.cancel()
        if isinstance(outcome, Escalated) and settings.on_escalation == "wait":
            limit_s = settings.wait_limit_s
            if bounded:  # no progress keeps its host waiting: answer pending before its request times out
                limit_s = min(limit_s, settings.wait_without_progress_s - (time.monotonic() - came))
            return await _wait_for_human(ctx, client, outcome, settings, stopping, limit_s, came)
        return result_of(outcome), isinstance(outcome, Escalated)

    return Server(
        "tidegate",
        version="1",
        instructions="Tools governed by Tidegate policy and approvals.",
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


def _task_expired(answer: types.CallToolResult) -> bool:
    """Whether the answer is the policy's denial `task_expired`: the task the call was proposed in is forgotten."""
    structured = answer.structured_content or {}
    return bool(answer.is_error) and structured.get("outcome") == "denied" and structured.get("reasons") == ["task_expired"]


def _asked_for_progress(ctx: ServerRequestContext[Any]) -> bool:
    """Whether the call's host sent a `progressToken`: only then do progress notifications keep its request open.

    A host that sent none (the MCP Inspector's CLI; the `mcp` SDK's `call_tool` without a `progress_callback`) never sees
    them, and its own request timeout runs on. `mcp.Client(server)` in process sends none either, even with a callback.
    """
    return (ctx.meta or {}).get("progress_token") is not None


async def _report_stages(ctx: ServerRequestContext[Any], client: Tidegate, action_id: str, every_s: float, came: float) -> None:
    """Every `every_s`, a progress notification saying where a call stands: waiting for the decision, or allowed and running."""
    while True:
        await asyncio.sleep(every_s)
        await ctx.session.report_progress(time.monotonic() - came, None, stage(client.progress_of(action_id), action_id))


async def _wait_for_human(
    ctx: ServerRequestContext[Any],
    client: Tidegate,
    outcome: Escalated,
    settings: GatewaySettings,
    stopping: asyncio.Event,
    limit_s: float,
    came: float,
) -> tuple[types.CallToolResult, bool]:
    """Wait for the human's decision, sending progress; after `limit_s`, or once the gateway stops, the pending result (owed).

    Once the human approved, the notifications say the call runs (it waits for its result), and who approved it. Their
    `progress` is the seconds since the call came, as `_report_stages`' before them (it only grows, as MCP asks).
    """
    waited = 0.0
    while waited < limit_s and not stopping.is_set():
        await ctx.session.report_progress(time.monotonic() - came, None, waiting(outcome, client.progress_of(outcome.action_id)))
        step = min(settings.progress_every_s, limit_s - waited)
        decided = await _decided(outcome, step, stopping)
        if decided is not None:
            return result_of(decided), False
        waited += step
    if stopping.is_set():
        return pending(
            outcome.action_id,
            outcome.position or None,  # empty: the story began before this gateway's start; a poll without one reads it all
            f"The gateway is stopping before a human decided this call (approval {outcome.approval_id}); it has not run, "
            "and the gateway knows it again once restarted.",
            approval_id=outcome.approval_id,
            reasons=outcome.codes,
        ), True
    return result_of(outcome), True


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


def tool_hints(spec: ToolSpec) -> types.ToolAnnotations:
    """The MCP hints of a catalog tool, for a host deciding what to confirm: what it changes, and whether twice is once.

    A read changes nothing (the other hints are meaningless then); a destructive tool may delete or overwrite; the
    catalog's `idempotent` says whether the same args twice have no further effect. A tool whose results hold content
    from outside the tenant (`untrusted_output`) reaches an open world; of the others the catalog does not say, so the
    hint is left to its default (open).
    """
    if spec.risk == RiskClass.READ:
        return types.ToolAnnotations(read_only_hint=True, open_world_hint=True if spec.untrusted_output else None)
    return types.ToolAnnotations(
        read_only_hint=False,
        destructive_hint=spec.risk == RiskClass.DESTRUCTIVE,
        idempotent_hint=spec.idempotent,
        open_world_hint=True if spec.untrusted_output else None,
    )


def invalid_args(tool: str, problems: list[str]) -> types.CallToolResult:
    """Args the tool's schema refuses, each problem as the policy would give it (`path: message`): nothing is proposed."""
    where = problems[0].split(": ", 1)[0]
    field = "args" if where == "(args)" else "args." + where.replace("/", ".")
    said = "; ".join(problems)[:2000]
    return invalid(
        f"the args do not fit the schema of {tool} ({said}); nothing was proposed: fix them and call again",
        field,
        reason="invalid_args",
        errors=problems[:20],
    )


_RUNNING = "Allowed, and the executor has not reported its result yet: it may be running, or have happened."
_UNDECIDED = (
    "Proposed, but Tidegate has not decided yet; it has not run. The policy service may be slow or down: the proposal "
    "stands and is decided once it is back. Poll it with this action_id; do not call the tool again without it (that would "
    "be another action, and both would run)."
)
# Added when the caller chose the action id: only then can it be one another call used first.
_UNDECIDED_NAMED = (
    " If no answer ever comes, the policy may have refused the call (an operator reads why in its log); one such reason is "
    "that the action id may be another's (another call used it first), and only that one is answered by a new action id."
)


def _still_open(client: Tidegate, action_id: str, message: str, **more: Any) -> types.CallToolResult:
    """A proposal that stands without an end yet: pending, from the position the client recorded it at."""
    recorded = client.proposals.lookup(action_id)
    return pending(action_id, recorded[0] if recorded else None, message, **more)
