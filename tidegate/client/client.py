"""The asynchronous client: propose a tool call, get what policy, humans and the executor made of it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any

from schemas import ActionProposed, ActionProposedData, action_digest, decode, digest, encode, refuse_nul, utcnow
from tidegate.client._resume import by_position, read_until_settled, settled
from tidegate.client._serving import ServeGate
from tidegate.client.ledger import ActionIdReused, MemoryProposals, ProposalLedger
from tidegate.client.limits import Unsendable, check_args, check_size
from tidegate.client.memory import MemoryTransport
from tidegate.client.outcomes import Decided, Denied, Escalated, Outcome
from tidegate.client.progress import ANSWER_TOPICS, Progress
from tidegate.client.settings import ClientSettings
from tidegate.client.signing import EnvelopeSigner, Signer, SigningNotWired, registration_problem, signer_for
from tidegate.client.transport import KafkaTransport, Position, Transport
from tidegate.client.trust import Trust

__all__ = ["Tidegate"]

log = logging.getLogger(__name__)

_UNSIGNED = (
    "no TIDEGATE_CLIENT_SIGNING_KEY_PATH: proposals go out unsigned, and a Tidegate deployment refuses them as "
    "`signature_missing` (dead-lettered, never answered); register a client key with `tidegate clients add <tenant> <principal>` "
    "and set TIDEGATE_CLIENT_SIGNING_KEY_PATH to its private key"
)
_RUNNING = (
    "the call was allowed and the executor has not reported its result yet: it may still run, or be running; "
    "do not propose it again under a new action id (`resume` picks it up), and set TIDEGATE_CLIENT_RESULT_TIMEOUT_S above "
    "the tool's timeout_s × max_attempts when its calls take that long"
)
_MAYBE_TAKEN = (
    "no decision came: the policy service may be slow or down, and then the proposal stands and is decided once it is back "
    "(`resume` it; do not propose the call again under a new action id, which would be another action); or the policy "
    "refused it and dead-lettered it, where clients cannot read it, and no answer will come: a client key it does not trust "
    "(`unknown_key`: not registered, or registered for another principal than TIDEGATE_CLIENT_PRINCIPAL), a tenant this "
    "key may not propose for (`signer_not_allowed`), or another call used this action id first (`action_id_reused`, the "
    "one a new action id answers). The operator reads which in the policy's log or the audit log's dead letters. Or this very "
    "call was proposed before under this action id (by another process, or by this agent before a restart) and the policy, "
    "which answers a call's repeats at most once in TIDEGATE_POLICY_REPEAT_ANSWER_INTERVAL_S (60 s), did not answer this "
    "one: `resume` the action id without a position, which reads its story from the answer topics' beginning"
)
_RECALLED = (
    "the policy answered with the decision it made before this client started: the call was proposed before under this "
    "action id (by another process, or before a restart), and its story is being read from the answer topics' beginning; "
    "`resume` the action id without a position to wait longer, and keep proposals across restarts with "
    "`Tidegate(proposals=SqliteProposals(path))`"
)


@dataclass
class _Watch:
    """One action being followed by the live reader, and a flag raised whenever it learns something."""

    progress: Progress
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class Tidegate:
    """An outside agent's connection to Tidegate.

    Use as `async with Tidegate() as tg:`; settings come from `TIDEGATE_CLIENT_*` unless given.
    One live reader follows the answer topics from the moment the client starts, for every proposal,
    and believes only what the deployment's services signed (`trust`: by default their public keys
    in `service_keys_dir`; on a `MemoryTransport`, the keys of the stand-in serving it).
    A proposal whose action id is already in `proposals` is not sent again: its story is read from
    the position recorded with it (how a framework's re-run or a restarted agent picks up a call).
    One the broker never acknowledged (the send failed, or the agent died before it) is sent again,
    as the very event recorded with it.
    The ledger binds each action id to its call (tenant, task, tool, args): the same id for another
    call raises `ActionIdReused` instead of handing back the earlier call's outcome.
    Action ids are global across tenants: a proposal is answered only by its own tenant's events, and only
    once the policy's decision of that very call (its `action_digest`) was seen. When the policy decided
    another call under the id, the proposal raises `ActionIdReused` (the policy refused it).
    """

    def __init__(
        self,
        settings: ClientSettings | None = None,
        *,
        transport: Transport | None = None,
        signer: Signer | None = None,
        task_id: str | None = None,
        proposals: ProposalLedger | None = None,
        trust: Trust | None = None,
    ) -> None:
        self.settings = settings or ClientSettings()
        self.transport: Transport = transport or KafkaTransport(self.settings)
        self.signer = signer or signer_for(self.settings)
        self.task_id = task_id or f"task-{uuid.uuid4().hex[:12]}"
        self._task_chosen = task_id is not None  # a task of the caller's is theirs to end; the default one moves on (propose)
        self.proposals: ProposalLedger = proposals or MemoryProposals()
        self._trust = trust
        self._watches: dict[str, _Watch] = {}
        self._start: Position | None = None
        self._started_at: datetime | None = None
        self._pump: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._steps = 0
        self.serve_gates: dict[str, ServeGate] = {}  # the tools this process serves: none of their calls is proposed unserved

    @property
    def trust(self) -> Trust:
        """The public keys the client believes (resolved when it starts)."""
        if self._trust is None:
            on_bus = self.transport.trust if isinstance(self.transport, MemoryTransport) else None
            self._trust = on_bus or Trust.load(self.settings.service_keys_dir, retired_grace_s=self.settings.retired_key_grace_s)
        return self._trust

    @property
    def task_chosen(self) -> bool:
        """Whether the task was given (`task_id=`), not this client's random default (`task-<hex>`, new in each process).

        An adapter that names its action ids by the client's task finds a call proposed by another process only under a
        task that process chose too: under a random one, the same call id is another action id, a second proposal.
        """
        return self._task_chosen

    @property
    def unsigned(self) -> bool:
        """Whether proposals go out unsigned to a real deployment (no signing key; a memory bus's stand-in checks none)."""
        return isinstance(self.signer, EnvelopeSigner) and not isinstance(self.transport, MemoryTransport)

    async def start(self) -> None:
        """Check the deployment's keys are known, connect, note where the answer topics end, and follow them from there.

        A start that fails leaves nothing connected.
        """
        self.trust.require()
        if self.unsigned:
            log.warning(_UNSIGNED)
        if not isinstance(self.transport, MemoryTransport) and (
            problem := registration_problem(self.signer, self.settings, self.trust.keys_dir)
        ):
            raise SigningNotWired(problem)  # refused now rather than a proposal waiting for an answer that never comes
        await self.transport.start()
        try:
            self._started_at = utcnow()  # before the end is read: a decision made before it was made before this client read
            self._start = await self.transport.end(ANSWER_TOPICS)
        except BaseException:
            await self.transport.stop()
            raise
        self._pump = asyncio.create_task(self._follow_live(self._start))

    async def stop(self) -> None:
        """Stop reading and serving, then disconnect."""
        for task in [*self._background, *([self._pump] if self._pump else [])]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):  # a task that failed said so when it did
                await task
        self._background.clear()
        self._pump = None
        await self.transport.stop()

    async def __aenter__(self) -> Tidegate:
        await self.start()
        return self

    async def __aexit__(self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]) -> None:
        await self.stop()

    def run_in_background(self, coro: Any) -> None:
        """Keep a task (a governed tool's server, say) running until the client stops.

        A task that fails says so in the log at once (never "exception was never retrieved" at exit, nor raised
        by `stop`), and one that ends is let go.
        """
        task = asyncio.create_task(self._logged(coro))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    @staticmethod
    async def _logged(coro: Any) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("a background task of the Tidegate client stopped (%s)", getattr(coro, "__qualname__", coro))

    async def _follow_live(self, start: Position) -> None:
        try:
            await self._dispatch(start)
        except asyncio.CancelledError:
            raise
        except Exception:  # without the live reader no answer arrives: say so loudly, proposals then time out
            log.exception("the client's reader of the answer topics stopped")
            raise

    async def _dispatch(self, start: Position) -> None:
        async for topic, event in self.transport.read(ANSWER_TOPICS, start):
            watch = self._watches.get(getattr(event.data, "action_id", ""))
            if watch is not None and self.trust.believes(event) and watch.progress.apply(topic, event):
                watch.changed.set()

    async def propose(
        self,
        tool: str,
        args: dict[str, Any],
        *,
        task: str | None = None,
        tenant: str | None = None,
        tainted_args: Iterable[str] = (),
        action_id: str | None = None,
        rationale: str = "",
        step: int | None = None,
        wait_for_human: bool = False,
        timeout_s: float | None = None,
        result_timeout_s: float | None = None,
        human_timeout_s: float | None = None,
        total_timeout_s: float | None = None,
    ) -> Outcome:
        """Propose one tool call and wait for the decision, and for the result when it is allowed.

        Args:
            tool: A catalogued tool.
            args: Its arguments (validated by policy against the tool's schema).
            task: Task id (default: this client's).
            tenant: Tenant (default from the settings).
            tainted_args: Arg paths whose values came from untrusted content.
            action_id: The idempotency key; pass a stable one (a framework's tool-call id, namespaced by its thread or run):
                proposing the same call under it again sends nothing and follows the first proposal instead
                (unless the first send failed: then the recorded proposal is sent again).
            rationale: Why the agent wants it (recorded).
            step: Position in the task (default: this client's running count of the calls it proposed; proposing an
                action id again, which follows the first proposal, takes no step).
            wait_for_human: Return only once a human decided (default: return `Escalated` at once).
            timeout_s: Seconds to wait for the decision (default from the settings: `decision_timeout_s`).
            result_timeout_s: Once the call is seen allowed, seconds to wait for its result (default from the settings:
                `result_timeout_s`, which outlasts a tool's `timeout_s` × attempts, the executor's wait before its definite answer).
            human_timeout_s: With wait_for_human, seconds to wait for the human (default: no limit).
            total_timeout_s: Seconds for the decision and the result together, from this call on (default: each its own
                timeout alone): for a caller whose own request times out, such as an MCP host that cannot wait longer.

        Returns:
            `Executed`, `Failed`, `Denied`, `Rejected`, or `Escalated` (unless wait_for_human).

        Raises:
            ActionIdReused: `action_id` was proposed before for another tenant, task, tool or args (nothing is sent).
            pydantic.ValidationError: A string in the call holds U+0000, which the contract refuses and no Tidegate
                service can store (nothing is sent; sent, it would only be dead-lettered); for an arg, its path.
            TypeError: `tainted_args` is a str, not a list of arg paths.
            Unsendable: A call no service could read, which the policy would dead-letter and so never answer: an arg
                holds NaN or infinity, the args nest deeper than `max_json_depth` allows, or the proposal is larger than
                `max_proposal_bytes` or the broker takes (nothing of it stands: it is not recorded, a retry is refused again).
            TimeoutError: Nothing conclusive arrived in time (the proposal stands; `resume` can pick it up); without
                a signing key it says the proposal went out unsigned.
            NotServed: This process serves `tool` (`@governed`, an adapter's `serve=`) and cannot (the bus refused its
                login, no such tool topic), or its serve loop stopped: nothing is proposed, since no invocation would run.
        """
        if self._start is None:
            raise RuntimeError("client not started: use `async with Tidegate() as tg:` (or `await tg.start()`)")
        if isinstance(tainted_args, str):  # a str is an iterable of characters: "payee_id" would taint "p", "a", …
            raise TypeError("tainted_args is a list of arg paths")
        check_args(args, max_depth=self.settings.max_json_depth)
        if (gate := self.serve_gates.get(tool)) is not None:  # served here: proposed only once it is, never when it cannot be
            await gate.check()
        key = action_id or f"act-{uuid.uuid4().hex}"
        task_id, tenant_id = task or self.task_id, tenant or self.settings.tenant
        call = digest({"tenant_id": tenant_id, "task_id": task_id, "tool": tool, "args": args})
        recorded = self.proposals.lookup(key)
        if recorded is not None and recorded[1] not in (None, call):
            raise ActionIdReused(key)
        if recorded is None:  # a call proposed again follows the first proposal: it is no new step
            self._steps += 1
        data = ActionProposedData(
            action_id=key,
            task_id=task_id,
            tenant_id=tenant_id,
            step=self._steps if step is None else step,
            tool=tool,
            args=args,
            rationale=rationale,
            proposer=self.settings.proposer,
            tainted_args=list(tainted_args),
            mode=self.settings.mode,
            requested_by=self.settings.principal,
        )
        if recorded is None:
            refuse_nul(data.model_dump_json())
        event = ActionProposed.build(data, source=f"urn:tidegate:client:{self.settings.proposer}")
        expected = _decided_digest(event)
        send: ActionProposed | None
        if recorded is None:
            send = self.signer.sign(event)
            raw = encode(send)
            check_size(raw, max_bytes=self.settings.max_proposal_bytes)  # before it is recorded: nothing of it stands
            position = self._start
            self.proposals.record(key, position.token(), call, raw.decode(), action_digest=expected)
        else:
            position = Position.parse(recorded[0])
            unsent = self.proposals.unsent(key)  # recorded, but the broker never acknowledged it: send that same event again
            send = decode("actions.proposed", unsent) if unsent is not None else None
        watch = self._watches.setdefault(key, _Watch(Progress(key, tenant_id=tenant_id, action_digest=expected, tool=tool)))
        if send is not None:
            try:
                await self.transport.publish("actions.proposed", send)  # a failure leaves it unsent, for a retry to send again
            except Unsendable:  # but the broker never takes a record this large: nothing of it stands
                self.proposals.withdraw(key)
                self._watches.pop(key, None)
                raise
            self.proposals.sent(key)
        # Proposed before, its story is read again from its recorded position: it waits for a human only if nothing
        # that was on the topics by now says otherwise (the approvals topic may be read ahead of the result's).
        read_through = asyncio.Event()
        if recorded is None:
            read_through.set()
        else:
            self.run_in_background(self._catch_up(watch, position, read_through))
        began = asyncio.get_running_loop().time()
        limit = self.settings.decision_timeout_s if timeout_s is None else timeout_s
        if total_timeout_s is not None:
            limit = min(limit, total_timeout_s)
        hint = _UNSIGNED if self.unsigned else ""
        started_at = self._started_at
        assert started_at is not None
        recalled = False

        def decided(p: Progress) -> bool:
            nonlocal recalled
            if recorded is None and not recalled and p.decided_before(started_at):
                # A call this client's ledger does not know, proposed before (another process; this agent before a restart):
                # the policy answered the repeat with its earlier decision, and the approval request, a human's answer or
                # the result that followed it are on the topics ahead of where this client began reading. Read them there.
                recalled = True
                read_through.clear()
                self.run_in_background(self._catch_up(watch, None, read_through))
            return p.final() is not None or p.refused or p.allowed or (p.waiting_for_human and read_through.is_set())

        try:
            await self._until(watch, decided, limit, hint=hint)
        except TimeoutError as exc:
            if recalled and type(exc) is TimeoutError:
                raise TimeoutError(f"{exc} ({_RECALLED})") from None
            raise
        if watch.progress.final() is None and watch.progress.allowed:  # allowed: the executor's answer may take a tool's every attempt
            waited = self.settings.result_timeout_s if result_timeout_s is None else result_timeout_s
            if total_timeout_s is not None:  # what the decision took is gone from the caller's wait
                waited = min(waited, max(0.0, total_timeout_s - (asyncio.get_running_loop().time() - began)))
            await self._until(watch, lambda p: p.final() is not None, waited, hint=_RUNNING)
        if watch.progress.refused:
            self._watches.pop(key, None)
            raise ActionIdReused(key, by_deployment=True)
        final = watch.progress.final()
        if final is not None:
            self._watches.pop(key, None)
            if task is None and not self._task_chosen and task_id == self.task_id and _task_expired(final):
                # The policy keeps a task TIDEGATE_POLICY_TASK_STATE_KEPT_S (7 days), then denies every call of it: a process
                # proposing under its default task for longer would have every later call denied. It moves on to a new task
                # (what the old one read is forgotten by the policy too); this call stays denied, and one made again is new.
                self.task_id = f"task-{uuid.uuid4().hex[:12]}"
                log.warning("the policy forgot this client's task %s (task_expired); its calls go under %s now", task_id, self.task_id)
            return final
        escalated = self._escalated(watch, None if recalled else position)
        return await escalated.decision(human_timeout_s) if wait_for_human else escalated

    def progress_of(self, action_id: str) -> Progress | None:
        """What this client has read so far of a call it still waits on (`propose`, an `Escalated`'s `decision()`), else None.

        For a caller that tells its own user where a long call stands (the MCP gateway's progress notifications): read
        only, as the topics told it.
        """
        watch = self._watches.get(action_id)
        return watch.progress if watch is not None else None

    async def _catch_up(self, watch: _Watch, position: Position | None, read_through: asyncio.Event) -> None:
        """Read an earlier proposal's story from its recorded position (None: the beginning) until it ends (the live reader started later).

        `read_through` is set once everything that was on the topics as the read began has been applied.
        """
        reached = asyncio.create_task(read_through.wait())
        reached.add_done_callback(lambda _: watch.changed.set())
        try:
            async for topic, event in self.transport.read(ANSWER_TOPICS, position, caught_up=read_through):
                if self.trust.believes(event) and watch.progress.apply(topic, event):
                    watch.changed.set()
                    if watch.progress.final() is not None or watch.progress.refused:
                        return
        finally:
            reached.cancel()

    def _escalated(self, watch: _Watch, position: Position | None) -> Escalated:
        """The escalation to hand back; its position token is empty (the topics' beginning) when the story began before this client."""
        progress = watch.progress
        assert progress.decision is not None
        assert progress.requested is not None

        async def decision(timeout_s: float | None) -> Decided:
            await self._until(watch, lambda p: p.final() is not None, timeout_s)
            self._watches.pop(progress.action_id, None)
            final = progress.final()
            assert final is not None
            return final

        return Escalated(
            action_id=progress.action_id,
            tool=progress.tool,
            approval_id=progress.requested.approval_id,
            reasons=tuple(progress.decision.reasons),
            position=position.token() if position is not None else "",
            _decision=decision,
        )

    async def _until(self, watch: _Watch, done: Any, timeout_s: float | None, *, hint: str = "") -> None:
        async def wait() -> None:
            while not done(watch.progress):
                watch.changed.clear()
                await watch.changed.wait()

        try:
            await asyncio.wait_for(wait(), timeout_s)
        except TimeoutError:
            raise _no_answer(watch.progress, timeout_s, hint) from None

    async def resume(
        self, action_id: str, *, position: str | None = None, timeout_s: float | None = None, tenant: str | None = None
    ) -> Decided:
        """Wait for how an earlier proposal ends, e.g. after a restart while a human decides.

        Reads the answer topics from `position` (an `Escalated.position`) or, without one, from their
        beginning, keeping only this action's events of `tenant` (default from the settings); then waits for
        the rest, `timeout_s` at most (reading what was already there does not count, while it moves on). A
        proposal `proposals` recorded is answered only by the policy's decision of that very call; for an id
        it did not record, any call of the tenant under that id is taken for it.

        Raises:
            ActionIdReused: The policy decided another call under this id (another tenant's, or other args).
            TimeoutError: Nothing conclusive arrived in time.
            ValueError: `position` is not a position token.
        """
        progress = self._progress(action_id, tenant)
        await read_until_settled(self.transport, self.trust, by_position([(progress, position)]), timeout_s)
        outcome = settled(progress)
        if isinstance(outcome, ActionIdReused):
            raise outcome
        if outcome is None:
            raise _no_answer(progress, timeout_s)
        return outcome

    async def resume_many(
        self, rows: Iterable[tuple[str, str | None]], *, timeout_s: float, tenant: str | None = None
    ) -> dict[str, Decided | ActionIdReused]:
        """How each of many earlier proposals ended, read at once: what a sweep over waiting approvals asks.

        `rows` are `(action_id, position)` pairs (a position as `resume` takes it; None: the topics' beginning).
        Each action is answered as `resume` would answer it, from its own position on, but the actions that share
        a position share one read of the answer topics: a client's proposals all carry its start position, so a
        sweep reads once per client start, however many actions wait. The reads end when every action is
        settled or `timeout_s` passed.

        Returns:
            The settled actions, in the order given: the final outcome, or the `ActionIdReused` the policy's
            decision of another call under that id means for that action alone. The undecided are left out.

        Raises:
            ValueError: An action id given twice, or a position that is not a position token (nothing is read).
        """
        progresses = [(self._progress(action_id, tenant), position) for action_id, position in rows]
        await read_until_settled(self.transport, self.trust, by_position(progresses), timeout_s)
        answers = ((progress.action_id, settled(progress)) for progress, _ in progresses)
        return {action_id: outcome for action_id, outcome in answers if outcome is not None}

    def _progress(self, action_id: str, tenant: str | None) -> Progress:
        """An earlier proposal to follow: the tenant's, matched to the call the ledger recorded under the id (if it did)."""
        return Progress(action_id, tenant_id=tenant or self.settings.tenant, action_digest=self.proposals.action_digest(action_id))


def _task_expired(outcome: Decided) -> bool:
    """Whether the policy denied the call `task_expired`: the task it was proposed in is forgotten."""
    return isinstance(outcome, Denied) and outcome.codes == ["task_expired"]


def _decided_digest(event: ActionProposed) -> str:
    """The `action_digest` the policy's decision of `event` carries: over the call as the policy reads it off the wire."""
    seen = decode("actions.proposed", encode(event)).data
    return action_digest(seen.tenant_id, seen.tool, seen.args)


class ResultPending(TimeoutError):
    """The call was allowed, but its result did not come in time: it may still run, or be running (never propose it again).

    A `TimeoutError`, so code that catches those is unchanged; the MCP gateway and adapters tell it apart to say so.
    """


def _no_answer(progress: Progress, timeout_s: float | None, hint: str = "") -> TimeoutError:
    """The timeout of a wait; before any decision of the call it says the id may be another's; once allowed, `ResultPending`."""
    hints = [h for h in (hint, _MAYBE_TAKEN if progress.decision is None else "") if h]
    said = f"no conclusive answer for action {progress.action_id} within {timeout_s} s"
    kind = ResultPending if progress.allowed and progress.final() is None else TimeoutError
    return kind(f"{said} ({'; '.join(hints)})" if hints else said)
