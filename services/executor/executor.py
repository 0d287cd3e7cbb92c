"""Performing one authorized action exactly once: verify, claim, call with retries, record, publish.

This is the one layer that retries tool calls. The bus below retries only infrastructure errors of
the handler as a whole (and the claim makes that safe); tools and invokers never retry, so every
attempt is counted, costed and visible in `attempts` of the result.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

from schemas import (
    ActionAuthorized,
    ActionAuthorizedData,
    ActionFailed,
    ActionResultData,
    ActionSucceeded,
    ActionUnknown,
    Envelope,
    ReasonCode,
    ResultCost,
    ToolSpec,
    UndoPlan,
    action_identity,
    storable,
)
from servicekit import Attr, Authority, Keyring, Outlet, Recorded, Reject, ToolCatalog, current_traceparent, span
from servicekit.costs import call_cost_usd
from servicekit.parking import park
from servicekit.toolcontract import ToolContext, ToolError
from servicekit.undo import UndoUnavailable, before_args, plan_undo
from services.executor.claims import ClaimSession, ClaimStore
from services.executor.credentials import CredentialStore
from services.executor.domain import (
    Call,
    CallError,
    ClaimRecord,
    Finish,
    backoff_s,
    check_authenticity,
    decide,
    end_of_interrupted,
    final_status,
    safe_to_repeat,
)
from services.executor.kept_results import kept_result
from services.executor.results import bounded_error, result_stand_in, undo_stand_in
from services.executor.settings import DEFAULT_MAX_RESULT_BYTES
from services.executor.tools import ToolInvokers
from services.executor.undo import InMemoryUndoStore, UndoKey, UndoStore

__all__ = ["Executor"]

log = logging.getLogger(__name__)

KillCheck = Callable[[str, str], str | None]
SOURCE = "tidegate/executor"
_RESULT_EVENTS: dict[str, type[Envelope]] = {"succeeded": ActionSucceeded, "failed": ActionFailed, "unknown": ActionUnknown}


@dataclass
class Executor:
    """Everything the executor needs to perform authorized calls; built once in `app.py`.

    Attributes:
        catalog: Tools by name; it also checks their args (each schema compiled once).
        keyring_loader: Loads the policy service's public keys (called again when an unknown key id shows up,
            so that a key created or rotated after start is picked up).
        claims: Where action ids are claimed.
        invokers: How each tool kind is called.
        credentials: Tenants' secrets by credential scope.
        out: Where result events go out (the bus): each is signed and encoded once, kept with the claim, and its
            kept bytes are what is published, on the first delivery and on every redelivery.
        authority: The deployment's public keys: a kept result event is published again only when it verifies as the
            executor's own for that very action (`kept_results`); None trusts none (a redelivery of a finished action
            is then dead-lettered).
        killed: The reason of the kill switch stopping (tenant, tool), or None.
        context_pool: Database pool handed to in-process tools (the systems of record).
        ready: Awaited before the first call: `control` read to its end, so that a kill switch set while
            the executor was down holds for its backlog of authorizations.
        clock: Current time (tests move it).
        sleep: Waits between attempts (tests make it instant).
        stopping: Set as the process begins to stop (`Bus.stopping`): no call starts after it, and a wait between
            two attempts ends in it; the action, `waiting`, is left to the next process (`_park`).
        undo: Where the prior states and undo plans of calls are kept (`executor.undo_plans`).
        max_result_bytes: The largest result event that carries the whole result (`TIDEGATE_EXECUTOR_MAX_RESULT_BYTES`);
            a larger one carries a stand-in (`services.executor.results`), the claim row the whole.
    """

    catalog: ToolCatalog
    keyring_loader: Callable[[], Keyring]
    claims: ClaimStore
    invokers: ToolInvokers
    credentials: CredentialStore
    out: Outlet
    killed: KillCheck
    authority: Authority | None = None
    context_pool: Any = None
    ready: Callable[[], Awaitable[None]] | None = None
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    stopping: asyncio.Event | None = None
    undo: UndoStore = field(default_factory=InMemoryUndoStore)
    max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES
    calls: int = field(default=0, init=False)
    _keyring: Keyring | None = field(default=None, init=False)
    _keyring_loaded_at: float = field(default=0.0, init=False)
    _ready: asyncio.Future[None] | None = field(default=None, init=False)

    # --- verification ------------------------------------------------------------------------

    def _keys(self, key_id: str) -> Keyring:
        if self._keyring is None or (not self._keyring.knows(key_id) and time.monotonic() - self._keyring_loaded_at > 1.0):
            self._keyring = self.keyring_loader()
            self._keyring_loaded_at = time.monotonic()
        return self._keyring

    # --- the handler's domain entry point ----------------------------------------------------

    async def _wait_ready(self) -> None:
        """Run nothing before `ready` returned once; the calls waiting share one wait (a failed wait is tried again)."""
        if self.ready is None:
            return
        if self._ready is None or (self._ready.done() and self._ready.exception() is not None):
            self._ready = asyncio.ensure_future(self.ready())
        await asyncio.shield(self._ready)

    async def handle(self, event: ActionAuthorized) -> None:
        """Perform the authorized call of `event` at most once; raise Reject for what must not run.

        Replays: an action id runs once, whatever arrives later. A redelivery of the event that
        claimed it is normal (at-least-once) and is answered from the record: the result event kept, when it
        proves the executor's own for this action (`kept_results`; else it is dead-lettered). Any other event for the
        same action id (a copy with a new event id, or a second signature of the same action) is
        also answered from the record, then dead-lettered as `authorization_replayed`. A second
        signature of another call under the same action id (its digest differs from the record's) is
        never called: an interrupted original ends as it would on its own redelivery.
        """
        await self._wait_ready()
        if self.stopping is not None and self.stopping.is_set():
            await self._park(event.data.action_id, "before its first call")
        data = event.data
        refusal = check_authenticity(data, self._keys(data.authorization.key_id))
        if refusal is not None:
            raise Reject(refusal.code, refusal.message)
        spec = self.catalog.get(data.tool)
        new = _new_record(event)
        step = self._decide(new, spec, data)
        # A new action about to be called is claimed and marked running in one statement: nothing awaits between that and the call.
        run_now = isinstance(step, Call) and not _reads_prior_state(spec)
        with span("executor execute", attributes={Attr.ACTION: data.action_id, Attr.TOOL: data.tool, Attr.TENANT: data.tenant_id}) as s:
            async with self.claims.claim(new, running=run_now) as (session, record):
                if record.tenant_id != data.tenant_id:
                    # Action ids are global; another tenant's outcome is never theirs to see nor to repeat.
                    raise Reject(ReasonCode.AUTHORIZATION_REPLAYED, f"action id {data.action_id} was already used by another tenant")
                replayed = record.event_id != event.id
                # Another call signed under a used action id (a signing bug, a second deployment): the record's call is the action's.
                differs = record.action_digest != data.authorization.action_digest
                refused: Reject | None = None  # the authorization was refused just now: dead-letter it too
                if record.terminal:
                    log.info("action %s already %s: answering from the record", data.action_id, record.status)
                    await self.out.publish_many([kept_result(record.result_event, data, self.authority)])
                elif differs:
                    record = await self._end_if_interrupted(session, record)
                else:
                    claimed_now = record is new
                    if not claimed_now:  # claimed before (and never finished): decide on the record kept
                        step = self._decide(record, spec, data)
                    record = await self._run(session, record, spec, data, step, marked=claimed_now and run_now)
                    if record.error is not None and record.error.refusal is not None:
                        refused = Reject(record.error.refusal, record.error.message)
            s.set_attribute(Attr.OUTCOME, record.status)
            s.set_attribute(Attr.ATTEMPTS, record.attempts)
        if refused is not None:
            raise refused
        if differs:
            raise Reject(
                ReasonCode.AUTHORIZATION_REPLAYED,
                f"action {data.action_id} was already authorized by event {record.event_id} for another call ({record.tool}, digest "
                f"{record.action_digest[:16]}…): this call of {data.tool} (digest {data.authorization.action_digest[:16]}…) differs "
                f"and is not executed (outcome of the action: {record.status})",
            )
        if replayed:
            raise Reject(
                ReasonCode.AUTHORIZATION_REPLAYED,
                f"action {data.action_id} was already authorized by event {record.event_id}; not executed again (outcome: {record.status})",
            )

    def _decide(self, record: ClaimRecord, spec: ToolSpec | None, data: ActionAuthorizedData) -> Finish | Call:
        """What to do with the claimed, unfinished `record` now (`decide`, given the clock, kill switches and the catalog's args check)."""
        errors = self.catalog.arg_errors(data.tool, data.args) if spec is not None else []
        return decide(
            record, spec, now=self.clock(), expires_at=data.authorization.expires_at, killed=self._kill_reason(data), arg_errors=errors
        )

    async def _run(
        self,
        session: ClaimSession,
        record: ClaimRecord,
        spec: ToolSpec | None,
        data: ActionAuthorizedData,
        step: Finish | Call,
        *,
        marked: bool,
    ) -> ClaimRecord:
        if isinstance(step, Finish):
            if record.status == "waiting" and spec is not None:  # stopped between two attempts: the authorization was used
                return await self._stopped(session, record, spec, step, _kept_error(record), record.attempts, time.monotonic(), 0.0)
            return await self._finish_without_call(session, record, spec, step)
        assert spec is not None
        return await self._call_with_retries(session, record, spec, data, step, marked=marked)

    def _kill_reason(self, data: ActionAuthorizedData) -> str | None:
        return self.killed(data.tenant_id, data.tool)

    async def _finish_without_call(self, session: ClaimSession, record: ClaimRecord, spec: ToolSpec | None, step: Finish) -> ClaimRecord:
        """End the action as `step` says, calling nothing now; attempts an interrupted process made are priced, as they were made."""
        error = _error(step.error_type, step.message, dead=step.dead_letter)
        cost = call_cost_usd(spec.cost_usd if spec is not None else 0.0, record.attempts)
        return await self._settle(session, replace(record, status=step.status, result=None, error=error, cost_usd=cost))

    async def _end_if_interrupted(self, session: ClaimSession, record: ClaimRecord) -> ClaimRecord:
        """End `record` if a dead process left it `running` and it must not be called again (`end_of_interrupted`), else keep it."""
        if record.status != "running":
            return record
        spec = self.catalog.get(record.tool)
        ended = end_of_interrupted(record, spec)
        return record if ended is None else await self._finish_without_call(session, record, spec, ended)

    async def _call_with_retries(
        self,
        session: ClaimSession,
        record: ClaimRecord,
        spec: ToolSpec,
        data: ActionAuthorizedData,
        step: Call,
        *,
        marked: bool = False,
    ) -> ClaimRecord:
        """Call the tool, again while its errors allow; `marked`: the claim already marked the first attempt running."""
        if step.recovering:
            log.warning("action %s was interrupted mid-call; calling %s again with the same idempotency key", data.action_id, spec.name)
        attempts, started, extra_cost = record.attempts, time.monotonic(), 0.0
        before = await self._prior_state(session, spec, data, recovering=step.recovering)
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
                again = decide(record, spec, now=self.clock(), expires_at=data.authorization.expires_at, killed=self._kill_reason(data))
                if isinstance(again, Finish):
                    last = _sticky(error, maybe) if error is not None else maybe  # maybe: an interrupted attempt
                    return await self._stopped(session, record, spec, again, last, attempts, started, extra_cost)
            attempts += 1
            if error is not None or not marked:
                await session.running(attempts)
            ctx = self._context(data, spec, attempts)
            self.calls += 1
            try:
                async with asyncio.timeout(spec.timeout_s):  # the call runs in this task: no task and no callback of its own
                    answer = await self.invokers.invoke(spec, ctx, data.args)
            except ToolError as exc:
                error = exc
            except TimeoutError:
                error = ToolError("timeout", f"{spec.name} did not answer in {spec.timeout_s} s", retryable=True, maybe_applied=True)
            except Exception as exc:  # a bug in a tool is its failure, not the executor's
                log.exception("tool %s raised", spec.name)
                error = ToolError("tool_crashed", f"{type(exc).__name__}: {exc}", maybe_applied=True)
            else:
                extra_cost += answer.cost_usd
                undo = await self._plan_undo(session, spec, data, answer.result, before)
                return await self._finish(session, record, spec, "succeeded", answer.result, None, attempts, started, extra_cost, undo)
            log.info("action %s attempt %d of %s failed: %s: %s", data.action_id, attempts, spec.name, error.type, error.message)
            maybe = maybe or (error if error.maybe_applied else None)
            if error.maybe_applied and not safe_to_repeat(spec):
                break  # repeating could do it twice: the outcome is unknown, a person must check
            if not error.retryable:
                break
        assert error is not None
        error = _sticky(error, maybe)
        status = final_status(spec, maybe_applied=error.maybe_applied)
        info = _error(error.type, error.message, retryable=error.retryable)
        return await self._finish(session, record, spec, status, None, info, attempts, started, extra_cost)

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
            await self._park(record.action_id, f"before attempt {attempts + 1}")

    async def _park(self, action_id: str, where: str) -> NoReturn:
        """Start no call while the process stops: wait to be cancelled, leaving the authorization uncommitted for the next process.

        The stop lets the batch in hand finish for its grace (calls in flight end as they would), then
        cancels what is left, this wait among it; the next process reads the authorization again. Once
        every handler still running is parked, the batch ends at once (`servicekit.parking`).
        """
        log.info("action %s: the executor is stopping; %s is left to the next process", action_id, where)
        await park()

    async def _stopped(
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
            info = _error(stop.error_type, stop.message, dead=stop.dead_letter)
            return await self._finish(session, record, spec, stop.status, None, info, attempts, started, extra_cost)
        status = final_status(spec, maybe_applied=error.maybe_applied or stop.status == "unknown")
        if error.maybe_applied:
            info = _error(error.type, f"{error.message} (the retry was stopped: {stop.message})", retryable=error.retryable)
        else:
            info = _error(stop.error_type, f"{stop.message} (stopped the retry after {error.type}: {error.message})")
        return await self._finish(session, record, spec, status, None, info, attempts, started, extra_cost)

    async def _prior_state(
        self, session: ClaimSession, spec: ToolSpec, data: ActionAuthorizedData, *, recovering: bool
    ) -> dict[str, Any] | None:
        """The state the undo restores, read once before the first attempt (catalog `undo.before`) and kept.

        After a crash the state kept before the first attempt is used: reading again could see the
        call's own effect. A read that fails, however (a tool error, a timeout, a bug or an answer of
        an unexpected shape), leaves the undo `unavailable`; it never stops the call, which policy
        allowed on its own terms.
        """
        if spec.undo is None or spec.undo.before is None:
            return None
        kept = await self.undo.prior_state(data.action_id, held=session)
        read = self.catalog.get(spec.undo.before.tool)
        if kept is not None or recovering or read is None:
            return kept
        try:
            args = before_args(spec.undo, data.args)
            assert args is not None
            async with asyncio.timeout(read.timeout_s):
                answer = await self.invokers.invoke(read, self._context(data, read, 1), args)
        except Exception as exc:  # whatever the read raises, the call goes on: it is the undo that is lost
            expected = isinstance(exc, ToolError | TimeoutError | UndoUnavailable)
            log.warning(
                "action %s: could not read the state before %s (%s: %s): its undo will be unavailable",
                data.action_id,
                spec.name,
                type(exc).__name__,
                exc,
                exc_info=not expected,
            )
            return None
        return await self.undo.keep_prior_state(_undo_key(data), answer.result, held=session)

    async def _plan_undo(
        self,
        session: ClaimSession,
        spec: ToolSpec,
        data: ActionAuthorizedData,
        result: dict[str, Any] | None,
        before: dict[str, Any] | None,
    ) -> UndoPlan | None:
        """How to undo the call that just succeeded, kept in the executor's schema (None when the catalog declares no undo)."""
        if spec.undo is None:
            return None
        plan = plan_undo(spec.undo, data.args, result, before)
        await self.undo.keep_plan(_undo_key(data), plan, held=session)
        return plan

    def _context(self, data: ActionAuthorizedData, spec: ToolSpec, attempt: int) -> ToolContext:
        scope = spec.credential_scopes.get(data.tenant_id)
        return ToolContext(
            pool=self.context_pool,
            tenant_id=data.tenant_id,
            action_id=data.action_id,
            idempotency_key=data.action_id,
            task_id=data.task_id,
            attempt=attempt,
            deadline=self.clock() + timedelta(seconds=spec.timeout_s),
            credential_scope=scope,
            credential=self.credentials.secret(data.tenant_id, scope) if scope else None,
            authorized=data,
        )

    async def _finish(
        self,
        session: ClaimSession,
        record: ClaimRecord,
        spec: ToolSpec,
        status: Any,
        result: dict[str, Any] | None,
        error: CallError | None,
        attempts: int,
        started: float,
        extra_cost: float,
        undo: UndoPlan | None = None,
    ) -> ClaimRecord:
        done = replace(
            record,
            status=status,
            result=result,
            error=error,
            attempts=attempts,
            duration_ms=record.duration_ms + (time.monotonic() - started) * 1000,
            cost_usd=call_cost_usd(spec.cost_usd, attempts, extra_cost),
        )
        return await self._settle(session, done, undo)

    async def _settle(self, session: ClaimSession, done: ClaimRecord, undo: UndoPlan | None = None) -> ClaimRecord:
        """Record the outcome `done` and its result event (signed) in one statement, then publish that event.

        A redelivered or replayed authorization is answered with the event kept (`kept_results`: the same id,
        not a second result that consumers summing costs would count again), never with one signed anew.
        """
        made = self._recorded_result(done, undo)
        done = await session.finish(replace(done, result_event=made.value.decode()))
        await self.out.publish_many([made])
        return done

    def _recorded_result(self, record: ClaimRecord, undo: UndoPlan | None = None) -> Recorded:
        """The result event of `record`, signed and encoded: its whole result only while it fits `max_result_bytes`.

        Else the result, then the undo plan, give way to stand-ins that say where the whole is kept: a
        record the producer refuses (over ~1 MiB) was never published, and the planner waited for it forever.
        """
        bound = self.max_result_bytes
        made = self.out.record("actions.results", self._result_event(record, undo))
        if len(made.value) <= bound:
            return made
        log.warning(
            "action %s: its result event is %d bytes, over %d: the result goes out as a stand-in", record.action_id, len(made.value), bound
        )
        if record.result is not None:
            record = replace(record, result=result_stand_in(record.result, bound))
            made = self.out.record("actions.results", self._result_event(record, undo))
        if len(made.value) > bound and undo is not None:
            undo = undo_stand_in(undo, len(undo.model_dump_json()), bound)
            made = self.out.record("actions.results", self._result_event(record, undo))
        return made

    def _result_event(self, record: ClaimRecord, undo: UndoPlan | None = None) -> Envelope:
        kept = record.error
        error = None if kept is None else bounded_error(kept.type, kept.message, kept.retryable)
        data = ActionResultData(
            **action_identity(record),
            tool=record.tool,
            status=record.status,  # type: ignore[arg-type]  # terminal here
            result=record.result,
            error=error,
            attempts=record.attempts,
            duration_ms=max(record.duration_ms, 0.0),
            cost=ResultCost(usd=record.cost_usd),
            idempotency_key=record.action_id,
            undo=undo,
        )
        # The trace context is part of the kept event: a re-sent result points at the call's own span.
        return _RESULT_EVENTS[record.status].build(data, source=SOURCE, traceparent=current_traceparent())

    # --- start-up ----------------------------------------------------------------------------

    async def settle_interrupted(self) -> int:
        """At start, end every call a dead process left mid-way that must not be called again (`end_of_interrupted`).

        That is a tool unsafe to repeat (`unknown`), or one whose `retry.max_attempts` is used up. Other
        calls are left to the redelivery of their authorization, which calls again with the same
        idempotency key. Rows still held by a live executor are skipped.
        """
        settled = 0
        for candidate in await self.claims.interrupted():
            if end_of_interrupted(candidate, self.catalog.get(candidate.tool)) is None:
                continue
            async with self.claims.try_hold(candidate.action_id) as session:
                if session is None:
                    continue
                record = await session.get()
                if record is None or (await self._end_if_interrupted(session, record)) is record:
                    continue
                settled += 1
        if settled:
            log.warning("settled %d interrupted calls without calling them again", settled)
        return settled


def _kept_error(record: ClaimRecord) -> ToolError:
    """The error of the attempt a `waiting` record's process made last, as the retry loop holds it."""
    kept = record.error or CallError("interrupted", "the last attempt's error was not kept", retryable=True)
    return ToolError(kept.type, kept.message, retryable=kept.retryable, maybe_applied=kept.maybe_applied)


def _error(type_: str, message: str, *, retryable: bool = False, dead: ReasonCode | None = None) -> CallError:
    """An error as kept and published; its text may come from outside (a tool's message, an exception), so `storable`."""
    return CallError(storable(str(type_)), storable(message), retryable, dead)


def _sticky(error: ToolError, maybe: ToolError | None) -> ToolError:
    """The last attempt's error, still maybe-applied when an earlier attempt's was (a refused retry does not undo a timeout)."""
    if maybe is None or error.maybe_applied:
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


def _reads_prior_state(spec: ToolSpec | None) -> bool:
    """Whether the undo of `spec` reads the state before the first attempt (kept before the attempt is marked running)."""
    return spec is not None and spec.undo is not None and spec.undo.before is not None


def _undo_key(data: ActionAuthorizedData) -> UndoKey:
    return UndoKey(action_id=data.action_id, tenant_id=data.tenant_id, task_id=data.task_id, tool=data.tool)


def _new_record(event: ActionAuthorized) -> ClaimRecord:
    data = event.data
    return ClaimRecord(
        **action_identity(data),
        event_id=event.id,
        tool=data.tool,
        args=data.args,
        action_digest=data.authorization.action_digest,
        status="claimed",
    )
