"""The attempts of one authorized call: call the tool, again while its errors allow, then record how it ended.

This is the one layer that retries tool calls. The bus below retries only infrastructure errors of
the handler as a whole (and the claim makes that safe); tools and invokers never retry, so every
attempt is counted, costed and visible in `attempts` of the result.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NoReturn

from schemas import ActionAuthorizedData, ToolSpec, UndoPlan
from servicekit import Outlet
from servicekit.parking import park
from servicekit.toolcontract import ToolContext, ToolError
from services.executor.claims import ClaimSession
from services.executor.domain import Call, CallError, ClaimRecord, Finish, backoff_s, decide, final_status, safe_to_repeat
from services.executor.outcomes import call_error, outcome, settle
from services.executor.tools import ToolAnswer
from services.executor.undo_recording import ContextOf, UndoRecording

__all__ = ["Attempts", "CallTool", "Held", "KillCheck", "Unanswered", "park_while_stopping"]

log = logging.getLogger(__name__)

KillCheck = Callable[[str, str], str | None]
"""The reason of the kill switch stopping (tenant, tool), or None."""
CallTool = Callable[[ToolSpec, ToolContext, dict[str, Any]], Awaitable[ToolAnswer]]
"""One call of a tool with its context and args (`ToolInvokers.invoke`)."""
Unanswered = Callable[[ToolSpec, ToolContext], ToolError | None]
"""Why an attempt that timed out took no answer, when its invoker knows (`ToolInvokers.unanswered`: a refused reply)."""


def _no_explanation(spec: ToolSpec, ctx: ToolContext) -> ToolError | None:
    return None


async def park_while_stopping(action_id: str, where: str) -> NoReturn:
    """Start no call while the process stops: wait to be cancelled, leaving the authorization uncommitted for the next process.

    The stop lets the batch in hand finish for its grace (calls in flight end as they would), then
    cancels what is left, this wait among it; the next process reads the authorization again. Once
    every handler still running is parked, the batch ends at once (`servicekit.parking`).
    """
    log.info("action %s: the executor is stopping; %s is left to the next process", action_id, where)
    await park()


async def _no_undo(session: ClaimSession) -> UndoPlan | None:
    return None


@dataclass(frozen=True)
class Held:
    """An outcome the attempts reached that is not recorded yet: the tool answered, then the database connection was lost.

    The executor keeps it in memory until it is recorded, so the handler's next try records it (`Attempts.record`)
    instead of ending the call as one a stopped process left `running` ("may or may not have taken effect", a person
    asked to check a call whose answer this process had). A process that stops loses it, and the row says why.
    """

    done: ClaimRecord
    undo: Callable[[ClaimSession], Awaitable[UndoPlan | None]] = _no_undo


@dataclass(frozen=True)
class Attempts:
    """How the executor makes the attempts of a claimed call and ends it (see `Executor` for the fields it passes on).

    Attributes:
        call_tool: Calls a tool once; every attempt goes through it (the executor counts them).
        context: The context of each attempt.
        undo: Reads the state before the first attempt, and keeps the plan once the call succeeded.
        killed: The kill switch check, made right before every attempt.
        out: Where the result event goes (`outcomes.settle`).
        max_result_bytes: The largest result event that carries the whole result.
        unanswered: Why an attempt that timed out took no answer, if its invoker knows: then the attempt's error.
    """

    call_tool: CallTool
    context: ContextOf
    undo: UndoRecording
    killed: KillCheck
    out: Outlet
    max_result_bytes: int
    clock: Callable[[], datetime]
    sleep: Callable[[float], Awaitable[None]]
    stopping: asyncio.Event | None
    unanswered: Unanswered = _no_explanation
    held: dict[str, Held] = field(default_factory=dict)  # the executor's: outcomes reached, not recorded yet (by action id)

    async def call(
        self, session: ClaimSession, record: ClaimRecord, spec: ToolSpec, data: ActionAuthorizedData, step: Call, *, marked: bool = False
    ) -> ClaimRecord:
        """Call the tool, again while its errors allow; `marked`: the claim already marked the first attempt running."""
        if step.recovering:
            log.warning("action %s was interrupted mid-call; calling %s again with the same idempotency key", data.action_id, spec.name)
        attempts, started, extra_cost = record.attempts, time.monotonic(), 0.0
        before = await self.undo.prior_state(session, spec, data, recovering=step.recovering)  # kept by the first `running`
        # A process that stopped between two attempts left the last error and when the next may be made (`waiting`).
        error: ToolError | None = _kept_error(record) if record.status == "waiting" else None
        maybe: ToolError | None = error if error is not None and error.maybe_applied else None  # then later attempts cannot undo it
        if step.recovering:  # the attempt a dead process was making may have taken effect, whatever the next ones meet
            maybe = _interrupted_attempt(record, spec)
        # Attempts of an interrupted process count: `retry.max_attempts` bounds the action's calls in all (`end_of_interrupted`).
        for n in range(1, spec.retry.max_attempts - record.attempts + 1):
            if error is not None:
                await self._between_attempts(session, record, spec, error, attempts, resumed=n == 1)
            if error is not None or not marked:
                # Re-check right before every call: a switch set (or the expiry passed) during the read before or a backoff stops it.
                again = decide(
                    record, spec, now=self.clock(), expires_at=data.authorization.expires_at, killed=self.killed(data.tenant_id, data.tool)
                )
                if isinstance(again, Finish):
                    last = _sticky(error, maybe) if error is not None else maybe  # maybe: an interrupted attempt
                    return await self.stopped(session, record, spec, again, last, attempts, started, extra_cost)
            attempts += 1
            if error is not None or not marked:
                await session.running(attempts)
            ctx = self.context(data, spec, attempts)
            try:
                async with asyncio.timeout(spec.timeout_s):  # the call runs in this task: no task and no callback of its own
                    answer = await self.call_tool(spec, ctx, data.args)
            except ToolError as exc:
                error = exc
            except TimeoutError:  # a reply that came and was refused (a retired key) is the cause the operator needs, not the wait
                timed_out = ToolError("timeout", f"{spec.name} did not answer in {spec.timeout_s} s", retryable=True, maybe_applied=True)
                error = self.unanswered(spec, ctx) or timed_out
            except Exception as exc:  # a bug in a tool is its failure, not the executor's
                log.exception("tool %s raised", spec.name)
                error = ToolError("tool_crashed", f"{type(exc).__name__}: {exc}", maybe_applied=True)
            else:
                extra_cost += answer.cost_usd
                done = outcome(record, spec, "succeeded", answer.result, None, attempts, started, extra_cost)

                async def undo(on: ClaimSession, result: Any = answer.result) -> UndoPlan | None:
                    return await self.undo.plan(on, spec, data, result, before())

                return await self.record(session, Held(done, undo))
            log.info("action %s attempt %d of %s failed: %s: %s", data.action_id, attempts, spec.name, error.type, error.message)
            maybe = maybe or (error if error.maybe_applied else None)
            if error.maybe_applied and not safe_to_repeat(spec):
                break  # repeating could do it twice: the outcome is unknown, a person must check
            if not error.retryable:
                break
        assert error is not None
        error = _sticky(error, maybe)
        status = final_status(spec, maybe_applied=error.maybe_applied)
        info = call_error(error.type, error.message, retryable=error.retryable)
        return await self.record(session, Held(outcome(record, spec, status, None, info, attempts, started, extra_cost)))

    async def record(self, session: ClaimSession, held: Held) -> ClaimRecord:
        """Record an outcome the attempts reached, holding it (`held`) until the statement that records it has gone through."""
        self.held[held.done.action_id] = held
        recorded = await settle(session, held.done, self.out, self.max_result_bytes, await held.undo(session))
        self.held.pop(held.done.action_id, None)
        return recorded

    async def stopped_while_waiting(self, session: ClaimSession, record: ClaimRecord, spec: ToolSpec, stop: Finish) -> ClaimRecord:
        """End a call a stopped process left `waiting` between two attempts, which `stop` now refuses: the authorization was used."""
        return await self.stopped(session, record, spec, stop, _kept_error(record), record.attempts, time.monotonic(), 0.0)

    async def _between_attempts(
        self, session: ClaimSession, record: ClaimRecord, spec: ToolSpec, error: ToolError, attempts: int, *, resumed: bool
    ) -> None:
        """Wait out the backoff after `error`, the action `waiting` meanwhile; `resumed`: the wait a stopped process left."""
        if resumed:
            wait_s = max(0.0, (record.retry_at - self.clock()).total_seconds()) if record.retry_at is not None else 0.0
        else:
            wait_s = backoff_s(spec.retry, attempts, error.retry_after_s)
            kept = CallError(error.type, error.message, error.retryable, maybe_applied=error.maybe_applied)
            await session.waiting(attempts, kept, self.clock() + timedelta(seconds=wait_s))
        if self.stopping is None:
            await self.sleep(wait_s)
            return
        slept, stopped = asyncio.ensure_future(self.sleep(wait_s)), asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({slept, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (slept, stopped):
                waiter.cancel()
        if self.stopping.is_set():
            await park_while_stopping(record.action_id, f"before attempt {attempts + 1}")

    async def stopped(
        self,
        session: ClaimSession,
        record: ClaimRecord,
        spec: ToolSpec,
        stop: Finish,
        error: ToolError | None,
        attempts: int,
        started: float,
        extra_cost: float,
    ) -> ClaimRecord:
        """End the call that the re-check before its next attempt stopped (`stop`: kill switch or expiry).

        After a failed attempt the authorization was used: it is not dead-lettered, and an error that may
        have taken effect stays the result's error (what the person checking needs), with why the retry stopped.
        """
        if error is None:  # nothing called in this delivery: a refusal before the call
            info = call_error(stop.error_type, stop.message, dead=stop.dead_letter)
            return await self.record(session, Held(outcome(record, spec, stop.status, None, info, attempts, started, extra_cost)))
        status = final_status(spec, maybe_applied=error.maybe_applied or stop.status == "unknown")
        if error.maybe_applied:
            info = call_error(error.type, f"{error.message} (the retry was stopped: {stop.message})", retryable=error.retryable)
        else:
            info = call_error(stop.error_type, f"{stop.message} (stopped the retry after {error.type}: {error.message})")
        return await self.record(session, Held(outcome(record, spec, status, None, info, attempts, started, extra_cost)))


def _kept_error(record: ClaimRecord) -> ToolError:
    """The error of the attempt a `waiting` record's process made last, as the retry loop holds it."""
    kept = record.error or CallError("interrupted", "the last attempt's error was not kept", retryable=True)
    return ToolError(kept.type, kept.message, retryable=kept.retryable, maybe_applied=kept.maybe_applied)


def _sticky(error: ToolError, maybe: ToolError | None) -> ToolError:
    """The last attempt's error, still maybe-applied when an earlier attempt's was (a refused retry does not undo a timeout).

    An attempt a stopped executor left (`interrupted`) is said even when the last error may have taken effect too: else the
    result read "timeout … after 3 attempts", and nothing of the crash in the middle (oncall22 F4).
    """
    if maybe is None or maybe is error or (error.maybe_applied and maybe.type != "interrupted"):
        return error
    return ToolError(
        error.type,
        f"{error.message} (an earlier attempt may have taken effect: {maybe.type}: {maybe.message})",
        retryable=error.retryable,
        maybe_applied=True,
        retry_after_s=error.retry_after_s,
    )


def _interrupted_attempt(record: ClaimRecord, spec: ToolSpec) -> ToolError:
    """The attempt a dead process left `running`, as an error that may have taken effect (a recovery's attempts cannot undo it)."""
    return ToolError(
        "interrupted",
        f"the executor stopped during attempt {record.attempts} of {spec.name}",
        retryable=True,
        maybe_applied=True,
    )
