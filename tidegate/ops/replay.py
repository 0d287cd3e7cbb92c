"""Replay: recorded traffic re-run in a sandbox topic prefix against today's policy (and, optionally, a new planner).

The sandbox (`replay-<id>.` topics, its own temporary key directory) runs, in this process:
- the real policy service (`services.policy.build`), built with its in-memory repository (its
  decisions and budget reservations), seeded with the payees the recorded decisions knew;
  it signs with a throwaway key, so nothing it signs can authorize a call on the real topics;
- with a planner strategy, the real planner (`services.planner.build`), built with its task state in memory,
  and `RecordedHumans`, which replays the human decision recorded for the same call, signed with a
  sandbox approval key;
- a `SandboxExecutor` that checks each authorization as the real executor does, then answers the
  call from the recorded result of the same call (same task, tool and args digest) or marks it
  `unanswerable`. It imports no tool and calls none: the systems of record are never touched.

Without a planner the recorded proposals are decided again; with one, the recorded task submissions
are planned again and each task runs as far as the record lets it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from schemas import (
    ActionAuthorized,
    ActionDecided,
    ActionFailed,
    ActionProposed,
    ActionResultData,
    ActionSucceeded,
    ActionUnknown,
    ApprovalExpired,
    ApprovalGranted,
    ApprovalRejected,
    ApprovalRequested,
    ControlPolicy,
    Envelope,
    ErrorInfo,
    ReasonCode,
    TaskCompleted,
    TaskFailed,
    TaskSubmitted,
    action_identity,
    encode,
    headers_for,
)
from servicekit import (
    Bus,
    Keyring,
    KitSettings,
    Reject,
    ServiceProcess,
    SigningKey,
    ToolCatalog,
    action_digest,
    approval_message,
    authorization_message,
    catalog_topic_names,
    current_traceparent,
    ensure_topics,
    kafka_options,
    make_broker,
    sign_as_producer,
)
from servicekit.bus_admin import revoke_rights, tools_of
from servicekit.bus_rights import ADMIN, OPS
from servicekit.unreadable import Skipped
from tidegate.ops.recorded import Window, read_window

__all__ = ["RecordedAnswers", "ReplayOptions", "ReplayReport", "SandboxExecutor", "TaskDiff", "run_replay"]

log = logging.getLogger(__name__)

UNANSWERABLE = "unanswerable"
SETTLE_S = 1.0
SANDBOX_SOURCE = "tidegate/replay-executor"


# --- the sandbox executor ----------------------------------------------------------------------


class SandboxProducer:
    """Publishes into the sandbox without waiting for each acknowledgement (a replay is not a record of anything).

    The kit's `Bus.publish` waits for every write (acks=all), right for services and ~100x too slow to
    re-publish a day of traffic; here writes are batched and flushed when the replay ends.
    """

    def __init__(
        self, bootstrap: str, prefix: str, signer_kit: KitSettings | None = None, client_options: dict[str, Any] | None = None
    ) -> None:
        self.prefix = prefix
        self.signer_kit = signer_kit  # the sandbox's keys: every event is signed again as its producer there
        self._producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=256 * 1024, **(client_options or {}))

    async def start(self) -> None:
        """Connect."""
        await self._producer.start()

    async def stop(self) -> None:
        """Flush what is buffered and disconnect."""
        await self._producer.flush()
        await self._producer.stop()

    async def publish(self, topic: str, event: Envelope) -> None:
        """Queue `event` on sandbox topic `topic`, carrying the current trace context if it has none."""
        if event.traceparent is None:
            tp = current_traceparent()
            if tp:
                event = event.model_copy(update={"traceparent": tp})
        if self.signer_kit is not None:
            event = sign_as_producer(self.signer_kit, event)
        headers = [(k, v.encode()) for k, v in headers_for(event).items()]
        await self._producer.send(self.prefix + topic, encode(event), key=event.key, headers=headers)


@dataclass
class RecordedAnswers:
    """Recorded results of tool calls, found by (task, tool, args digest); each answers one call."""

    calls: dict[tuple[str, str, str], list[ActionResultData]] = field(default_factory=dict)

    @classmethod
    def from_window(cls, window: Window) -> RecordedAnswers:
        """Pair each recorded result with the call it answered (args from the authorization, else the proposal)."""
        args: dict[str, tuple[str, str, dict[str, Any]]] = {}
        for e in window.of(ActionProposed):
            args.setdefault(e.data.action_id, (e.data.tenant_id, e.data.tool, e.data.args))
        for e in window.of(ActionAuthorized):
            args[e.data.action_id] = (e.data.tenant_id, e.data.tool, e.data.args)  # edited args win
        answers = cls()
        seen: set[str] = set()
        for e in window.of(ActionSucceeded, ActionFailed, ActionUnknown):
            r = e.data
            if r.action_id in seen or r.action_id not in args:
                continue
            seen.add(r.action_id)
            tenant, tool, call_args = args[r.action_id]
            answers.calls.setdefault((r.task_id, tool, action_digest(tenant, tool, call_args)), []).append(r)
        return answers

    def take(self, task_id: str, tenant_id: str, tool: str, args: dict[str, Any]) -> ActionResultData | None:
        """The recorded result of this exact call in this task, used once (a repeated call takes the next one)."""
        found = self.calls.get((task_id, tool, action_digest(tenant_id, tool, args)))
        return found.pop(0) if found else None


@dataclass
class SandboxExecutor:
    """Verifies authorizations like the executor, answers from the record, and never calls a tool."""

    keys_dir: Path
    answers: RecordedAnswers
    publish: Callable[[str, Envelope], Any]
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    answered: int = 0
    unanswerable: int = 0
    refused: int = 0
    _keyring: Keyring | None = field(default=None, init=False)

    def _verify(self, event: ActionAuthorized) -> None:
        data = event.data
        auth = data.authorization
        if self._keyring is None or not self._keyring.knows(auth.key_id):
            self._keyring = Keyring.load(self.keys_dir, "policy")
        if not self._keyring.knows(auth.key_id):
            raise Reject(ReasonCode.UNKNOWN_KEY, f"authorization signed with unknown key {auth.key_id!r}")
        if not self._keyring.verify(auth.key_id, authorization_message(data), auth.signature):
            raise Reject(ReasonCode.SIGNATURE_INVALID, f"signature of authorization for {data.action_id} does not verify")
        if auth.action_digest != action_digest(data.tenant_id, data.tool, data.args):
            raise Reject(ReasonCode.DIGEST_MISMATCH, f"authorization digest does not match the call of {data.action_id}")
        if auth.expires_at <= self.clock():
            raise Reject(ReasonCode.AUTHORIZATION_EXPIRED, f"authorization of {data.action_id} expired at {auth.expires_at}")

    async def handle(self, event: ActionAuthorized) -> None:
        """Answer one authorized call from the record (or as unanswerable) on the sandbox's `actions.results`."""
        try:
            self._verify(event)
        except Reject:
            self.refused += 1
            raise
        d = event.data
        recorded = self.answers.take(d.task_id, d.tenant_id, d.tool, d.args)
        common = {**action_identity(d), "tool": d.tool}
        if recorded is None:
            self.unanswerable += 1
            error = ErrorInfo(type=UNANSWERABLE, message="replay: no recorded result for this call (tool and args) in this task")
            data = ActionResultData(**common, status="failed", error=error, attempts=0, duration_ms=0.0, idempotency_key=d.action_id)
            await self.publish("actions.results", ActionFailed.build(data, source=SANDBOX_SOURCE))
            return
        self.answered += 1
        data = recorded.model_copy(update={**common, "idempotency_key": d.action_id})
        kind = {"succeeded": ActionSucceeded, "failed": ActionFailed, "unknown": ActionUnknown}[data.status]
        await self.publish("actions.results", kind.build(data, source=SANDBOX_SOURCE))


@dataclass
class RecordedHumans:
    """Answers an escalation in the sandbox with the human decision recorded for the same call, signed with a sandbox key.

    Yesterday's approver decided on exactly this call (same task, tool and args digest); their decision is
    replayed, so a re-planned task goes on as it did. An escalation of a call nobody decided waits, as it would.
    """

    decisions: dict[tuple[str, str, str], list[Any]]
    key: SigningKey
    publish: Callable[[str, Envelope], Any]
    replayed: int = 0

    @classmethod
    def from_window(cls, window: Window, key: SigningKey, publish: Callable[[str, Envelope], Any]) -> RecordedHumans:
        """Index the recorded decisions (grants, rejections, expiries) by the call they decided."""
        found: dict[tuple[str, str, str], list[Any]] = {}
        for e in window.of(ApprovalGranted, ApprovalRejected, ApprovalExpired):
            d = e.data
            found.setdefault((d.task_id, d.tool, d.action_digest), []).append(e)
        return cls(found, key, publish)

    async def on_decided(self, event: ActionDecided) -> None:
        """Replay the recorded decision on a sandbox escalation, if there is one."""
        d = event.data
        if d.outcome != "escalate" or d.via != "policy":
            return
        recorded = self.decisions.get((d.task_id, d.tool, d.action_digest))
        if not recorded:
            return
        original = recorded.pop(0)
        now = datetime.now(UTC)
        base = original.data.model_copy(
            update={
                "approval_id": f"replay-{original.data.approval_id}",
                "action_id": d.action_id,
                "args": d.args,
                "reasons": d.reasons,
                "policy_version": d.policy_version,
                "expires_at": now + timedelta(minutes=10),  # the sandbox's clock, not yesterday's
                "decided_at": now,
                "key_id": self.key.key_id,
                "signature": None,
            }
        )
        requested = base.model_copy(update={"approver": None, "approvers": [], "decided_at": None, "key_id": None})
        await self.publish("approvals", ApprovalRequested.build(requested, source="tidegate/replay-humans"))
        kind = type(original)
        signed = base.model_copy(update={"signature": self.key.sign(approval_message(kind.model_fields["type"].default, base))})
        self.replayed += 1
        await self.publish("approvals", kind.build(signed, source="tidegate/replay-humans"))


# --- the report ----------------------------------------------------------------------------------


@dataclass
class Story:
    """What happened to one task, on one side of the comparison."""

    actions: list[dict[str, Any]] = field(default_factory=list)
    outcome: str | None = None
    cost_usd: float = 0.0

    def signature(self) -> list[tuple[str, str]]:
        """The actions as (tool, args digest), to tell a changed plan from a changed decision."""
        return [(a["tool"], a["digest"]) for a in self.actions]


@dataclass
class TaskDiff:
    """One task, then and now."""

    task_id: str
    tenant_id: str
    then: Story
    now: Story

    @property
    def actions_changed(self) -> bool:
        """The agent proposed different calls."""
        return self.then.signature() != self.now.signature()

    @property
    def decisions_changed(self) -> bool:
        """Policy decided differently on the proposals both sides share."""
        then = {(a["tool"], a["digest"]): a["decision"] for a in self.then.actions}
        return any(then.get((a["tool"], a["digest"]), a["decision"]) != a["decision"] for a in self.now.actions if a["decision"])

    @property
    def outcome_changed(self) -> bool:
        """The task ended differently (only known with a planner)."""
        return self.now.outcome is not None and self.now.outcome != self.then.outcome

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready diff."""
        return {
            "task_id": self.task_id,
            "tenant_id": self.tenant_id,
            "actions_changed": self.actions_changed,
            "decisions_changed": self.decisions_changed,
            "outcome_changed": self.outcome_changed,
            "then": self.then.__dict__,
            "now": self.now.__dict__,
        }


@dataclass
class ReplayReport:
    """Everything a replay found."""

    sandbox_prefix: str
    planner: str | None
    recorded_events: int
    tasks: list[TaskDiff] = field(default_factory=list)
    inputs: int = 0
    answered: int = 0
    unanswerable: int = 0
    refused: int = 0
    skipped: Skipped = field(default_factory=Skipped)
    seconds: float = 0.0
    read_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready report."""
        return {
            "sandbox_prefix": self.sandbox_prefix,
            "planner": self.planner,
            "recorded_events": self.recorded_events,
            "inputs_replayed": self.inputs,
            "calls_answered_from_record": self.answered,
            "calls_unanswerable": self.unanswerable,
            "authorizations_refused": self.refused,
            "skipped": self.skipped.as_dict(),
            "undecided_now": sum(1 for t in self.tasks for a in t.now.actions if a["decision"] is None),
            "tasks": [t.as_dict() for t in self.tasks],
            "changed": {
                "actions": sum(t.actions_changed for t in self.tasks),
                "decisions": sum(t.decisions_changed for t in self.tasks),
                "outcomes": sum(t.outcome_changed for t in self.tasks),
            },
            "seconds": round(self.seconds, 3),
        }


def _stories(events: list[Any]) -> dict[str, Story]:
    """Each task's story from its events: actions with decision and result, outcome, cost."""
    stories: dict[str, Story] = {}
    actions: dict[str, dict[str, Any]] = {}
    # Proposals first: a decision or result read from another topic may come before its proposal.
    events = [e for e in events if isinstance(e, ActionProposed)] + [e for e in events if not isinstance(e, ActionProposed)]
    for e in events:
        d = e.data
        story = stories.setdefault(d.task_id, Story()) if getattr(d, "task_id", None) else None
        if story is None:
            continue
        if isinstance(e, ActionProposed) and d.action_id not in actions:
            a = {"step": d.step, "tool": d.tool, "args": d.args, "digest": action_digest(d.tenant_id, d.tool, d.args)[:16],
                 "decision": None, "reasons": [], "after_human": None, "result": None, "cost_usd": d.cost.usd}  # fmt: skip
            actions[d.action_id] = a
            story.actions.append(a)
        elif isinstance(e, ActionDecided) and d.action_id in actions:
            a = actions[d.action_id]
            if d.via == "approval":
                a["after_human"] = d.outcome  # re-decided after a grant: not what policy alone said
            elif a["decision"] is None:
                a["decision"] = d.outcome
                a["reasons"] = [str(r.code) for r in d.reasons]
        elif isinstance(e, ActionSucceeded | ActionFailed | ActionUnknown) and d.action_id in actions:
            a = actions[d.action_id]
            a["result"] = d.error.type if d.error and d.error.type == UNANSWERABLE else d.status
            a["cost_usd"] = round(a["cost_usd"] + d.cost.usd, 8)
        elif isinstance(e, TaskCompleted | TaskFailed):
            story.outcome = d.status
            story.cost_usd = d.cost.total
    for story in stories.values():
        if story.outcome is None:
            story.cost_usd = round(sum(a["cost_usd"] for a in story.actions), 8)
    return stories


# --- running it ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplayOptions:
    """What to replay and how."""

    start: datetime | None
    end: datetime | None
    tenant: str | None = None
    task: str | None = None
    planner: str | None = None
    policy_dir: Path | None = None
    keep_topics: bool = False
    idle_s: float = 20.0
    timeout_s: float = 120.0


def _fresh(event: Envelope) -> Envelope:
    """The recorded event without its trace context: a replay is its own trace."""
    return event.model_copy(update={"traceparent": None})


async def _delete_topics(bootstrap: str, prefix: str, client_options: dict[str, Any]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **client_options)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if names:
            await admin.delete_topics(names)
        await revoke_rights(admin, prefix, tools_of(n.removeprefix(prefix) for n in names))
    finally:
        await admin.close()


async def run_replay(kit: KitSettings, opts: ReplayOptions, *, progress: Callable[[str, int, int], None] | None = None) -> ReplayReport:
    """Replay the window of `opts` in a fresh sandbox prefix and compare then with now, task by task."""
    from services.planner import InMemoryTaskRepository, PlannerDeps, PlannerSettings
    from services.policy import InMemoryPolicyRepository, PolicyDeps
    from tidegate.ops.strategies import make_strategy

    started = time.perf_counter()
    report_progress = progress or (lambda stage, done, total: None)
    window = await read_window(
        kit.kafka_bootstrap,
        kit.topic_prefix,
        opts.start,
        opts.end,
        tenant=opts.tenant,
        task=opts.task,
        progress=lambda done, total: report_progress("read", done, total),
        client_options=kafka_options(kit, OPS),
    )
    # The sandbox is made (topics, ACLs) and fed by the admin principal; its services log in as themselves.
    sandbox_options = kafka_options(kit, ADMIN)
    read_seconds = time.perf_counter() - started
    sandbox = f"replay-{uuid.uuid4().hex[:10]}."
    report = ReplayReport(
        sandbox_prefix=sandbox, planner=opts.planner, recorded_events=len(window.events), skipped=window.skipped, read_seconds=read_seconds
    )
    if opts.planner:
        inputs: list[Envelope] = window.of(TaskSubmitted)
    else:
        inputs = window.of(ActionProposed)
    seen_ids: set[str] = set()
    inputs = [e for e in inputs if not (e.id in seen_ids or seen_ids.add(e.id))]  # type: ignore[func-returns-value]
    report.inputs = len(inputs)

    await ensure_topics(kit.kafka_bootstrap, sandbox, catalog_topic_names(), client_options=sandbox_options)
    keys_dir = Path(tempfile.mkdtemp(prefix="tidegate-replay-keys-"))
    sandbox_kit = kit.model_copy(
        update={
            "topic_prefix": sandbox,
            "keys_dir": keys_dir,
            "operator_keys_dir": keys_dir / "operators",
            "client_keys_dir": keys_dir / "clients",
            "metrics_port": None,
            "ready_dir": None,
            "policy_dir": opts.policy_dir or kit.policy_dir,
        }
    )
    # Today's controls (kill switches, budgets, and the published pack unless a candidate is given) hold in the sandbox.
    control = await read_window(
        kit.kafka_bootstrap, kit.topic_prefix, None, None, topics=("control",), client_options=kafka_options(kit, OPS)
    )
    carrier = SandboxProducer(kit.kafka_bootstrap, sandbox, sandbox_kit, sandbox_options)
    await carrier.start()
    try:
        for r in control.events:
            if opts.policy_dir is not None and isinstance(r.event, ControlPolicy):
                continue
            await carrier.publish("control", _fresh(r.event))

        from services.policy import build as build_policy

        known = {
            (e.data.tenant_id, str(e.data.facts["payee"]))
            for e in window.of(ActionDecided)
            if e.data.facts.get("payee") and not e.data.facts.get("payee_is_new", True)
        }
        # The sandbox's state lives in memory: no decision or task of the sandbox is stored.
        services: list[ServiceProcess] = [build_policy(kit=sandbox_kit, deps=PolicyDeps(repo=InMemoryPolicyRepository(payees=known)))]

        executor_bus = Bus(
            make_broker(kit.kafka_bootstrap, "replay-executor", **sandbox_options), "replay-executor", kit.kafka_bootstrap, sandbox
        )
        results = SandboxProducer(kit.kafka_bootstrap, sandbox, sandbox_kit, sandbox_options)
        await results.start()
        executor = SandboxExecutor(keys_dir=keys_dir, answers=RecordedAnswers.from_window(window), publish=results.publish)
        executor_bus.consume("actions.authorized", executor.handle, group_id=f"{sandbox}executor")

        if opts.planner:
            from services.planner import build as build_planner

            strategy = make_strategy(opts.planner, ToolCatalog.load(sandbox_kit.tools_dir))
            deps = PlannerDeps(repo=InMemoryTaskRepository(), strategy=strategy)
            services.append(build_planner(kit=sandbox_kit, settings=PlannerSettings(), deps=deps))
            # Human decisions recorded for the same calls are replayed, signed with a sandbox approval key
            # (the sandbox policy service verifies them with the keyring of the sandbox's key directory).
            humans = RecordedHumans.from_window(window, SigningKey.load_or_create(keys_dir, "approval"), results.publish)
            executor_bus.consume("actions.decided", humans.on_decided, group_id=f"{sandbox}humans")

        collected: list[Any] = []
        last_seen = [time.monotonic()]
        tracker = _Tracker(planner=bool(opts.planner))

        async def collect(event: Any) -> None:
            collected.append(event)
            tracker.see(event)
            last_seen[0] = time.monotonic()

        collector = Bus(
            make_broker(kit.kafka_bootstrap, "replay-collector", **sandbox_options), "replay-collector", kit.kafka_bootstrap, sandbox
        )
        # Without a planner the proposals are the inputs themselves: no need to read them back.
        watched = (
            ("actions.proposed", "actions.decided", "actions.results", "tasks.outcomes")
            if opts.planner
            else ("actions.decided", "actions.results")
        )
        for topic in watched:
            collector.consume(topic, collect, group_id=f"{sandbox}collector")

        for svc in services:
            await svc.start()
        await executor_bus.start()
        await collector.start()
        try:
            for event in inputs:
                await carrier.publish("tasks" if opts.planner else "actions.proposed", _fresh(event))
            await _wait_done(opts, inputs, tracker, last_seen, report_progress)
        finally:
            await collector.stop()
            await executor_bus.stop()
            await results.stop()
            for svc in reversed(services):
                await svc.stop()
    finally:
        await carrier.stop()
        if not opts.keep_topics:
            with contextlib.suppress(Exception):  # leftover sandbox topics are harmless; say so rather than fail
                await _delete_topics(kit.kafka_bootstrap, sandbox, sandbox_options)

    then = _stories([r.event for r in window.events])
    now = _stories(collected if opts.planner else [*inputs, *collected])
    tenants = {e.data.task_id: e.data.tenant_id for e in inputs}
    for task_id in dict.fromkeys(e.data.task_id for e in inputs):
        report.tasks.append(TaskDiff(task_id, tenants[task_id], then.get(task_id, Story()), now.get(task_id, Story())))
    report.answered, report.unanswerable, report.refused = executor.answered, executor.unanswerable, executor.refused
    report.seconds = time.perf_counter() - started
    return report


@dataclass
class _Tracker:
    """Which inputs have run their course, updated as sandbox events arrive (no rescans)."""

    planner: bool
    done: set[str] = field(default_factory=set)
    allowed: set[str] = field(default_factory=set)
    answered: set[str] = field(default_factory=set)

    def see(self, e: Any) -> None:
        d = e.data
        if self.planner:
            if isinstance(e, TaskCompleted | TaskFailed):
                self.done.add(d.task_id)
            elif isinstance(e, ActionDecided) and d.outcome == "escalate":
                self.done.add(d.task_id)  # waits for a human: the sandbox has none
            elif isinstance(e, ActionProposed | ActionSucceeded | ActionFailed | ActionUnknown):
                self.done.discard(d.task_id)  # it moved on (e.g. a hand-off after a refusal)
            return
        if isinstance(e, ActionDecided) and d.via == "policy":
            if d.outcome == "allow" and d.action_id not in self.answered:
                self.allowed.add(d.action_id)
            else:
                self.done.add(d.action_id)
        elif isinstance(e, ActionSucceeded | ActionFailed | ActionUnknown):
            self.answered.add(d.action_id)
            if d.action_id in self.allowed:
                self.done.add(d.action_id)


async def _wait_done(
    opts: ReplayOptions, inputs: list[Envelope], tracker: _Tracker, last_seen: list[float], progress: Callable[[str, int, int], None]
) -> None:
    """Until every input has run its course (a task may end waiting for a human), or nothing moved for `idle_s`."""
    deadline = time.monotonic() + opts.timeout_s
    wanted = {e.data.task_id if opts.planner else e.data.action_id for e in inputs}
    while True:
        done = len(tracker.done & wanted)
        progress("replay", done, len(wanted))
        now = time.monotonic()
        if done >= len(wanted):
            # Events of one task travel on several topics: let the stragglers land before reporting.
            if now - last_seen[0] > SETTLE_S or now > deadline:
                return
            await asyncio.sleep(0.1)
            continue
        # A safety net only: idle counts once the sandbox answered something (joining consumer groups can take a while).
        if now > deadline or (tracker.done and now - last_seen[0] > opts.idle_s):
            return
        await asyncio.sleep(0.2)
