"""Handlers of the planner service: thin, they parse, call the domain through the repository, publish."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from schemas import (
    OUR_PLANNER,
    ActionDecided,
    ActionResult,
    Approval,
    ApprovalExpired,
    ApprovalGranted,
    ApprovalRejected,
    ApprovalRequested,
    ApprovalResolved,
    Envelope,
    ReasonCode,
    TaskSubmitted,
    TaskSubmittedData,
    utcnow,
)
from servicekit import Attr, Outlet, Reject, once_delivered, once_delivered_together, span
from services.planner import domain
from services.planner.action_ids import ActionIds
from services.planner.repository import Change, Ending, PendingEvent, TaskRepository
from services.planner.strategies import Strategy
from services.planner.task_state import CostRates, StepTimeouts, TaskState, Transition

__all__ = ["OUR_PLANNER", "PlannerHandlers"]

log = logging.getLogger(__name__)

_TIMEOUT_EVENT = "step-timeout:"
_APPROVAL_KINDS: dict[type[Envelope], str] = {
    ApprovalRequested: "requested",
    ApprovalGranted: "granted",
    ApprovalRejected: "rejected",
    ApprovalExpired: "expired",
    ApprovalResolved: "resolved",  # a follow-up's finding; the task closed on the `action.unknown` already
}


@dataclass
class PlannerHandlers:
    """The planner's subscribers, over explicit dependencies."""

    repo: TaskRepository
    strategy: Strategy
    out: Outlet  # the bus: each outbox event is signed before it is stored, and its stored bytes are what is published
    rates: CostRates
    read_only: frozenset[str]
    ids: ActionIds  # the planner's own: its action ids are unguessable and the same on every run
    clock: Callable[[], datetime] = utcnow
    timeouts: StepTimeouts = field(default_factory=StepTimeouts)
    proposals_again: int = 2  # times a step whose authorization expired unused is proposed again (settings)
    _delivered: set[int] = field(default_factory=set, init=False, repr=False)  # outbox entries the broker has, not yet deleted
    _started: datetime = field(init=False, repr=False)  # a step waits from here at the earliest (`domain.on_tick`)

    def __post_init__(self) -> None:
        self._started = self.clock()

    async def _apply(self, event_id: str, tenant_id: str, task_id: str, change: Change, ending: Ending | None = None) -> None:
        await self._publish(await self.repo.apply(event_id, tenant_id, task_id, change, self.out.record, ending=ending))

    def _ending(self, action_id: str, tenant_id: str, task_id: str, now: datetime) -> Ending:
        """How an event about `action_id` ends its task when the stored state is refused: only if the planner proposed that action.

        The action id proves the task the planner's own and names its tenant (`ActionIds.owns`, checked only then); an
        event about any other action (an outside agent's, an undo) proves nothing of the task: the refused state is left.
        """

        def ending(why: str) -> Transition | None:
            if not self.ids.owns(action_id, tenant_id, task_id):
                return None
            return domain.on_state_refused(task_id, tenant_id, why, now, self.rates)

        return ending

    async def _publish(self, pending: list[PendingEvent]) -> None:
        """Publish outbox entries as stored; deleted once the broker has them, a redelivery of their source publishes them again.

        They are deleted together, in one statement, right before the consumer next commits its offsets
        (`once_delivered_together`); until then an entry the broker has is known here as delivered, so a
        redelivery of its source meanwhile publishes nothing again, as it would find nothing once deleted.
        """
        pending = [p for p in pending if p.outbox_id not in self._delivered]
        if pending:
            ids = [p.outbox_id for p in pending]
            # As stored, never signed now: an entry the planner's database login wrote unsigned goes out so, and no consumer takes it.
            await self.out.publish_many([p.record for p in pending])
            await once_delivered(functools.partial(self._mark_delivered, ids))
            await once_delivered_together("planner.outbox", ids, self._forget)

    async def _mark_delivered(self, outbox_ids: list[int]) -> None:
        self._delivered.update(outbox_ids)

    async def _forget(self, outbox_ids: list[int]) -> None:
        """Delete delivered outbox entries (then no longer kept in memory)."""
        await self.repo.published(outbox_ids)
        self._delivered.difference_update(outbox_ids)

    async def on_task(self, event: TaskSubmitted) -> None:
        """Plan a new task of ours and propose its first step; ignore tasks an outside agent plans.

        A task id is its tenant's: another tenant's task of the same id is another task. A submission of an id the tenant
        already runs is applied once (a redelivery, or the same request sent again, changes nothing); another requester's,
        or another request under it, is dead-lettered `task_id_reused` (`domain.reuse_of`), never silently dropped.
        """
        task = event.data
        if task.planner != OUR_PLANNER:
            log.info("task %s is planned by %s; not ours", task.task_id, task.planner)
            return
        plan = None
        existing = await self.repo.get(task.tenant_id, task.task_id)
        if existing is None:
            plan = await self.strategy.plan(task)  # outside the transaction: a model call may take seconds
        else:
            _refuse_reuse(existing, task)
        now = self.clock()

        def change(state: TaskState | None) -> Transition | None:
            if state is not None:
                _refuse_reuse(state, task)  # another submission of the id was applied since the read above
                return None
            if plan is None:
                return None
            return domain.start_task(
                task,
                plan.steps,
                strategy=self.strategy.name,
                now=now,
                rates=self.rates,
                read_only=self.read_only,
                dropped=plan.dropped,
                error=plan.error,
                detail=plan.detail,
                ids=self.ids,
            )

        def ending(why: str) -> Transition:  # the client signed the submission: it names the task, its tenant and this planner
            return domain.on_state_refused(task.task_id, task.tenant_id, why, now, self.rates, task=task)

        await self._apply(event.id, task.tenant_id, task.task_id, change, ending)

    async def on_decided(self, event: ActionDecided) -> None:
        """Policy decided on an action: wait for its result, wait for a human, or re-plan."""
        now = self.clock()
        await self._apply(
            event.id,
            event.data.tenant_id,
            event.data.task_id,
            _existing(lambda s: domain.on_decision(s, event.data, now, self.rates, self.read_only, ids=self.ids)),
            self._ending(event.data.action_id, event.data.tenant_id, event.data.task_id, now),
        )

    async def on_approval(self, event: Approval) -> None:
        """A human decision (or an expiry) on an escalated action."""
        kind = _APPROVAL_KINDS[type(event)]
        now = self.clock()
        await self._apply(
            event.id,
            event.data.tenant_id,
            event.data.task_id,
            _existing(lambda s: domain.on_approval(s, kind, event.data, now, self.rates, self.read_only, ids=self.ids)),
            self._ending(event.data.action_id, event.data.tenant_id, event.data.task_id, now),
        )

    async def on_result(self, event: ActionResult) -> None:
        """The executor's result: propose the next step (or the same call again, its authorization expired unused) or close the task."""
        now = self.clock()
        await self._apply(
            event.id,
            event.data.tenant_id,
            event.data.task_id,
            _existing(
                lambda s: domain.on_result(
                    s, event.data, now, self.rates, self.read_only, ids=self.ids, proposals_again=self.proposals_again
                )
            ),
            self._ending(event.data.action_id, event.data.tenant_id, event.data.task_id, now),
        )

    async def on_tick(self) -> None:
        """Close the tasks whose current step waited past its timeout (called on a timer, by every copy of the service).

        The change is applied under a deterministic event id per step, so two copies that see the
        same overdue step close the task once. No bus redelivers such an id: an outcome a previous
        tick stored but could not publish (the bus stopped first) is published here. Each closing is
        a span of its own, so its outcome starts a trace (no consumed event carries one in). A task whose stored state is
        refused is left to its next event (`repo.get` logs and counts it): the sweep reads only the row, which proves nothing.
        A step waits from this process's start at the earliest: the answers published while no planner ran (or since the
        backup a database was restored from, `restored.py`) are read after it, and a step is not failed before they are.
        """
        await self._publish(await self.repo.unpublished(_TIMEOUT_EVENT))
        now = self.clock()
        shortest = min([self.timeouts.default_s, *self.timeouts.by_tool.values()])
        for tenant_id, task_id in await self.repo.waiting_since_before(now - timedelta(seconds=shortest)):
            state = await self.repo.get(tenant_id, task_id)
            if state is None or state.current is None:
                continue
            with span("planner step timeout", attributes={Attr.SERVICE: "planner", Attr.TASK: task_id, Attr.TENANT: tenant_id}):
                await self._apply(
                    _timeout_event(tenant_id, task_id, state.current.step),
                    tenant_id,
                    task_id,
                    _existing(lambda s: domain.on_tick(s, now, self.rates, self.timeouts, listening_since=self._started)),
                )


def _timeout_event(tenant_id: str, task_id: str, step: int) -> str:
    """The step-timeout sweep's event id of a step: the same in every copy, its own for each tenant's task of one id."""
    return f"{_TIMEOUT_EVENT}{json.dumps([tenant_id, task_id, step])}"


def _refuse_reuse(state: TaskState, task: TaskSubmittedData) -> None:
    """Dead-letter `task` (`Reject`: the bus publishes it on `deadletter` and logs it) when its id is taken by another request."""
    why = domain.reuse_of(state, task)
    if why is not None:
        raise Reject(ReasonCode.TASK_ID_REUSED, why)


def _existing(step: Callable[[TaskState], Transition]) -> Change:
    """A change that applies only to tasks the planner already runs."""
    return lambda state: step(state) if state is not None else None
