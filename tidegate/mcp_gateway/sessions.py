"""Which task a `tools/call` is proposed under: one task per MCP session, so a session's policy state is its own.

The policy keeps what a task read (provenance: what taints its later calls), how its calls ended (`tool_error_limit`)
and how often they were retried (`retry_limit`) per task. One task for every caller of a gateway would let one
session's failures escalate another's writes, and one session's reads taint another's calls.

What a session is:
1. A transport session is one task, for all its calls:
   - the streamable-HTTP session (`Mcp-Session-Id`) of a client that opened one (revisions up to 2025-11-25):
     the id the SDK minted and checks belongs to the caller;
   - a stdio connection: a stdio gateway serves one connection for its whole life, so that is the gateway's own task.
   A call inside one that names a session in `_meta["io.tidegate/session"]` is refused (`SessionInSession`, nothing
   proposed), not obeyed and not ignored: obeyed, a client would leave what its session read (its taint) behind
   mid-session by naming a fresh one; ignored, a client that means two tasks would silently get one.
2. Where the protocol has no session (MCP 2026-07-28 over HTTP: each request stands alone, no `Mcp-Session-Id`; the
   `mcp` SDK's client speaks it to this gateway by default), `_meta["io.tidegate/session"]`: a handle the client
   names (any non-blank string of at most 256 printable characters), so that such a client keeps its calls in one task.
3. Neither (an HTTP call that names no session): the gateway's own task, shared by every such caller.

The task of a session is a digest of the tenant, the principal, the proposer and the session: a named handle is the
same task after a restart of the gateway (what the session read still taints its calls), and a handle cannot name a
task the gateway did not make (a planner's, another principal's, an `Mcp-Session-Id` session's).
"""

from __future__ import annotations

import hashlib
from typing import Any

from mcp.server.context import ServerRequestContext

from tidegate.client import ClientSettings

__all__ = ["SESSION_META", "SessionInSession", "session_of", "task_of"]

SESSION_META = "io.tidegate/session"
"""A client names its session in `_meta` so its calls share one task where the protocol has no session."""

_HTTP_SESSION = "mcp-session-id"


class SessionInSession(ValueError):
    """A call names a `_meta` session inside a transport session, which is one task already: refused, nothing proposed."""


def session_of(ctx: ServerRequestContext[Any], meta: dict[str, Any]) -> tuple[str, str] | None:
    """The session of a call, as (where it came from, its id); None for the gateway's own task (see the module).

    `meta` holds a valid `SESSION_META` or none (checked before).

    Raises:
        SessionInSession: `meta` names a session, and the call came in a transport session (stdio, `Mcp-Session-Id`).
    """
    named = meta.get(SESSION_META)
    headers = getattr(ctx.request, "headers", None)  # a Starlette request over HTTP; None on stdio (and in memory)
    if headers is None:
        if named is not None:
            raise SessionInSession(
                f"_meta {SESSION_META} names a session, but this stdio connection is one task for its whole life: naming another "
                "does not leave it. Leave it out, or start another gateway connection for another task (nothing was proposed)"
            )
        return None
    if session := headers.get(_HTTP_SESSION):
        if named is not None:
            raise SessionInSession(
                f"_meta {SESSION_META} names a session, but this call is in the MCP session of its Mcp-Session-Id, which is one task "
                "for all its calls: naming another does not leave it. Leave it out, or open a new MCP session for another task "
                "(nothing was proposed)"
            )
        return "http", str(session)
    return None if named is None else ("meta", str(named))


def task_of(session: tuple[str, str] | None, settings: ClientSettings, gateway_task: str) -> str:
    """The task a session's calls are proposed under: `gateway_task` for none, else one of its own (a digest, see the module)."""
    if session is None:
        return gateway_task
    who = "\x00".join((settings.tenant, settings.principal, settings.proposer, *session))
    return f"mcp-{hashlib.sha256(who.encode()).hexdigest()[:32]}"
