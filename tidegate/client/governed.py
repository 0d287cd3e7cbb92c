"""`@governed`: a local Python function served as a catalog tool of kind `topic`, and proposed when called.

Calling the decorated function proposes the call; policy decides; a human approves if asked; the
executor (which alone reads authorizations and verifies their signature) sends a `tool.invocation`
to `tools.<tool>.requests` with the policy's signed authorization; the server loop in this process
verifies both signatures (the executor's on the invocation, the policy's on the authorization of
exactly these args), runs the function once per idempotency key and replies; the call returns the
function's result. The function never runs on the caller's say-so, nor on anyone's but the policy's.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Generic, ParamSpec, TypeVar

from schemas import ErrorInfo, ToolInvocationData, ToolReply, ToolReplyData
from tidegate.client.client import Tidegate
from tidegate.client.ledger import CallLedger, SqliteLedger
from tidegate.client.outcomes import Decided, Escalated, Executed, Outcome

__all__ = ["GovernanceError", "GovernedTool", "governed", "serve_tool"]

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")


class GovernanceError(Exception):
    """The call did not run (denied, rejected, expired) or did not succeed; `outcome` says which and why."""

    def __init__(self, outcome: Outcome) -> None:
        codes = getattr(outcome, "codes", None) or [getattr(outcome, "status", "failed")]
        super().__init__(f"{outcome.tool}: {type(outcome).__name__.lower()} ({', '.join(codes)})")
        self.outcome = outcome


class GovernedTool(Generic[P, R]):
    """A function behind Tidegate: `await tool(...)` proposes it; the client's server loop runs it when authorized."""

    def __init__(self, fn: Callable[P, R] | Callable[P, Awaitable[R]], tool: str, client: Tidegate, ledger: CallLedger | None) -> None:
        self.fn = fn
        self.tool = tool
        self.client = client
        self.ledger = ledger
        self._signature = inspect.signature(fn)
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", tool)

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Propose the call (args bound by name), wait for policy and any human, return the function's result."""
        bound = self._signature.bind(*args, **kwargs)
        bound.apply_defaults()
        outcome = await self.client.propose(self.tool, dict(bound.arguments), wait_for_human=True)
        return unwrap(outcome)  # type: ignore[no-any-return]

    async def run(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """Run the function itself on authorized arguments; the result as the tool's JSON result."""
        fn: Callable[..., Any] = self.fn  # arguments arrive by name, from JSON
        value = fn(**arguments)
        if inspect.isawaitable(value):
            value = await value
        return {"value": value}

    async def serve(self) -> None:
        """Answer this tool's invocations until cancelled (see `serve_tool`)."""
        ledger = self.ledger or SqliteLedger(self.client.settings.state_dir / f"{self.tool}.sqlite3")
        await serve_tool(self.client, self.tool, self.run, ledger)


def unwrap(outcome: Outcome) -> Any:
    """The function's value from an `Executed` outcome; anything else raises `GovernanceError`."""
    if isinstance(outcome, Executed):
        return outcome.result.get("value", outcome.result)
    raise GovernanceError(outcome)


def governed(
    tool: str, *, client: Tidegate, ledger: CallLedger | None = None, serve: bool = True
) -> Callable[[Callable[P, R] | Callable[P, Awaitable[R]]], GovernedTool[P, R]]:
    """Turn a function into a governed tool named `tool` (declare it in the catalog with kind `topic`).

    With `serve` (default), the client answers the tool's invocations while it runs; the ledger
    (default: SQLite under the client's state dir) keeps each idempotency key's answer across restarts.
    """

    def wrap(fn: Callable[P, R] | Callable[P, Awaitable[R]]) -> GovernedTool[P, R]:
        governed_tool = GovernedTool(fn, tool, client, ledger)
        if serve:
            client.run_in_background(governed_tool.serve())
        return governed_tool

    return wrap


Run = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


async def serve_tool(client: Tidegate, tool: str, run: Run, ledger: CallLedger) -> None:
    """Answer `tools.<tool>.requests`: run once per idempotency key, reply, then ack (a crash means a redelivery).

    Only an invocation the executor signed, carrying the policy's signed authorization of exactly
    that call, runs the function (`Trust.refuses`); anything else is logged and dropped unanswered.

    A key begun but never answered (the process died while the function ran) is answered
    `outcome_unknown`, never run again: the executor reports the action unknown and a human follows up.
    """
    expected_reply_topic = f"{client.settings.topic_prefix}tools.{tool}.replies"
    async for delivery in client.transport.serve(f"tools.{tool}.requests", f"tool-{tool}"):
        invocation = delivery.event
        data: ToolInvocationData = invocation.data
        refusal = client.trust.refuses(invocation)
        if refusal is None and (data.tool != tool or data.reply_topic != expected_reply_topic):
            refusal = f"it names tool {data.tool} and reply topic {data.reply_topic}"
        if refusal is not None:  # nothing runs and nothing answers: the executor alone may ask, for a call the policy signed
            log.warning("refusing invocation %s of %s (action %s): %s", invocation.id, tool, data.action_id, refusal)
            await delivery.ack()
            continue
        begun, reply = ledger.lookup(data.idempotency_key)
        if reply is None:
            if begun:
                reply = _error("outcome_unknown", "the process died while this call ran; it is not run again")
            else:
                ledger.begin(data.idempotency_key)
                reply = await _attempt(run, data.args)
            ledger.finish(data.idempotency_key, reply)
        answer = ToolReplyData(
            action_id=data.action_id, task_id=data.task_id, tenant_id=data.tenant_id, tool=tool, attempt=data.attempt, **reply
        )
        event = ToolReply.build(answer, source=f"urn:tidegate:client:{client.settings.proposer}")
        await client.transport.publish(f"tools.{tool}.replies", client.signer.sign(event))
        await delivery.ack()


async def _attempt(run: Run, args: dict[str, Any]) -> dict[str, Any]:
    try:
        return {"ok": True, "result": await run(args)}
    except Exception as exc:  # the function's failure is the tool's reply, not the server's
        return _error(type(exc).__name__, str(exc))


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": ErrorInfo(type=kind, message=message[:2000], retryable=False).model_dump()}


async def decided(outcome: Outcome, timeout_s: float | None = None) -> Decided:
    """The final outcome: `outcome` itself, or the human's decision when it is `Escalated`."""
    if isinstance(outcome, Escalated):
        return await outcome.decision(timeout_s)
    return outcome
