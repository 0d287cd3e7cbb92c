"""What a served function sees of the call it runs, and how it says that the call failed.

`ToolFailed` is the served function's own failure, said precisely: whether a retry could succeed, and whether
the call may have taken effect anyway. `served_call()` names the invocation being run (its action id is the
idempotency key to hand a payment provider); a function that declares a `tidegate_call` parameter gets it so.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from schemas import ToolInvocationData

__all__ = ["CALL_PARAMETER", "ServedCall", "ToolFailed", "call_function", "served_call", "without_call_parameter"]

log = logging.getLogger(__name__)

CALL_PARAMETER = "tidegate_call"
"""A served function that declares a parameter of this name gets the `ServedCall` in it (it is never proposed as an arg)."""


class ToolFailed(Exception):
    """Raise it from a served function to say how its call failed; the executor retries or reports the action on it.

    Args:
        message: What went wrong, for a person (and the model, quoted as data).
        retryable: The same call could succeed later: the executor calls again, within the tool's `max_attempts`.
        maybe_applied: The call may have taken effect anyway (a timeout after the request was sent): a writing
            tool's action ends `unknown` and a human follows it up, unless the catalog says a repeat is safe.
        type: A stable error class of the tool (default: the exception's class name, `ToolFailed` or a subclass's).
    """

    def __init__(self, message: str, *, retryable: bool = False, maybe_applied: bool = False, type: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.maybe_applied = maybe_applied
        self.type = type if type is not None else self.__class__.__name__


@dataclass(frozen=True)
class ServedCall:
    """The invocation a served function runs for: which action (its idempotency key), of which task and tenant, until when."""

    action_id: str
    idempotency_key: str
    task_id: str
    tenant_id: str
    tool: str
    attempt: int
    deadline: datetime

    @classmethod
    def of(cls, data: ToolInvocationData) -> ServedCall:
        """The call `data` asks for."""
        return cls(data.action_id, data.idempotency_key, data.task_id, data.tenant_id, data.tool, data.attempt, data.deadline)


_CURRENT: ContextVar[ServedCall | None] = ContextVar("tidegate_served_call", default=None)


def served_call() -> ServedCall | None:
    """The invocation being served in this context (also in the worker thread of a sync function); None outside one."""
    return _CURRENT.get()


def serving(call: ServedCall) -> Any:
    """Make `call` the current one (`served_call()`) in this context; returns the token to reset it with."""
    return _CURRENT.set(call)


def done_serving(token: Any) -> None:
    """Undo `serving`."""
    _CURRENT.reset(token)


def without_call_parameter(signature: inspect.Signature) -> inspect.Signature:
    """`signature` without `tidegate_call`: what a caller binds and what is proposed."""
    return signature.replace(parameters=[p for p in signature.parameters.values() if p.name != CALL_PARAMETER])


async def call_function(fn: Callable[..., Any], args: dict[str, Any]) -> Any:
    """`fn(**args)`, with `tidegate_call` when it declares it; awaited when async, in a worker thread when sync.

    A sync function runs in a thread so that other calls are served meanwhile; at its deadline the serve
    loop stops waiting for it, but a thread cannot be stopped: it runs on, and says in the log when it ends late.
    """
    kwargs = dict(args)
    if CALL_PARAMETER in _parameters(fn):
        kwargs[CALL_PARAMETER] = served_call()
    if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__):
        return await fn(**kwargs)
    value = await asyncio.to_thread(_in_thread, fn, kwargs)
    return await value if inspect.isawaitable(value) else value


def _in_thread(fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    """Run a sync function (in a worker thread, which has the serving context) and log when it ended past its deadline."""
    try:
        return fn(**kwargs)
    finally:
        call = served_call()
        if call is not None and time.time() > call.deadline.timestamp():
            log.warning(
                "%s for action %s (attempt %d) finished after its deadline %s, in a thread that could not be stopped: "
                "the executor had stopped waiting and nothing is sent; whatever it did has happened (the follow-up should know)",
                call.tool,
                call.action_id,
                call.attempt,
                call.deadline.isoformat(),
            )


def _parameters(fn: Callable[..., Any]) -> Any:
    try:
        return inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a builtin without a signature declares nothing of ours
        return {}
