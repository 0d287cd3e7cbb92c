"""What the approval service reads off the bus: decisions and results kept as a task's events, requests and follow-ups opened.

Part of `ApprovalService` (`services.approval.service` composes it); the handlers (`handlers.py`) call it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import Any

from schemas import ActionDecided, ActionDecidedData, ActionResult, ActionResultData, ReasonCode, ToolSpec
from servicekit import Attr, Reject, current_traceparent, span
from services.approval import domain
from services.approval._announcing import Announcing
from services.approval._approval_record import UNREADABLE_FIX
from services.approval._people import People
from services.approval._record_reads import kept_result
from services.approval._service_base import log
from services.approval._undo_store import KeptResult
from services.approval.domain import ApprovalRecord
from services.approval.repository import TaskEvent

__all__ = ["BusIntake"]


def _decided_task_event(decided: ActionDecidedData, event_id: str, at: datetime) -> TaskEvent:
    return TaskEvent(
        event_id=event_id,
        tenant_id=decided.tenant_id,
        task_id=decided.task_id,
        action_id=decided.action_id,
        type="tidegate.action.decided",
        tool=decided.tool,
        at=at,
        outcome=decided.outcome,
        cost_usd=decided.estimated_cost_usd,
        requested_by=decided.requested_by,
        risk=str(decided.risk) if decided.risk else None,
        args=decided.args,
        summary=f"{decided.outcome} via {decided.via}: " + ", ".join(r.code for r in decided.reasons),
    )


def _result_task_event(result: ActionResultData, event_type: str, event_id: str, at: datetime, spec: ToolSpec | None) -> TaskEvent:
    error = f": {result.error.type}: {result.error.message}" if result.error else ""  # as the audit writes it (`_undo_states` reads it)
    return TaskEvent(
        event_id=event_id,
        tenant_id=result.tenant_id,
        task_id=result.task_id,
        action_id=result.action_id,
        type=event_type,
        tool=result.tool,
        at=at,
        outcome=result.status,
        cost_usd=result.cost.usd,
        summary=f"{result.status} after {result.attempts} attempt(s){error}",
        # what the call returned is the executor's to keep, but a trusted read's, small: the approver of a later call on that
        # entry reads it there (the order's payee and amount beside a refund: `_record_reads`)
        result=kept_result(result, spec),
    )


def _undoable(result: ActionResultData) -> bool:
    """A succeeded call with the executor's undo plan: an approver may propose its undo."""
    return result.status == "succeeded" and result.undo is not None


def _handling(event: ActionDecided | ActionResult) -> AbstractContextManager[Any]:
    """The span the bus opens around a handler (`Bus.handle_event`), for an event of a batch that needs more than its row."""
    attributes = {
        Attr.SERVICE: "approval",
        Attr.EVENT_ID: event.id,
        Attr.EVENT_TYPE: event.type,
        Attr.TENANT: event.tenantid,
        Attr.TASK: event.subject,
    }
    return span(f"approval handle {event.type.removeprefix('tidegate.')}", parent=event.traceparent, attributes=attributes)


class BusIntake(People, Announcing):
    """Decisions and results, one at a time or a polled batch: kept, then a request or a follow-up opened where a human is needed."""

    async def on_decided(
        self, decided: ActionDecidedData, *, event_id: str, at: datetime, signed: bytes | None = None
    ) -> ApprovalRecord | None:
        """Remember a decision for context; open (or refresh) a request for an escalation by policy.

        `signed`: the policy's event as received (`servicekit.received`), kept in the request: what an approver is shown of it
        is checked against it (`_decision_proofs`; None: the request's approval is refused as unproven).
        """
        await self.repo.record_task_events([_decided_task_event(decided, event_id, at)])
        return await self._request_for(decided, signed)

    async def on_decided_batch(self, events: Sequence[ActionDecided], signed: Sequence[bytes | None] | None = None) -> None:
        """A polled batch of decisions: kept in one write, then a request for each escalation by policy, under its own span.

        Most decisions need no human: for them this is the whole work (the approver page's context
        and a follow-up's requester read them). A `Reject` of one request raises out of the batch,
        which the bus then handles one event at a time (`on_decided`): the writes are idempotent.
        `signed`: each event as received, as in `on_decided` (None: none).
        """
        await self.repo.record_task_events([_decided_task_event(e.data, e.id, e.time) for e in events])
        for event, text in zip(events, signed or [None] * len(events), strict=True):
            if domain.opens_request(event.data):
                with _handling(event):
                    await self._request_for(event.data, text)

    async def _request_for(self, decided: ActionDecidedData, signed: bytes | None = None) -> ApprovalRecord | None:
        now = self.issued_now()  # its deadline from the broker's time: a host ahead does not lengthen it
        fresh = domain.request_from_decision(
            decided,
            approval_id=f"ap-{uuid.uuid4().hex[:16]}",
            now=now,
            ttl=timedelta(seconds=self.settings.expiry_s),
            groups=self.groups,
            risk=self.risk_of(decided.tool),
            decision=None if signed is None else signed.decode("utf-8", "replace"),
        )
        if fresh is None:
            return None
        self.counted(fresh)  # tells a disagreement of the groups file with the tenant's settings as the request opens
        fresh = fresh.model_copy(update={"traceparent": current_traceparent()})
        existing = await self.repo.get_by_action(decided.action_id, tenant_id=decided.tenant_id)
        if existing is not None:
            refreshed = domain.refresh_request(existing, fresh)
            if refreshed is None:
                return existing  # a redelivery: the request exists and its event is in the outbox
            outbox, deliveries = await self._announce(refreshed, domain.REQUESTED)
            if await self.repo.save(existing.version, refreshed, outbox, deliveries):
                await self._publish(outbox)
            return refreshed
        outbox, deliveries = await self._announce(fresh, domain.REQUESTED)
        if await self.repo.insert_request(fresh, outbox, deliveries) is None:
            if (ours := await self.repo.get_by_action(decided.action_id, tenant_id=decided.tenant_id)) is None:
                raise Reject(ReasonCode.ACTION_ID_REUSED, await self._held_by(decided))
            return ours
        await self._publish(outbox)
        log.info("approval %s requested for %s/%s (%s)", fresh.approval_id, fresh.tenant_id, fresh.action_id, fresh.tool)
        return fresh

    async def _held_by(self, decided: ActionDecidedData) -> str:
        """Why an escalation opens no request although none of its tenant is read: whose request holds its action id, and why.

        Action ids are global: a request of another tenant holds it, and is never theirs. Or the tenant's own request holds it,
        and its row is refused (`read_record`): it is neither opened again nor refreshed (this was said to be another tenant's).
        """
        held = await self.repo.holder(decided.action_id)
        if held is None or held[1] != decided.tenant_id:
            return f"action id {decided.action_id} already has a request of another tenant"
        return (
            f"action id {decided.action_id} already has a request of tenant {decided.tenant_id}, {held[0]}, whose row is refused (not a "
            f"request this release reads; a WARNING named it): it is neither opened again nor refreshed; {UNREADABLE_FIX}"
        )

    async def on_result(
        self, result: ActionResultData, *, event_type: str, event_id: str, at: datetime, signed: bytes | None = None
    ) -> ApprovalRecord | None:
        """Remember a result for cost; an unknown outcome opens a follow-up for a human (never a retry).

        `signed`: the executor's event as received (`servicekit.received`), kept for an undo's plan (None: its undo is refused).
        """
        await self._keep_undoable([(result, signed)])  # first: whoever sees the result among the task events finds it kept (_undo_states)
        await self.repo.record_task_events([_result_task_event(result, event_type, event_id, at, self._spec(result.tool))])
        return await self._follow_up(result, signed) if result.status == "unknown" else None

    async def on_result_batch(self, events: Sequence[ActionResult], signed: Sequence[bytes | None] | None = None) -> None:
        """A polled batch of results: kept in one write (and the undoable ones in one more), then a follow-up for each unknown outcome.

        `signed`: each event as received, as in `on_result` (None: none). As `on_decided_batch`: what raises sends the
        batch back to the bus, to be handled one event at a time.
        """
        received = signed or [None] * len(events)
        await self._keep_undoable(list(zip([e.data for e in events], received, strict=True)))  # first, as in `on_result`
        await self.repo.record_task_events([_result_task_event(e.data, e.type, e.id, e.time, self._spec(e.data.tool)) for e in events])
        for event, text in zip(events, received, strict=True):
            if event.data.status == "unknown":
                with _handling(event):
                    await self._follow_up(event.data, text)

    async def _keep_undoable(self, results: Sequence[tuple[ActionResultData, bytes | None]]) -> None:
        """Keep the results an approver may undo, each with its signed event as received.

        One whose undo id another kept action holds is kept without it, and said.
        """
        undoable = [KeptResult(r, None if e is None else e.decode("utf-8", "replace")) for r, e in results if _undoable(r)]
        for action_id in await self.undo_results.keep(undoable):
            log.warning("approval: the undo id of %s is held by another kept action: kept without it (not known by its undo id)", action_id)

    async def _follow_up(self, result: ActionResultData, signed: bytes | None) -> ApprovalRecord | None:
        """A follow-up of `result`, keeping the executor's event as received (`signed`; None: shown flagged, never resolved)."""
        decided = await self.repo.action_event(result.action_id, "tidegate.action.decided")
        request = await self.repo.get_by_action(result.action_id, tenant_id=result.tenant_id)
        args = (request.edited_args or request.args) if request else (decided.args if decided and decided.args is not None else {})
        record = domain.follow_up_from_result(
            result,
            approval_id=f"fu-{uuid.uuid4().hex[:16]}",
            now=self.issued_now(),
            ttl=timedelta(seconds=self.settings.follow_up_expiry_s),
            risk=self.risk_of(result.tool),
            requested_by=(decided.requested_by if decided else None) or (request.requested_by if request else None),
            args=args,
            requested_call=request,
            result_event=None if signed is None else signed.decode("utf-8", "replace"),
        ).model_copy(update={"traceparent": current_traceparent()})
        _, deliveries = await self._announce(record, "tidegate.approval.follow_up")
        created = await self.repo.insert_request(record, [], deliveries)
        return created or await self.repo.get_by_action(result.action_id, "follow_up", tenant_id=result.tenant_id)

    def _spec(self, tool: str) -> ToolSpec | None:
        """The tool's entry in this service's own catalog (None: not there, or no catalog)."""
        return self.catalog.get(tool) if self.catalog is not None else None

    def risk_of(self, tool: str) -> str:
        """The tool's risk class in this service's own catalog (`unknown` when it is not there): never an event's claim."""
        if self.catalog is not None and tool in self.catalog:
            return str(self.catalog[tool].risk)
        return domain.UNKNOWN_RISK
