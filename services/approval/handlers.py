"""Handlers of the approval service: thin, typed by their topic's union (decoded and verified by the bus), they call the service."""

from __future__ import annotations

from schemas import ActionDecided, ActionResult
from servicekit import Handler, Reject
from servicekit.unreadable import has_non_finite
from services.approval.service import ApprovalService

__all__ = ["on_decided", "on_result"]


def on_decided(service: ApprovalService) -> Handler:
    """`actions.decided`: keep the decision for context; an escalation by policy opens a request."""

    async def handle(event: ActionDecided) -> None:
        if has_non_finite(event.data.args):  # JSON has no NaN; the page would show null and a person approve it
            raise Reject("invalid_event", f"args of {event.data.action_id} hold NaN or Infinity: no one can be asked to approve them")
        await service.on_decided(event.data, event_id=event.id, at=event.time)

    return handle


def on_result(service: ApprovalService) -> Handler:
    """`actions.results`: keep the result for cost; an unknown outcome opens a follow-up for a human."""

    async def handle(event: ActionResult) -> None:
        await service.on_result(event.data, event_type=event.type, event_id=event.id, at=event.time)

    return handle
