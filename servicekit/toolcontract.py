"""The contract between the executor and an in-process tool: what a tool receives, what it raises.

The demo's systems of record, the connectors and any integrator's own Python tools are written against it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import asyncpg

from schemas import ActionAuthorizedData

__all__ = ["Tool", "ToolContext", "ToolError", "retry_after_s"]


@dataclass(frozen=True)
class ToolContext:
    """Everything a tool call may use besides its args; built by the executor for each attempt.

    Attributes:
        pool: Connection pool of the database that holds the systems of record. A connection goes back to it without a
            session reset (a transaction left open is rolled back): a tool leaves no session state behind on it (use
            transaction-scoped locks and `SET LOCAL`, never a session advisory lock, `SET` or `LISTEN`).
        tenant_id: Tenant the call is made for; every read and write is scoped to it.
        action_id: The authorized action; also the idempotency key.
        idempotency_key: Key the tool must deduplicate on (the action id).
        task_id: Task the action belongs to.
        attempt: 1 for the first call, 2 for the first retry, ...
        deadline: The executor stops waiting for this attempt at this time.
        credential_scope: Credential scope the catalog names for this tenant, if any.
        credential: The secret of that scope, when the executor has one (never in a repr, so never in a log).
        connection: For a connector tool, the tenant's account settings that are not secret (endpoint, account id).
        authorized: The policy's signed authorization of this call (a `topic` tool forwards it for the tool service to verify).
    """

    pool: asyncpg.Pool
    tenant_id: str
    action_id: str
    idempotency_key: str
    task_id: str = ""
    attempt: int = 1
    deadline: datetime | None = None
    credential_scope: str | None = None
    credential: str | None = field(default=None, repr=False)
    connection: dict[str, str] = field(default_factory=dict)
    authorized: ActionAuthorizedData | None = None


class ToolError(Exception):
    """A tool call that did not succeed, with a stable type and whether trying again could help.

    Args:
        type: Stable error class of the tool, e.g. `unknown_payee`.
        message: What went wrong, for a person.
        retryable: Whether the same call could succeed later (the executor retries only these).
        maybe_applied: Whether the side effect may have happened anyway (a timeout after sending):
            the executor then repeats only calls that are safe to repeat, and reports others as unknown.
        retry_after_s: How long the system asked us to wait before trying again (a 429's `Retry-After`);
            the executor waits at least that long, within the tool's `backoff_max_s`.
    """

    def __init__(
        self, type: str, message: str, *, retryable: bool = False, maybe_applied: bool = False, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.type = type
        self.message = message
        self.retryable = retryable
        self.maybe_applied = maybe_applied
        self.retry_after_s = retry_after_s


class Tool(Protocol):
    """The signature of every in-process tool named by a catalog `entrypoint`."""

    async def __call__(self, ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
        """Perform the call for `ctx.tenant_id` with `args`; raise `ToolError` when it did not succeed."""
        ...


def retry_after_s(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds an HTTP `Retry-After` header asks for (delay-seconds or an HTTP date); None when absent or unreadable.

    What a tool hands to `ToolError(retry_after_s=...)`; a date gone by asks for no wait beyond the backoff.
    """
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # an HTTP date is always GMT; one written without a zone is read so
        when = when.replace(tzinfo=UTC)
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)
