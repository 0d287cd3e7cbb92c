"""The `tidegate_action_status` tool: where a call this gateway proposed stands, and the rule of an action id.

It answers only the actions this gateway proposed (its ledger of proposals), each with its own call's answers:
any other id is `unknown`, however the tool caller learned it. An action a human is deciding is `pending` with
its approval id and reasons, as the call's own pending result was.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Callable
from typing import Any

from mcp import types

from tidegate.client import ActionIdReused, Position, Progress, Tidegate
from tidegate.client._resume import by_position, read_until_settled, settled
from tidegate.mcp_gateway.answers import BUS_DOWN, IDEMPOTENCY_META, STATUS_TOOL, error, invalid, pending, result_of, reused, said

__all__ = ["MAX_ACTION_ID", "STATUS_SCHEMA", "id_problem", "status"]

MAX_ACTION_ID = 256  # the contract's bound of an action id (schemas.events.ACTION_ID)

STATUS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["action_id"],
    "properties": {
        "action_id": {"type": "string", "description": "The action id of a pending result."},
        "position": {"type": "string", "description": "The position of that pending result (faster than reading from the start)."},
    },
}

_JSON_TYPES = {dict: "an object", list: "an array", bool: "a boolean", int: "a number", float: "a number", type(None): "null"}


def id_problem(value: Any) -> str | None:
    """What is wrong with `value` as an action id, or None: an id is a non-blank string of at most 256 printable characters."""
    if not isinstance(value, str):
        return f"is {_JSON_TYPES.get(type(value), type(value).__name__)}, not a string"
    if not value.strip():
        return "is empty"
    if len(value) > MAX_ACTION_ID:
        return f"is {len(value)} characters long: an action id has at most {MAX_ACTION_ID}"
    if any(unicodedata.category(c) == "Cc" for c in value):
        return "holds a control character (a line break, a tab, U+0000): an action id is printable text"
    return None


async def status(client: Tidegate, arguments: dict[str, Any], ended: Callable[[str], None]) -> types.CallToolResult:
    """Where an action this gateway proposed stands: its outcome, `pending`, or a tool error saying why it cannot tell.

    `ended(action_id)` is called once the answer says how the action ended (its caller now knows).
    """
    if unknown := sorted(set(arguments) - set(STATUS_SCHEMA["properties"])):
        names = ", ".join(json.dumps(name[:40]) for name in unknown[:5])
        return invalid(f"{STATUS_TOOL} takes action_id and position, nothing else: not {names}", "arguments")
    action_id = arguments.get("action_id")
    if action_id is None:
        return invalid("action_id is required: the action_id of a pending result", "action_id")
    if problem := id_problem(action_id):
        return invalid(f"action_id {problem}: pass the action_id of a pending result, as given", "action_id")
    position = arguments.get("position")
    if position is not None and not _is_position(position):
        return invalid(
            "position is not a position token: pass the position of the pending result as given, or leave it out",
            "position",
            action_id=action_id,
        )
    recorded = client.proposals.lookup(action_id)
    if recorded is None:  # only what this gateway proposed: another's id (another tenant's, a guessed one) says nothing
        return error(
            f"unknown action {action_id!r}: this gateway proposed no such action; pass the action_id of a pending result it returned",
            {"outcome": "unknown", "action_id": action_id},
        )
    start = position or recorded[0]
    # What `client.resume` reads, kept whole: while a human decides, the approval request read is what the answer names.
    progress = Progress(action_id, tenant_id=client.settings.tenant, action_digest=client.proposals.action_digest(action_id))
    try:
        await read_until_settled(client.transport, client.trust, by_position([(progress, start)]), timeout_s=2.0)
    except BUS_DOWN as exc:
        return error(
            f"the governance bus is unreachable ({said(exc)}): cannot tell where action {action_id} stands; poll again later",
            {"outcome": "unreachable", "action_id": action_id},
        )
    final = settled(progress)
    if final is not None:
        ended(action_id)
        return reused(final) if isinstance(final, ActionIdReused) else result_of(final)
    if client.proposals.unsent(action_id) is not None:  # recorded, never acknowledged: polling alone never sends it
        return error(
            f"action {action_id} may never have reached Tidegate (the governance bus was unreachable when it was proposed): "
            f"call the tool again with this action_id in _meta {IDEMPOTENCY_META} to send it",
            {"outcome": "not_sent", "action_id": action_id},
        )
    if progress.escalated and progress.requested is not None and progress.decision is not None:
        approval_id, codes = progress.requested.approval_id, [str(r.code) for r in progress.decision.reasons]
        return pending(
            action_id,
            start,
            f"A human is deciding this call (approval {approval_id}: {', '.join(codes)}); it has not run.",
            approval_id=approval_id,
            reasons=codes,
        )
    return pending(action_id, start, "Not decided yet (by Tidegate's policy or by a human); it has not run.")


def _is_position(value: Any) -> bool:
    try:
        Position.parse(value if isinstance(value, str) else "")
    except ValueError:
        return False
    return True
