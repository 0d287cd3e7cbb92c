"""Handlers of the approval service: thin, typed by their topic's union (decoded and verified by the bus), they call the service.

Each topic has two: one event at a time, and a polled batch at a time (`servicekit.consume.Route`);
a batch that raises is handled again one event at a time, so only its bad event is dead-lettered.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from schemas import ActionDecided, ActionResult
from servicekit import Handler, Reject
from servicekit.received import received
from servicekit.unreadable import has_non_finite
from services.approval.service import ApprovalService

__all__ = ["on_decided", "on_decided_batch", "on_result", "on_result_batch"]


def on_decided(service: ApprovalService) -> Handler:
    """`actions.decided`: keep the decision for context; an escalation by policy opens a request, its signed event kept in it."""

    async def handle(event: ActionDecided) -> None:
        if has_non_finite(event.data.args):  # JSON has no NaN; the page would show null and a person approve it
            raise Reject("invalid_event", f"args of {event.data.action_id} hold NaN or Infinity: no one can be asked to approve them")
        await service.on_decided(event.data, event_id=event.id, at=event.time, signed=received(event))

    return handle


def on_decided_batch(service: ApprovalService) -> Callable[[list[ActionDecided]], Awaitable[None]]:
    """`actions.decided`, a polled batch at a time: the decisions in one write, then the requests of the escalations."""

    async def handle(events: list[ActionDecided]) -> None:
        if any(has_non_finite(e.data.args) for e in events):
            raise ValueError("a decision's args hold NaN or Infinity: handle the batch one event at a time")
        await service.on_decided_batch(events, [received(e) for e in events])

    return handle


def on_result(service: ApprovalService) -> Handler:
    """`actions.results`: keep the result for cost; an unknown outcome opens a follow-up for a human.

    A result with an undo plan is kept with its signed event as received (`servicekit.received`): an undo's plan comes from it.
    """

    async def handle(event: ActionResult) -> None:
        await service.on_result(event.data, event_type=event.type, event_id=event.id, at=event.time, signed=received(event))

    return handle


def on_result_batch(service: ApprovalService) -> Callable[[list[ActionResult]], Awaitable[None]]:
    """`actions.results`, a polled batch at a time: the results in one write, then the follow-ups of unknown outcomes."""

    async def handle(events: list[ActionResult]) -> None:
        await service.on_result_batch(events, [received(e) for e in events])

    return handle
