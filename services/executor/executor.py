"""Performing one authorized action exactly once: verify, claim, then call (`attempts`) or answer from the record.

The attempts and their retries are `attempts.py`'s (the one layer that retries tool calls); the outcome and its
result event, `outcomes.py`'s; what a redelivery of a finished action is answered with, `kept_results.py`'s.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas import ActionAuthorized, ActionAuthorizedData, ReasonCode, ToolSpec, action_identity
from servicekit import Attr, Authority, Keyring, Outlet, Reject, ToolCatalog, span
from servicekit.costs import call_cost_usd
from servicekit.toolcontract import ToolContext
from services.executor.attempts import Attempts, Held, KillCheck, park_while_stopping
from services.executor.claims import ClaimSession, ClaimStore
from services.executor.credentials import CredentialStore
from services.executor.domain import Call, ClaimRecord, Finish, check_authenticity, decide, end_of_interrupted
from services.executor.kept_results import kept_result
from services.executor.outcomes import call_error, settle, with_result
from services.executor.settings import DEFAULT_MAX_RESULT_BYTES
from services.executor.tools import ToolAnswer, ToolInvokers
from services.executor.undo import InMemoryUndoStore, UndoStore
from services.executor.undo_recording import UndoRecording, reads_prior_state

__all__ = ["Executor"]

log = logging.getLogger(__name__)


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
        ready: Awaited before a call: `control` read to its end, so that a kill switch set while the executor
            was down holds for its backlog of authorizations, and so does one set while it was paused or behind
            (a process stopped, frozen or starved handles the authorizations queued meanwhile before its `control`
            consumer delivers the switch). Awaited again before a call when the last read began more than
            `ready_fresh_s` ago; the calls of one moment share one read.
        ready_fresh_s: How long a read of `control` to its end stands for the calls that follow it.
        clock: Current time (tests move it).
        sleep: Waits between attempts (tests make it instant).
        stopping: Set as the process begins to stop (`Bus.stopping`): no call starts after it, and a wait between
            two attempts ends in it; the action, `waiting`, is left to the next process (`attempts.park_while_stopping`).
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
    ready_fresh_s: float = 0.5
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    stopping: asyncio.Event | None = None
    undo: UndoStore = field(default_factory=InMemoryUndoStore)
    max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES
    calls: int = field(default=0, init=False)
    # Outcomes a call reached whose recording failed (the database went away after the tool answered): recorded on the next try.
    held: dict[str, Held] = field(default_factory=dict, init=False)
    _keyring: Keyring | None = field(default=None, init=False)
    _keyring_loaded_at: float = field(default=0.0, init=False)
    _ready: asyncio.Future[None] | None = field(default=None, init=False)
    _ready_asked_at: float = field(default=0.0, init=False)

    # --- verification ------------------------------------------------------------------------

    def _keys(self, key_id: str) -> Keyring:
        if self._keyring is None or (not self._keyring.knows(key_id) and time.monotonic() - self._keyring_loaded_at > 1.0):
            self._keyring = self.keyring_loader()
            self._keyring_loaded_at = time.monotonic()
        return self._keyring

    # --- the handler's domain entry point ----------------------------------------------------

    async def _wait_ready(self) -> None:
        """Run nothing before `ready` returned, asked at most `ready_fresh_s` ago; the calls waiting share one wait.

        A failed wait is tried again. The first wait (at start) may take long; the later ones are one request when
        nothing is new, and wait only for what `control` holds that this process has not handled yet.
        """
        if self.ready is None:
            return
        now = time.monotonic()
        done = self._ready is not None and self._ready.done()
        if self._ready is None or (done and (self._ready.exception() is not None or now - self._ready_asked_at > self.ready_fresh_s)):
            self._ready_asked_at = now
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
            await park_while_stopping(event.data.action_id, "before its first call")
        data = event.data
        refusal = check_authenticity(data, self._keys(data.authorization.key_id))
        if refusal is not None:
            raise Reject(refusal.code, refusal.message)
        spec = self.catalog.get(data.tool)
        new = _new_record(event)
        step = self._decide(new, spec, data)
        # A new action about to be called is claimed and marked running in one statement: nothing awaits between that and the call.
        run_now = isinstance(step, Call) and not reads_prior_state(spec)
        with span("executor execute", attributes={Attr.ACTION: data.action_id, Attr.TOOL: data.tool, Attr.TENANT: data.tenant_id}) as s:
            # A new action refused before any call (expired, kill switch, unknown tool, args) is claimed with its outcome
            # and result event in one statement; signed here, in the span, so that the event kept carries its trace.
            refusal_now = None if isinstance(step, Call) else _without_call(new, spec, step)
            finished, made = (None, None) if refusal_now is None else with_result(refusal_now, self.out, self.max_result_bytes)
            async with self.claims.claim(new, running=run_now, finished=finished) as (session, record):
                if record.tenant_id != data.tenant_id:
                    # Action ids are global; another tenant's outcome is never theirs to see nor to repeat.
                    raise Reject(ReasonCode.AUTHORIZATION_REPLAYED, f"action id {data.action_id} was already used by another tenant")
                replayed = record.event_id != event.id
                # Another call signed under a used action id (a signing bug, a second deployment): the record's call is the action's.
                differs = record.action_digest != data.authorization.action_digest
                refused: Reject | None = None  # the authorization was refused just now: dead-letter it too
                held = self.held.get(data.action_id)
                if finished is not None and record is finished and made is not None:  # refused now, recorded by the claim
                    await self.out.publish_many([made])
                    if record.error is not None and record.error.refusal is not None:
                        refused = Reject(record.error.refusal, record.error.message)
                elif record.terminal:
                    self.held.pop(data.action_id, None)
                    log.info("action %s already %s: answering from the record", data.action_id, record.status)
                    await self.out.publish_many([kept_result(record.result_event, data, self.authority)])
                elif differs:
                    record = await self._end_if_interrupted(session, record)
                elif held is not None and record.status == "running" and record.attempts == held.done.attempts:
                    # This process made the call and has its answer; only recording it failed: it is recorded now, not guessed at.
                    log.warning("action %s: recording the outcome its call reached before its recording failed", data.action_id)
                    record = await self._attempts().record(session, held)
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
                return await self._attempts().stopped_while_waiting(session, record, spec, step)
            return await self._finish_without_call(session, record, spec, step)
        assert spec is not None
        return await self._attempts().call(session, record, spec, data, step, marked=marked)

    def _kill_reason(self, data: ActionAuthorizedData) -> str | None:
        return self.killed(data.tenant_id, data.tool)

    async def _finish_without_call(self, session: ClaimSession, record: ClaimRecord, spec: ToolSpec | None, step: Finish) -> ClaimRecord:
        """End the action as `step` says, calling nothing now; attempts an interrupted process made are priced, as they were made."""
        return await settle(session, _without_call(record, spec, step), self.out, self.max_result_bytes)

    async def _end_if_interrupted(self, session: ClaimSession, record: ClaimRecord) -> ClaimRecord:
        """End `record` if a dead process left it `running` and it must not be called again (`end_of_interrupted`), else keep it."""
        if record.status != "running":
            return record
        spec = self.catalog.get(record.tool)
        ended = end_of_interrupted(record, spec)
        return record if ended is None else await self._finish_without_call(session, record, spec, ended)

    def _attempts(self) -> Attempts:
        """How the calls of this delivery are made, with the executor's fields as they are now (one set after start holds from the next)."""
        undo = UndoRecording(self.undo, self.catalog, self.invokers, self._context)
        return Attempts(
            call_tool=self._call_tool,
            context=self._context,
            undo=undo,
            killed=self.killed,
            out=self.out,
            max_result_bytes=self.max_result_bytes,
            clock=self.clock,
            sleep=self.sleep,
            stopping=self.stopping,
            unanswered=self.invokers.unanswered,
            held=self.held,
        )

    async def _call_tool(self, spec: ToolSpec, ctx: ToolContext, args: dict[str, Any]) -> ToolAnswer:
        """One attempt of a call: every attempt comes through here and is counted in `calls`."""
        self.calls += 1
        return await self.invokers.invoke(spec, ctx, args)

    def _context(self, data: ActionAuthorizedData, spec: ToolSpec, attempt: int) -> ToolContext:
        """What attempt number `attempt` of `spec` is called with: its pool, idempotency key, deadline and the tenant's credential."""
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


def _without_call(record: ClaimRecord, spec: ToolSpec | None, step: Finish) -> ClaimRecord:
    """`record` ended as `step` says, nothing called now; attempts an interrupted process made are priced, as they were made."""
    error = call_error(step.error_type, step.message, dead=step.dead_letter)
    cost = call_cost_usd(spec.cost_usd if spec is not None else 0.0, record.attempts)
    return replace(record, status=step.status, result=None, error=error, cost_usd=cost)
