"""The policy service's use cases: decide a proposal, re-decide after a human grant, follow results and control.

Each use case reads what it needs, calls the pure decision (`engine.decide`) inside the repository's
unit of work, and publishes the recorded events. Nothing here retries: the bus owns retries
(transient errors) and dead-lettering (`Reject`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import ValidationError

from schemas import (
    ActionProposed,
    ActionProposedData,
    ActionResult,
    ApprovalData,
    ApprovalGranted,
    ApprovalRequested,
    ApprovalResolved,
    ControlPolicy,
    Envelope,
    ReasonCode,
    RiskClass,
    TaskSubmitted,
)
from servicekit import (
    Attr,
    ControlState,
    Keyring,
    Recorded,
    Reject,
    SigningKey,
    ToolCatalog,
    action_digest,
    current_traceparent,
    span,
)
from servicekit.undo import undo_action_id
from services.policy._grants import approval_messages, distinct_approvers, escalation_requester
from services.policy._repeats import RepeatAnswers
from services.policy._results import ending_of
from services.policy._task_context import TaskContext, is_undo_of, task_input
from services.policy.authorization import build_record
from services.policy.engine import Controls, decide, still_holds
from services.policy.facts import Call, FailedRead, Flow, History, payee_of
from services.policy.pack import CompiledPack, PackError, PackSource, compile_pack
from services.policy.repository import (
    DecisionRecord,
    Pending,
    PolicyRepository,
    Scope,
    Settled,
    TaskReads,
    granted_key,
)
from services.policy.settings import PolicySettings
from services.policy.tenant_settings import TenantSettings

__all__ = ["PolicyService", "PublishMany"]

log = logging.getLogger(__name__)

PublishMany = Callable[[list[Recorded]], Awaitable[None]]  # `Bus.publish_many`: stored bytes as they are


HELD_WAIT_S = 30.0  # how much longer a decision waits for its task while another consumer of the service retries


def _recorded(topic: str, key: str, recorded: str, event: Envelope | None) -> Recorded:
    # The recorded JSON is published as is: same bytes, same event id, on every (re)delivery.
    traceparent = event.traceparent if event is not None else json.loads(recorded).get("traceparent")
    return Recorded(topic, key.encode(), recorded.encode(), traceparent, event)


def _reused(proposal: ActionProposedData, recorded: DecisionRecord) -> Reject | None:
    """A refusal when `proposal` reuses an action id recorded for another tenant, call or requester; None for a redelivery.

    Action ids are global (the executor claims them once for everyone): the first tenant, call and requester to be
    decided own one. Another's decision is never republished to a proposer it does not belong to: a redelivery, or an
    agent asking again, names the requester the recorded proposal named (the Authority binds a client's key to it). Were
    anyone of the tenant answered, an agent could make the policy publish thousands of old decisions and their
    authorizations again (and the executor their kept results), to crowd what a start's check reads (restore7 F2).
    """
    if recorded.tenant_id != proposal.tenant_id:
        return Reject(ReasonCode.ACTION_ID_REUSED, f"action id {proposal.action_id} was already proposed by another tenant")
    if recorded.action_digest != action_digest(proposal.tenant_id, proposal.tool, proposal.args):
        return Reject(ReasonCode.ACTION_ID_REUSED, f"action id {proposal.action_id} was already proposed for another call")
    if recorded.proposal.requested_by != proposal.requested_by:
        return Reject(ReasonCode.ACTION_ID_REUSED, f"action id {proposal.action_id} was already proposed for another requester")
    return None


async def _never_held() -> bool:
    """`PolicyService.inputs_held` in process (what-if, the evals): no other consumer of the service feeds a decision."""
    return False


@dataclass
class PolicyService:
    """Everything the policy service does, given its dependencies (tests pass in-memory ones)."""

    catalog: ToolCatalog
    pack: CompiledPack
    repo: PolicyRepository
    signer: SigningKey
    keys_dir: Path
    control: ControlState
    publish_many: PublishMany  # the recorded decisions and authorizations, as stored (`servicekit.Outlet.publish_many`)
    settings: PolicySettings = field(default_factory=PolicySettings)
    ready: Callable[[], Awaitable[None]] | None = None
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    # What an authorization's `issued_at` (and so its `expires_at`) is set from; None: `clock`. The service's own is the
    # broker's time as its producer last read it (`servicekit.clock.issuing_clock`): a policy host ahead of the broker's
    # signed every authorization to live that much longer at the broker's (and the executor's) time.
    issuing_clock: Callable[[], datetime] | None = None
    # True for a proposal the planner signed (its verified key): the planner read its task from `tasks`, so the
    # proposal waits until that task is learned (`_task_contexts`). In process (what-if, the evals) nothing is signed.
    planned: Callable[[Envelope], bool] = field(default=lambda event: False)
    # Whether another of this service's consumers (tasks, results) is waiting out a transient error now, or its
    # group has records it has not handled yet (`unread.GroupUnread`: a consumer still rejoining after a broker restart):
    # what a decision waits for from it may still come, so the wait goes on past `provenance_wait_s`, up to `HELD_WAIT_S` more.
    inputs_held: Callable[[], Awaitable[bool]] = field(default=_never_held)
    # What holds a decision none of whose waiting tasks waits for its request, only for results: a consumer retrying or
    # the results group behind, not the tasks group being behind (which says nothing of a result). None: `inputs_held`.
    results_held: Callable[[], Awaitable[bool]] | None = None
    _approval_keys: Keyring | None = field(default=None, init=False)
    _ready_done: bool = field(default=False, init=False)
    _ready_lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)
    # The proposals waiting for a result of their task, by task: each one's event is set whenever one is stored.
    _waiting: dict[Scope, set[asyncio.Event]] = field(default_factory=dict, init=False)
    # Each tenant's settings as last validated, with the pack, record and directory they came from.
    _tenants: dict[str, tuple[CompiledPack, object, object, TenantSettings | None]] = field(default_factory=dict, init=False)
    # The proposals' action ids answered lately: a repeat of one within `repeat_answer_interval_s` is not answered again.
    _repeats: RepeatAnswers = field(init=False)

    def __post_init__(self) -> None:
        self._repeats = RepeatAnswers(self.settings.repeat_answer_interval_s)

    # --- wiring helpers ------------------------------------------------------------------------

    async def _wait_ready(self) -> None:
        """Decide nothing before `control` is read up to its end: a kill switch set before start-up must hold."""
        if self._ready_done or self.ready is None:
            return
        async with self._ready_lock:
            if not self._ready_done:
                await self.ready()
                self._ready_done = True

    def _tenant(self, tenant_id: str) -> TenantSettings | None:
        """The tenant's settings from its `control.tenant` record and directory, validated again only when either or the pack changed."""
        record, directory = self.control.tenants.get(tenant_id), self.control.directories.get(tenant_id)
        if record is None and directory is None:
            return None
        memo = self._tenants.get(tenant_id)
        if memo is not None and memo[0] is self.pack and memo[1] is record and memo[2] is directory:
            return memo[3]
        tenant = None
        try:  # an operator's record, or an operator-wide admin's onboarding, or a pack tenant's admins' directory
            tenant = self.pack.settings.of_control(self.control, tenant_id)
        except ValidationError as exc:  # the CLI checks before publishing; a bad record onboards nothing
            who = record.set_by if record is not None else "?"
            log.error("policy: control.tenant for %s set by %s is invalid, ignored: %s", tenant_id, who, exc)
        self._tenants[tenant_id] = (self.pack, record, directory, tenant)
        return tenant

    def _controls(self, tenant_id: str, tool: str) -> Controls:
        return Controls(
            killswitch=self.control.killed(tenant_id, tool),
            tenant_budget_usd=self.control.budgets.get(tenant_id),
            tenant=self._tenant(tenant_id),
        )

    def _wake(self, scopes: Iterable[Scope]) -> None:
        """Wake the proposals waiting for a result or the request of these tasks: one was just stored."""
        for scope in scopes:
            for woken in self._waiting.get(scope, ()):
                woken.set()

    def _listen(self, scopes: Iterable[Scope], woken: asyncio.Event) -> None:
        """Have `woken` set when a result of one of these tasks is stored."""
        for scope in scopes:
            self._waiting.setdefault(scope, set()).add(woken)

    def _forget(self, scopes: Iterable[Scope], woken: asyncio.Event) -> None:
        """Stop `_listen` for these tasks."""
        for scope in scopes:
            if (listeners := self._waiting.get(scope)) is not None:
                listeners.discard(woken)
                if not listeners:
                    del self._waiting[scope]

    def _unseen(self, awaiting: list[str]) -> list[str]:
        """Of the tools of a task's calls whose result is not seen yet, those whose result this service must learn."""
        return [t for t in awaiting if (spec := self.catalog.get(t)) is not None and (spec.untrusted_output or spec.records)]

    async def _task_contexts(self, scopes: list[Scope], planned: Collection[Scope] = ()) -> dict[Scope, TaskContext]:
        """What each task has read (provenance, system-of-record entries) and done (its flow) before the call under decision.

        Results and tasks arrive on consumers of their own (`app.py`), which may lag the proposals: a task
        whose authorized calls have results this service must learn (untrusted output, system-of-record
        figures) and has not yet, or, for the tasks in `planned` (a proposal the planner signed), whose
        request is not learned yet, is read again, up to `provenance_wait_s`, so that what it read is known
        before it is decided. All the tasks are read in one statement, then only those still waiting,
        as soon as this process stored a result or a request of one of them, and at least every 50 ms
        (another copy of the service may be the one that stores it). What is still unknown after the wait
        is decided failing closed (`_context`). A forgotten task (`TaskReads.forgotten`) waits for nothing: it is denied.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.provenance_wait_s
        held_until = deadline + HELD_WAIT_S
        woken = asyncio.Event()
        waiting = scopes

        def unseen_task(scope: Scope) -> bool:
            return scope in planned and not reads[scope].learned

        try:
            self._listen(scopes, woken)  # before the read: a result stored after it wakes this wait
            reads = await self.repo.task_reads(scopes)
            while waiting := [s for s in waiting if not reads[s].forgotten and (self._unseen(reads[s].awaiting) or unseen_task(s))]:
                if (left := deadline - loop.time()) <= 0:
                    # A database outage just ended: the consumer that learns tasks may still be in its backoff (an SRE
                    # probe: 16 of 23 autonomous tasks decided draft right after PostgreSQL came back).
                    held = self.inputs_held if self.results_held is None or any(map(unseen_task, waiting)) else self.results_held
                    if loop.time() >= held_until or not await held():
                        break
                    left = 0.05
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(0.05, left)):
                        await woken.wait()
                woken.clear()  # before the read: a result stored after it wakes this wait again
                reads |= await self.repo.task_reads(waiting)
        finally:
            self._forget(scopes, woken)
        return {scope: self._context(reads[scope], unseen_task=unseen_task(scope)) for scope in scopes}

    def _context(self, read: TaskReads, *, unseen_task: bool = False) -> TaskContext:
        unseen = [t for t in self._unseen(read.awaiting) if self.catalog[t].untrusted_output]
        untrusted = bool(read.provenance.untrusted) or bool(unseen) or unseen_task
        flow = Flow.of(read.decisions, untrusted_read=untrusted, troubles=read.troubles)
        flow = dataclasses.replace(flow, unseen_results=tuple(sorted(set(unseen))), unseen_task=unseen_task, forgotten=read.forgotten)
        failed: dict[str, FailedRead] = {}
        for tool, args, error, action_id in read.failed_reads:  # one failed read of an entry is enough to say so
            for entry, why in FailedRead.entries(tool, args, error, action_id).items():
                failed.setdefault(entry, why)
        # The mode is the requester's, signed on `tasks`: a proposal (the planner's, whose state its database login can
        # rewrite) can make it stricter, never looser. A planner's proposal whose task is not learned asked for nothing
        # anyone signed: draft (fail closed). Another's without a learned task: its own mode, as the tenant allows.
        mode = (read.mode or "draft") if read.learned else "draft" if unseen_task else None
        owners = read.proposed_for | ({read.requested_by} if read.requested_by is not None else set())
        return TaskContext(
            read.provenance,
            flow,
            read.records,
            failed,
            mode=mode,
            requested_by=read.requested_by,
            owners=owners,
            planned_here=read.planned_here,
        )

    async def _publish_record(self, record: DecisionRecord) -> None:
        await self._publish_records([record])

    async def _publish_records(self, records: list[DecisionRecord]) -> None:
        """Publish the recorded events as recorded, decisions before authorizations of the same action."""
        out: list[Recorded] = []
        for record in records:
            out.append(_recorded("actions.decided", record.task_id, record.decided_event, record.decided))
            if record.authorized_event is not None:
                out.append(_recorded("actions.authorized", record.task_id, record.authorized_event, record.authorized))
        await self.publish_many(out)

    # --- proposals -----------------------------------------------------------------------------

    async def on_proposed(self, event: ActionProposed) -> DecisionRecord:
        """Decide a proposal once; a redelivered one gets the recorded decision again (`_answer`), never another."""
        return (await self.on_proposed_batch([event], traced=False))[0]

    async def on_proposed_batch(self, events: list[ActionProposed], *, traced: bool = True) -> list[DecisionRecord]:
        """Decide a batch of proposals in one unit of work (in order: each sees the budget the previous ones reserved), then publish.

        With `traced`, each evaluation span is a child of its proposal's `traceparent` (a batch has no handler span of its own).
        """
        await self._wait_ready()
        # What each task has read and done, loaded once per task of the batch, all tasks at once.
        planned = {(e.data.tenant_id, e.data.task_id) for e in events if self.planned(e)}
        read = await self._task_contexts(list(dict.fromkeys((e.data.tenant_id, e.data.task_id) for e in events)), planned)
        undos = await self._undos([e.data for e in events])
        calls = []
        for event in events:
            p = event.data
            context = read[(p.tenant_id, p.task_id)]
            call = context.of(Call.from_proposal(p))
            if (owner := context.owned_by_another(p, planner=self.planned(event), undo=p.action_id in undos)) is not None:
                call = dataclasses.replace(call, task_of_another=owner)
            # What the database will say of the task once this batch is written, the next proposal of it sees now: a
            # requester named by this one owns it too (two in one polled batch are as two in two batches).
            read[(p.tenant_id, p.task_id)] = context.named_by(p)
            calls.append((call, context.requested_by))
        await self._quoting([call for call, _ in calls])
        pending = []
        for event, (call, task_requester) in zip(events, calls, strict=True):
            p = event.data
            pending.append(
                self._pending(
                    key=p.action_id,
                    call=call,
                    proposal=p,
                    action_id=p.action_id,
                    step=p.step,
                    requested_by=p.requested_by,
                    task_requested_by=task_requester,
                    approval_id=None,
                    parent=event.traceparent if traced else None,
                )
            )
        results = await self.repo.decide_many(pending)
        refusals = [None if fresh else _reused(event.data, record) for event, (record, fresh) in zip(events, results, strict=True)]
        decided = [(e.data, r, fresh) for e, (r, fresh), refused in zip(events, results, refusals, strict=True) if refused is None]
        await self._answer(decided)
        if refused := next((r for r in refusals if r is not None), None):
            # A batch falls back to one event at a time: each conflicting proposal is dead-lettered alone.
            raise refused
        return [record for _, record, _ in decided]

    async def _quoting(self, calls: list[Call]) -> None:
        """Load the text of the untrusted sources the calls' findings may quote into their tasks' provenance (`Finding.excerpt`).

        Only for a call one of whose values the task read in untrusted content, and only those sources: most calls load
        nothing. The decision then carries, signed, the text around each value found (what the email said beside the
        refund it asks for), which the approver reads on the page (docs/approval.md).
        """
        wanted: dict[Scope, set[str]] = {}
        for call in calls:
            spec = self.catalog.get(call.tool)
            sources = call.provenance.sources_of(call.args, spec.facts.declared_counterparties()) if spec is not None else set()
            if sources:
                wanted.setdefault((call.tenant_id, call.task_id), set()).update(sources)
        if not wanted:
            return
        loaded = await self.repo.untrusted_texts(wanted)
        for call in calls:
            call.provenance.texts.update(loaded.get((call.tenant_id, call.task_id), {}))

    async def _undos(self, proposals: list[ActionProposedData]) -> set[str]:
        """The action ids of `proposals` that are the undo the catalog names of a call proposed in their own task (`is_undo_of`).

        Only such an undo is any of the tenant's people's to ask in another requester's task: a proposal that merely
        says `undoes` (any client can write it) is decided as the call it is (the review of the second red team's F1:
        an agent's refund, labelled the undo of a step, was exempt from the task rule and decided with the task's records).
        """
        out = set()
        for p in proposals:
            if p.undoes is None or p.action_id != undo_action_id(p.undoes):
                continue
            original = await self.repo.decision(p.undoes)
            if original is None or (original.tenant_id, original.task_id) != (p.tenant_id, p.task_id):
                continue  # the undo of no call of its task
            if is_undo_of(self.pack.catalog.get(original.proposal.tool), original.proposal, p):
                out.add(p.action_id)
        return out

    async def _answer(self, decided: list[tuple[ActionProposedData, DecisionRecord, bool]]) -> None:
        """Publish each fresh decision, and a recorded one again unless its action id was answered again within `repeat_answer_interval_s`.

        A repeat held back is acknowledged with its batch (its answer is on the bus), counted and logged, never dead-lettered:
        a dead letter is a record on the bus too, and a flood of repeats would move there (restore8 N2).
        """
        now = self.clock()
        due, again, held = self._repeats.split(decided, now)
        await self._publish_records(due)
        self._repeats.answered(again, now)  # once published: a failed publish is retried, and answered
        self._repeats.held_back(held, now)

    def _pending(
        self,
        *,
        key: str,
        call: Call,
        proposal: ActionProposedData,
        action_id: str,
        step: int,
        requested_by: str | None,
        approval_id: str | None,
        parent: str | None,
        approvers: Mapping[str, Collection[str]] | None = None,
        task_requested_by: str | None = None,
    ) -> Pending:
        """The pure decision of one call, as the repository's unit of work runs it (with the history it read).

        `requested_by` is the proposal's (its signer's principal), `task_requested_by` the learned task's: an escalation names
        both, and the approval service refuses either as an approver (four eyes).
        """
        started = time.perf_counter()
        pack = self.pack
        controls = self._controls(call.tenant_id, call.tool)
        attrs = {
            Attr.ACTION: action_id,
            Attr.TOOL: call.tool,
            Attr.TENANT: call.tenant_id,
            Attr.TASK: call.task_id,
            Attr.POLICY_VERSION: pack.version,
            Attr.APPROVAL: approval_id,
        }

        def run(history: History) -> DecisionRecord:
            with span("policy evaluate", parent=parent, attributes=attrs) as s:
                verdict = decide(pack, call, history, controls, approval_granted=approval_id is not None, approvers=approvers)
                s.set_attribute(Attr.OUTCOME, verdict.outcome)
                s.set_attribute(Attr.REASONS, ",".join(verdict.codes))
                return build_record(
                    key=key,
                    verdict=verdict,
                    call=call,
                    proposal=proposal,
                    action_id=action_id,
                    step=step,
                    requested_by=requested_by,
                    task_requested_by=task_requested_by,
                    via="approval" if approval_id else "policy",
                    approval_id=approval_id,
                    signer=self.signer,
                    now=(self.issuing_clock or self.clock)(),
                    ttl_s=self.settings.authorization_ttl_s,
                    latency_ms=(time.perf_counter() - started) * 1000,
                    traceparent=current_traceparent(),
                    max_bytes=self.settings.max_decision_bytes,
                )

        def holds(seen: History, now: History) -> bool:
            return still_holds(pack, call, controls, seen, now)

        payee = payee_of(self.catalog.get(call.tool), call.args)
        return Pending(key, call.tenant_id, call.task_id, payee, run, holds)

    # --- approvals -----------------------------------------------------------------------------

    def _verified(self, event: Envelope) -> bool:
        data = event.data
        if not data.key_id or not data.signature:
            return False
        if self._approval_keys is None or not self._approval_keys.knows(data.key_id):
            # The approval service creates its key on first run, possibly after we started: look again.
            self._approval_keys = Keyring.load(self.keys_dir, self.settings.approval_key_name)
        keys, key_id, signature = self._approval_keys, data.key_id, data.signature
        # Since release 22 a decision is signed over its whole data as sent (`approval_document`), verified here over the document
        # received: a field a newer approval service adds verifies too (it is ignored here), one added on the way does not. A
        # decision signed before (`approval_message`, the fields this release parses) still verifies; the domains keep the two apart.
        return any(keys.verify(key_id, message, signature) for message in approval_messages(event))

    async def on_approval(self, event: Envelope) -> DecisionRecord | None:
        """Re-decide after a verified grant; release budget on a verified rejection or expiry; dead-letter the unverifiable."""
        if isinstance(event, ApprovalRequested):
            return None  # our own escalation, relayed by the approval service: nothing to do
        await self._wait_ready()
        data = event.data
        if not self._verified(event):
            raise Reject(
                ReasonCode.APPROVAL_UNAUTHENTICATED,
                f"{event.type} {data.approval_id} for action {data.action_id}: signature missing or invalid",
            )
        if isinstance(event, ApprovalResolved):
            await self._on_resolved(data)
            return None
        answer = event.type.removeprefix("tidegate.approval.")  # granted, rejected or expired
        original = await self.repo.decision(data.action_id)
        if not isinstance(event, ApprovalGranted):
            if original is not None and original.outcome == "escalate" and original.tenant_id == data.tenant_id:
                await self._first_answer(data, answer, original)
            await self.repo.release(data.action_id)  # rejected or expired: nothing may run
            return None
        if original is None or original.outcome != "escalate":
            state = "no decision" if original is None else f"a decision of {original.outcome}"
            raise Reject(
                ReasonCode.APPROVAL_UNAUTHENTICATED,
                f"grant {data.approval_id} for action {data.action_id}, which has {state}, not an escalation",
            )
        proposed = original.proposal
        if (
            data.action_digest != original.action_digest
            or data.tenant_id != original.tenant_id
            or data.tool != proposed.tool
            or action_digest(data.tenant_id, data.tool, data.args) != original.action_digest
        ):
            raise Reject(
                ReasonCode.DIGEST_MISMATCH, f"grant {data.approval_id} does not bind to the call escalated for action {data.action_id}"
            )
        await self._first_answer(data, answer, original)
        # The call as the grant signed it (bound to the digest above), never as stored: the policy's login can rewrite
        # `policy.decisions.proposal`, and a stored copy would run args no approver saw (docs/security/database.md).
        args = data.edited_args if data.edited_args is not None else data.args
        scope = (original.tenant_id, original.task_id)
        context = (await self._task_contexts([scope]))[scope]
        call = context.of(dataclasses.replace(Call.from_proposal(proposed), args=args))
        await self._quoting([call])
        # The task's requester as learned now (a task learned after its escalation, which then named nobody, counts too) and as
        # the escalation named it (a task forgotten since): never the grant's word, which the approval service does not sign.
        escalated = escalation_requester(original)
        task_requester = context.requested_by or escalated
        pending = self._pending(
            key=granted_key(data.approval_id),
            call=call,
            proposal=proposed,
            action_id=data.action_id,
            step=proposed.step,
            requested_by=proposed.requested_by,
            task_requested_by=task_requester,
            approval_id=data.approval_id,
            parent=None,
            # Four eyes, groups and quorum, counted here again: neither the proposal's requester nor the task's (an outside
            # agent's proposal names the agent) counts as an approver, and names that differ only in case are one person
            # (as the approval service compares them).
            approvers=distinct_approvers(
                (*data.approvers, data.approver), data.approver_groups, (proposed.requested_by, context.requested_by, escalated)
            ),
        )
        [(record, _)] = await self.repo.decide_many([pending])
        await self._publish_record(record)
        return record

    async def _first_answer(self, data: ApprovalData, answer: str, escalation: DecisionRecord) -> None:
        """Record this request's answer as the first to `escalation`, or refuse it: another answer came first.

        An escalation has one request, answered once; a grant after its rejection or expiry, or an answer from another
        request for the same action, comes from a request row restored or copied by the approval service's database
        login (docs/security/database.md), and would authorize what a human refused, or twice what one granted.
        """
        first = await self.repo.answer(data.action_id, escalation.tenant_id, escalation.task_id, data.approval_id, answer)
        if not first.same(data.approval_id, answer):
            raise Reject(
                ReasonCode.APPROVAL_UNAUTHENTICATED,
                f"approval.{answer} {data.approval_id} for action {data.action_id}: its escalation was already {first.answer} "
                f"by request {first.approval_id} at {first.answered_at:%Y-%m-%d %H:%M:%S %Z}, and takes one answer "
                "(a request row copied or restored in the approval service's database? docs/security/database.md)",
            )

    async def _on_resolved(self, data: ApprovalData) -> None:
        """A human's finding on an `action.unknown`: the reservation it left held is spent, or given back.

        `confirmed_done` settles it at what the `action.unknown` reported its attempts cost (the estimate when it
        reported none) and, for a financial call, makes its payee known; `confirmed_not_done` releases it.
        """
        if data.resolution == "confirmed_not_done":
            await self.repo.release(data.action_id)
            return
        await self._learn_payee(await self.repo.settle(data.action_id, None), data.tool, data.action_id)

    # --- results and control -------------------------------------------------------------------

    async def on_task(self, event: Envelope) -> None:
        """Learn what a task's request vouches for (its trusted input) and what it carries from outside (its untrusted fields)."""
        await self.on_tasks([event])

    async def on_tasks(self, events: Sequence[Envelope]) -> None:
        """`on_task` for a polled batch of `tasks` events, stored at once; the proposals waiting for them are woken."""
        tasks = [event.data for event in events if isinstance(event, TaskSubmitted)]
        await self.repo.learn_many([task_input(data) for data in tasks])
        self._wake({(data.tenant_id, data.task_id) for data in tasks})

    async def on_result(self, event: ActionResult) -> None:
        """Release a failed call's reservation; settle a successful one and learn its payee (and, if untrusted, its content).

        What a success taught is stored with its settlement, at once: a proposal waiting for it sees both or neither.
        An unknown outcome's reservation stays held (the money may be spent) until a human settles it, and never expires.
        """
        await self.on_results([event])

    async def on_results(self, events: list[ActionResult]) -> None:
        """`on_result` for a polled batch of results, stored in one unit of work, in order."""
        settled = await self.repo.end_many([ending_of(event, self.catalog.get(event.data.tool)) for event in events])
        self._wake({(event.data.tenant_id, event.data.task_id) for event in events})
        for event, paid in zip(events, settled, strict=True):
            await self._learn_payee(paid, event.data.tool, event.data.action_id)

    async def _learn_payee(self, settled: Settled | None, tool: str, action_id: str) -> None:
        """A financial call settled: the tenant has paid its payee, who is known from now on."""
        spec = self.catalog.get(tool)
        if settled is not None and spec is not None and spec.risk is RiskClass.FINANCIAL:
            payee = payee_of(spec, settled.args)
            if payee:
                await self.repo.add_known_payee(settled.tenant_id, payee, action_id)

    async def release_expired(self, now: datetime | None = None) -> list[str]:
        """Give back the budget of authorized calls that never ran: no result seen, authorization expired plus a margin.

        The executor refuses an authorization after its expiry, so such a call cannot start later;
        the margin covers one that started just before and is still running. A result that still
        arrives settles the reservation again (the spend views count it). `now` unset: the time authorizations are issued
        at (`issuing_clock`, the broker's): a policy host ahead released the budget of calls the executor could still run.
        """
        now = now if now is not None else (self.issuing_clock or self.clock)()
        wait = timedelta(seconds=self.settings.authorization_ttl_s + self.settings.reservation_expiry_margin_s)
        released = await self.repo.release_expired(now - wait)
        if released:
            log.info("policy: released %d reservation(s) of calls that never ran: %s", len(released), ", ".join(released[:20]))
        return released

    async def on_control(self, event: Envelope) -> None:
        """Apply a control record; a new policy set is compiled and switched to without a restart."""
        await self.control.apply(event)
        if isinstance(event, ControlPolicy):
            self.switch_pack(PackSource.from_control(event.data), event.data.published_by)
            await self.repo.record_policy_version(
                self.pack.version, self.pack.source.files, self.pack.source.settings, event.data.published_by
            )

    def switch_pack(self, source: PackSource, published_by: str) -> bool:
        """Use `source` from now on if it compiles; a broken pack is refused and the current one kept."""
        if source.version == self.pack.version:
            return True
        try:
            self.pack = compile_pack(source, self.catalog)
        except PackError as exc:
            log.error("policy: refusing pack %s published by %s, keeping %s: %s", source.version, published_by, self.pack.version, exc)
            return False
        log.info("policy: switched to pack %s published by %s", self.pack.version, published_by)
        return True
