"""What the gateway answers a tool caller: a Tidegate outcome, a pending result to poll, or a tool error saying what to do.

What the model reads of an outcome is what every adapter gives it (`outcome_text`): the result (after the args a
human chose, when they edited the call), or why nothing ran, with text from outside the agent quoted as data.
"""

from __future__ import annotations

import json
from typing import Any

from aiokafka.errors import KafkaError
from mcp import types
from pydantic import ValidationError

from tidegate.client import ActionIdReused, Decided, Denied, Escalated, Executed, Outcome, Progress, Rejected, Unsendable
from tidegate.integrations._common import outcome_text

__all__ = [
    "BUS_DOWN",
    "IDEMPOTENCY_META",
    "STATUS_TOOL",
    "error",
    "invalid",
    "pending",
    "refused_call",
    "result_of",
    "reused",
    "said",
    "stage",
    "waiting",
]

STATUS_TOOL = "tidegate_action_status"
IDEMPOTENCY_META = "io.tidegate/action_id"
"""A client may name the action in `_meta` so a retried `tools/call` never proposes twice."""
BUS_DOWN = (KafkaError, ConnectionError)  # aiokafka's errors are RuntimeErrors; the client's own say ConnectionError


def waiting(outcome: Escalated, progress: Progress | None = None) -> str:
    """A progress message while a human decides: the approval, and how to find the call again (JSON to copy) if this one is cut off.

    Once the human's grant is read (`progress`, the client's), the call runs: said so, with who approved it.
    """
    granted = progress.human[1] if progress is not None and progress.human and progress.human[0] == "approval.granted" else None
    if granted is not None:
        return f"approved by {granted.approver} (approval {outcome.approval_id}); {_running(outcome.action_id)}"
    return f"waiting for a human: approval {outcome.approval_id} ({', '.join(outcome.codes)}). {_cut_off(outcome.action_id)}"


def stage(progress: Progress | None, action_id: str) -> str:
    """A progress message while a call waits for the policy's decision, or, allowed, for its result."""
    if progress is not None and progress.allowed:
        return f"allowed; {_running(action_id)}"
    return f"proposed as action {action_id}; waiting for Tidegate's decision, nothing has run. {_cut_off(action_id)}"


def _running(action_id: str) -> str:
    return f"running: the executor has not reported its result yet. {_cut_off(action_id)}"


def _cut_off(action_id: str) -> str:
    poll, retry = json.dumps({"action_id": action_id}), json.dumps({IDEMPOTENCY_META: action_id})
    return (
        f"If this call is cut off, call {STATUS_TOOL} with {poll} to learn how it ends, or call the tool again with "
        f"_meta {retry} (it follows this call)"
    )


def pending(action_id: str, position: str | None, message: str, **more: Any) -> types.CallToolResult:
    """A call that has not ended: what to poll, and what the model should do (never call again without the id)."""
    said = (
        f"{message} Do not call the tool again without this action_id (that would propose the call twice): call {STATUS_TOOL} "
        f"with it to learn how it ends, or call the tool again with it in _meta {IDEMPOTENCY_META} (that follows this call)."
    )
    return text({"outcome": "pending", "action_id": action_id, **more, "position": position, "poll": STATUS_TOOL, "message": said})


def result_of(outcome: Outcome | Decided) -> types.CallToolResult:
    """The MCP answer for a Tidegate outcome: the result as `structured_content`, and the text every adapter gives the model."""
    if isinstance(outcome, Escalated):
        return pending(
            outcome.action_id,
            outcome.position or None,  # empty (the topics' beginning) is no token a poll takes: poll without one
            f"A human must decide this call first (approval {outcome.approval_id}: {', '.join(outcome.codes)}); it has not run.",
            approval_id=outcome.approval_id,
            reasons=outcome.codes,
        )
    said = outcome_text(outcome)
    if isinstance(outcome, Executed):
        return types.CallToolResult(content=[types.TextContent(type="text", text=said)], structured_content=outcome.result, is_error=False)
    structured: dict[str, Any] = {"action_id": outcome.action_id}
    if isinstance(outcome, Denied):
        structured |= {"outcome": "denied", "reasons": outcome.codes}
    elif isinstance(outcome, Rejected):
        structured |= {"outcome": "expired" if outcome.expired else "rejected", "reasons": outcome.codes}
        structured |= {"review_reason": outcome.review_reason} if outcome.review_reason else {}
    else:
        structured |= {"outcome": outcome.status, "error": outcome.error.model_dump() if outcome.error else None}
    return error(said, structured)


def refused_call(exc: Unsendable | ValidationError) -> types.CallToolResult:
    """A call no service could read or keep (too large, too deep, NaN, U+0000): refused before it was proposed."""
    if isinstance(exc, Unsendable):
        return invalid(f"{exc}; nothing was proposed", f"args.{exc.arg}" if exc.arg else "args", reason=exc.code)
    problems = [(".".join(map(str, e["loc"])), e["msg"]) for e in exc.errors()]
    said = "; ".join(f"{where}: {msg}" for where, msg in problems)
    return invalid(f"the call cannot be proposed ({said}); nothing was proposed", problems[0][0] if problems else "args")


def reused(exc: ActionIdReused) -> types.CallToolResult:
    """The action id names another call: nothing of this one runs."""
    return error(str(exc), {"outcome": "action_id_reused", "action_id": exc.action_id})


def invalid(message: str, field: str, **more: Any) -> types.CallToolResult:
    """A request the gateway cannot act on, naming the field that is wrong."""
    return error(message, {"outcome": "invalid_request", "field": field, **more})


def said(exc: BaseException) -> str:
    """An exception in one line: its type, and its message when it has one (aiokafka's messages start with the type already)."""
    name, message = type(exc).__name__, str(exc)
    return message if message.startswith(name) else f"{name}: {message}" if message else name


def text(value: dict[str, Any]) -> types.CallToolResult:
    """A result that is not an error, as JSON text and as `structured_content`."""
    return types.CallToolResult(content=[types.TextContent(type="text", text=json.dumps(value))], structured_content=value, is_error=False)


def error(message: str, structured: dict[str, Any]) -> types.CallToolResult:
    """A tool error: `message` for the model, `structured` for a program."""
    return types.CallToolResult(content=[types.TextContent(type="text", text=message)], structured_content=structured, is_error=True)
