"""Replay: recorded traffic re-run in a sandbox topic prefix against today's policy (and, optionally, a new planner).

The sandbox (`sandbox.replay-<id>.` topics, its own temporary key directory, everything logged in as `ops`) runs, in this process:
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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from schemas import (
    ActionDecided,
    ActionFailed,
    ActionProposed,
    ActionSucceeded,
    ActionUnknown,
    ApprovalExpired,
    ApprovalGranted,
    ApprovalRejected,
    ControlPolicy,
    Envelope,
    TaskCompleted,
    TaskFailed,
    TaskSubmitted,
)
from servicekit import (
    OPS,
    Bus,
    KitSettings,
    Producer,
    ServiceProcess,
    SigningKey,
    ToolCatalog,
    catalog_topic_names,
    kafka_options,
)
from services.audit import SeveralTenants
from tidegate.ops.control import read_trusted_control
from tidegate.ops.recorded import recorded_window
from tidegate.ops.replay_report import ReplayReport, Story, TaskDiff, TaskKey, stories
from tidegate.ops.sandbox import (
    RecordedAnswers,
    RecordedHumans,
    SandboxExecutor,
    SandboxProducer,
    drop_sandbox,
    make_sandbox,
    sandbox_prefix,
    sandbox_settings,
)

__all__ = ["RecordedAnswers", "ReplayOptions", "ReplayReport", "SandboxExecutor", "SeveralTenants", "Story", "TaskDiff", "run_replay"]

log = logging.getLogger(__name__)

SETTLE_S = 1.0


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


def _tasks_of(tasks: list[Envelope], proposals: list[Envelope]) -> list[Envelope]:
    """The recorded submissions of the proposals' tasks, once each.

    The policy decides a proposal the planner signed only once it has learned its task (what the task's untrusted
    fields carry); a task submitted before the window is not in it, and its proposals are decided failing closed.
    """
    wanted = {(e.data.tenant_id, e.data.task_id) for e in proposals}  # a task id is its tenant's, as the policy keys it
    first: dict[tuple[str, str], Envelope] = {}
    for task in tasks:
        if (scope := (task.data.tenant_id, task.data.task_id)) in wanted:
            first.setdefault(scope, task)
    return list(first.values())


async def run_replay(kit: KitSettings, opts: ReplayOptions, *, progress: Callable[[str, int, int], None] | None = None) -> ReplayReport:
    """Replay the window of `opts` in a fresh sandbox prefix and compare then with now, task by task."""
    from services.planner import InMemoryTaskRepository, PlannerDeps, PlannerSettings
    from services.policy import InMemoryPolicyRepository, PolicyDeps
    from tidegate.ops.strategies import make_strategy

    started = time.perf_counter()
    report_progress = progress or (lambda stage, done, total: None)
    window = await recorded_window(
        kit, opts.start, opts.end, tenant=opts.tenant, task=opts.task, progress=lambda done, total: report_progress("read", done, total)
    )
    if opts.task is not None and opts.tenant is None:
        _one_tenant(opts.task, window.events)
    # The sandbox is made, fed and dropped by `ops` on its standing rights under `sandbox.`; its services log in as `ops` too.
    sandbox_options = kafka_options(kit, OPS)
    read_seconds = time.perf_counter() - started
    sandbox = sandbox_prefix("replay")
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

    await make_sandbox(kit, sandbox, catalog_topic_names())
    keys_dir = Path(tempfile.mkdtemp(prefix="tidegate-replay-keys-"))
    sandbox_kit = sandbox_settings(kit, sandbox, keys_dir, policy_dir=opts.policy_dir or kit.policy_dir)
    # Today's controls (kill switches, budgets, tenants and their directories, and the published pack unless a
    # candidate is given) hold in the sandbox.
    # Only the records the services obey: the sandbox signs what it carries over, so a forged one must not get in.
    controls: dict[str, list[Envelope]] = {"control": [], "directory": []}
    for name, accepted in controls.items():
        await read_trusted_control(kit, name, accepted=accepted)
    carrier = SandboxProducer(kit.kafka_bootstrap, sandbox, sandbox_kit, sandbox_options)
    await carrier.start()
    try:
        for name, accepted in controls.items():
            for event in accepted:
                if opts.policy_dir is not None and isinstance(event, ControlPolicy):
                    continue
                await carrier.publish(name, _fresh(event))

        from services.policy import build as build_policy

        known = {
            (e.data.tenant_id, str(e.data.facts["payee"]))
            for e in window.of(ActionDecided)
            if e.data.facts.get("payee") and not e.data.facts.get("payee_is_new", True)
        }
        # The sandbox's state lives in memory: no decision or task of the sandbox is stored.
        services: list[ServiceProcess] = [build_policy(kit=sandbox_kit, deps=PolicyDeps(repo=InMemoryPolicyRepository(payees=known)))]

        executor_bus = Bus(
            Producer(kit.kafka_bootstrap, "replay-executor", **sandbox_options), "replay-executor", kit.kafka_bootstrap, sandbox
        )
        results = SandboxProducer(kit.kafka_bootstrap, sandbox, sandbox_kit, sandbox_options)
        await results.start()
        executor = SandboxExecutor(keys_dir=keys_dir, answers=RecordedAnswers.from_window(window), publish=results.publish)
        executor_bus.consume("actions.authorized", executor.handle, group_id=f"{sandbox}executor")

        if opts.planner:
            from services.planner import build as build_planner

            strategy = make_strategy(opts.planner, ToolCatalog.load(*sandbox_kit.tool_dirs))
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
            Producer(kit.kafka_bootstrap, "replay-collector", **sandbox_options), "replay-collector", kit.kafka_bootstrap, sandbox
        )
        # Without a planner the proposals are the inputs themselves: no need to read them back.
        watched = (  # with a planner, the recorded humans' answers too: a rejection ends an escalation as a grant does
            ("actions.proposed", "actions.decided", "approvals", "actions.results", "tasks.outcomes")
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
            if not opts.planner:  # the proposals' tasks first, as in production: a planner's proposal waits for its task
                for task in _tasks_of(window.of(TaskSubmitted), inputs):
                    await carrier.publish("tasks", _fresh(task))
            if opts.planner:
                for event in inputs:
                    await carrier.publish("tasks", _fresh(event))
            else:
                await _propose_in_step(inputs, lambda e: carrier.publish("actions.proposed", _fresh(e)), tracker, opts.idle_s)
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
                await drop_sandbox(kit, sandbox)

    then = stories([r.event for r in window.events])
    now = stories(collected if opts.planner else [*inputs, *collected])
    for tenant, task_id in dict.fromkeys(_task_of(e) for e in inputs):  # a task id is its tenant's: two tenants' are two tasks
        key = (tenant, task_id)
        report.tasks.append(TaskDiff(task_id, tenant, then.get(key, Story()), now.get(key, Story())))
    report.answered, report.unanswerable, report.refused = executor.answered, executor.unanswerable, executor.refused
    report.seconds = time.perf_counter() - started
    return report


def _task_of(event: Any) -> TaskKey:
    return (event.data.tenant_id, event.data.task_id)


def _one_tenant(task_id: str, events: list[Any]) -> None:
    """`SeveralTenants` when the window's events of `task_id` are several tenants' (each tenant's is another task)."""
    tenants = list(dict.fromkeys(t for r in events if (t := getattr(r.event.data, "tenant_id", None)) and t != "*"))
    if len(tenants) > 1:
        raise SeveralTenants(task_id, tenants)


@dataclass
class _Tracker:
    """Which inputs have run their course, updated as sandbox events arrive (no rescans)."""

    planner: bool
    done: set[TaskKey] = field(default_factory=set)
    allowed: set[TaskKey] = field(default_factory=set)
    answered: set[TaskKey] = field(default_factory=set)
    _waiting: dict[TaskKey, asyncio.Event] = field(default_factory=dict)

    async def ran(self, key: TaskKey) -> None:
        """Return once `key` ((tenant, action id); (tenant, task id) with a planner) has run its course."""
        if key not in self.done:
            await self._waiting.setdefault(key, asyncio.Event()).wait()

    def see(self, e: Any) -> None:
        self._see(e)
        for key in [k for k in self._waiting if k in self.done]:
            self._waiting.pop(key).set()

    def _see(self, e: Any) -> None:
        d = e.data
        if self.planner:
            if not hasattr(d, "task_id") or isinstance(e, ApprovalGranted | ApprovalRejected | ApprovalExpired):
                return  # a human's answer: the decision or the outcome that follows it moves the task
            task = _task_of(e)
            if isinstance(e, TaskCompleted | TaskFailed):
                self.done.add(task)
            elif isinstance(e, ActionDecided) and d.outcome == "escalate":
                self.done.add(task)  # waits for a human: the sandbox has none
            elif isinstance(e, ActionProposed | ActionSucceeded | ActionFailed | ActionUnknown):
                self.done.discard(task)  # it moved on (e.g. a hand-off after a refusal)
            return
        action = (d.tenant_id, d.action_id)
        if isinstance(e, ActionDecided) and d.via == "policy":
            if d.outcome == "allow" and action not in self.answered:
                self.allowed.add(action)
            else:
                self.done.add(action)
        elif isinstance(e, ActionSucceeded | ActionFailed | ActionUnknown):
            self.answered.add(action)
            if action in self.allowed:
                self.done.add(action)


async def _propose_in_step(
    inputs: list[Envelope], publish: Callable[[Envelope], Awaitable[Any]], tracker: _Tracker, step_wait_s: float
) -> None:
    """Publish each task's recorded proposals in their order, the next once the one before ran its course (or `step_wait_s`).

    As the planner or an agent did: a step was proposed once the one before was decided and answered. All at once, a
    refund could be decided before the read of the charge before it was answered, and so escalated `record_not_read`
    where it had been allowed: a change replay would report that today's policy did not make. Tasks go side by side.
    """
    steps: dict[tuple[str, str], list[Envelope]] = {}
    for event in inputs:
        steps.setdefault((event.data.tenant_id, event.data.task_id), []).append(event)

    async def one_task(events: list[Envelope]) -> None:
        for event in events:
            await publish(event)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(tracker.ran((event.data.tenant_id, event.data.action_id)), step_wait_s)

    await asyncio.gather(*(one_task(events) for events in steps.values()))


async def _wait_done(
    opts: ReplayOptions, inputs: list[Envelope], tracker: _Tracker, last_seen: list[float], progress: Callable[[str, int, int], None]
) -> None:
    """Until every input has run its course (a task may end waiting for a human), or nothing moved for `idle_s`."""
    deadline = time.monotonic() + opts.timeout_s
    wanted = {_task_of(e) if opts.planner else (e.data.tenant_id, e.data.action_id) for e in inputs}
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
