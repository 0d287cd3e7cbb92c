"""Handlers of the policy service: thin, they hand each parsed event to the service's use case."""

from __future__ import annotations

from dataclasses import dataclass

from schemas import ActionProposed, ActionResult, Approval, ControlEvent, ReasonCode, TaskSubmitted
from servicekit import Reject
from servicekit.unreadable import has_non_finite
from services.policy.service import PolicyService

__all__ = ["PolicyHandlers"]


@dataclass(frozen=True)
class PolicyHandlers:
    """One handler per subscription, typed by its topic's union: the bus has decoded and verified the event against that topic."""

    service: PolicyService

    async def proposed(self, event: ActionProposed) -> None:
        """`actions.proposed`: decide, record, publish; a call whose args hold NaN or Infinity is dead-lettered."""
        if has_non_finite(event.data.args):  # JSON has no NaN: no digest can be signed, no amount compared
            raise Reject(ReasonCode.INVALID_ARGS, f"args of {event.data.action_id} hold NaN or Infinity")
        await self.service.on_proposed(event)

    async def proposed_batch(self, events: list[ActionProposed]) -> None:
        """`actions.proposed`, a polled batch at a time: decide all in one unit of work, publish.

        A batch holding a call with NaN or Infinity in its args fails as a whole; the bus then handles
        its events one at a time, and `proposed` dead-letters that one.
        """
        if any(has_non_finite(e.data.args) for e in events):
            raise ValueError("a proposal's args hold NaN or Infinity: handle the batch one event at a time")
        await self.service.on_proposed_batch(events)

    async def approval(self, event: Approval) -> None:
        """`approvals`: re-decide after a verified grant; dead-letter what does not verify."""
        await self.service.on_approval(event)

    async def result(self, event: ActionResult) -> None:
        """`actions.results`: release or settle budget reservations, learn payees."""
        await self.service.on_result(event)

    async def result_batch(self, events: list[ActionResult]) -> None:
        """`actions.results`, a polled batch at a time: stored in one unit of work."""
        await self.service.on_results(events)

    async def task(self, event: TaskSubmitted) -> None:
        """`tasks`: learn what the request vouches for and what its untrusted fields carry (provenance)."""
        await self.service.on_task(event)

    async def task_batch(self, events: list[TaskSubmitted]) -> None:
        """`tasks`, a polled batch at a time: what each request taught, stored at once."""
        await self.service.on_tasks(events)

    async def control(self, event: ControlEvent) -> None:
        """`control`: kill switches, budgets, policy versions (hot reload)."""
        await self.service.on_control(event)
