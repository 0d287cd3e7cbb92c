"""Which task a `tools/call` is proposed under: one task per MCP session, so a session's policy state is its own.

The policy keeps what a task read (provenance: what taints its later calls), how its calls ended (`tool_error_limit`)
and how often they were retried (`retry_limit`) per task. One task for every caller of a gateway would let one
session's failures escalate another's writes, and one session's reads taint another's calls.

What a session is, in the order looked for:
1. `_meta["io.tidegate/session"]`: a handle the client names (any non-blank string of at most 256 printable
   characters). The MCP revision 2026-07-28 has no protocol sessions (each request stands alone: the `mcp`
   SDK's client speaks it to this gateway by default), so this is how such a client keeps its calls in one task.
2. The streamable-HTTP session (`Mcp-Session-Id`) of a client that opened one (revisions up to 2025-11-25):
   the id the SDK minted and checks belongs to the caller.
3. Neither: the gateway's own task. A stdio gateway serves one connection for its whole life, so that is one
   task per stdio connection; over HTTP it is every caller that names no session.

The task of a named session is a digest of the tenant, the principal, the proposer and the handle: the same
handle is the same task after a restart of the gateway (what the session read still taints its calls), and a
handle cannot name a task the gateway did not make (a planner's, another principal's).
"""

from __future__ import annotations

import hashlib
from typing import Any

from mcp.server.context import ServerRequestContext

from tidegate.client import ClientSettings

__all__ = ["SESSION_META", "session_of", "task_of"]

SESSION_META = "io.tidegate/session"
"""A client names its session in `_meta` so its calls share one task where the protocol has no session."""

_HTTP_SESSION = "mcp-session-id"


def session_of(ctx: ServerRequestContext[Any], meta: dict[str, Any]) -> tuple[str, str] | None:
    """The session of a call, as (where it came from, its id); None when the call names none (see the module).

    `meta` holds a valid `SESSION_META` or none (checked before).
    """
    if (named := meta.get(SESSION_META)) is not None:
        return "meta", str(named)
    request = ctx.request
    headers = getattr(request, "headers", None)  # a Starlette request over HTTP; None on stdio
    if headers is not None and (session := headers.get(_HTTP_SESSION)):
        return "http", str(session)
    return None


def task_of(session: tuple[str, str] | None, settings: ClientSettings, gateway_task: str) -> str:
    """The task a session's calls are proposed under: `gateway_task` for none, else one of its own (a digest, see the module)."""
    if session is None:
        return gateway_task
    who = "\x00".join((settings.tenant, settings.principal, settings.proposer, *session))
    return f"mcp-{hashlib.sha256(who.encode()).hexdigest()[:32]}"
