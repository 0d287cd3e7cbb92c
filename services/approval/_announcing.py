"""How the approval service tells what happened: the bus event and the webhook messages of a change, then the outbox published.

Part of `ApprovalService` (`services.approval.service` composes it): a change is saved with its outbox entries and
deliveries in one write; what was saved is then published byte for byte and marked published.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence

from schemas import ApprovalExpired, ApprovalGranted, ApprovalRejected, ApprovalRequested, ApprovalResolved, Envelope
from servicekit import Recorded, encode_signed, once_delivered
from servicekit.outlet import record_event
from services.approval import domain
from services.approval._message_proofs import sealed
from services.approval._service_base import ServiceBase
from services.approval._webhook_side import WebhookSide
from services.approval.domain import ApprovalRecord
from services.approval.repository import Delivery, OutboxItem

__all__ = ["SOURCE", "Announcing", "kept_settled"]

SOURCE = "tidegate/approval"
_ENVELOPES: dict[str, type[Envelope]] = {
    domain.REQUESTED: ApprovalRequested,
    domain.GRANTED: ApprovalGranted,
    domain.REJECTED: ApprovalRejected,
    domain.EXPIRED: ApprovalExpired,
    domain.RESOLVED: ApprovalResolved,
}


def kept_settled(record: ApprovalRecord, outbox: Sequence[OutboxItem]) -> ApprovalRecord:
    """`record` settled, with its decision event as it is published (signed): how it is shown is checked against it (`_outcome_proofs`).

    A follow-up's resolution too (`approval.resolved`); its expiry publishes nothing, and keeps nothing.
    """
    if record.is_pending:
        return record
    published = [item.payload for item in outbox if item.topic == "approvals"]
    return record.model_copy(update={"settled_event": published[-1]}) if published else record


class Announcing(ServiceBase, WebhookSide):
    """A change's bus event and webhook messages (`_announce`, a message's body from the webhook side), and the outbox published."""

    async def _announce(self, record: ApprovalRecord, event_type: str) -> tuple[list[OutboxItem], list[Delivery]]:
        """The bus event (requests and decisions of approvals; resolutions of follow-ups) and one webhook message per endpoint.

        A follow-up announces only its resolution on the bus: its opening is not an approval request
        (nothing waits on it to run), so it goes to the webhooks alone; so do an escalation and an edit
        (`approval.edited`: a partial vote changed the call the request awaits approval of).
        """
        outbox: list[OutboxItem] = []
        envelope_type = _ENVELOPES.get(event_type)
        data = None
        if envelope_type is not None and (record.kind == "approval" or event_type == domain.RESOLVED):
            data = (
                domain.unsigned_request(record) if event_type == domain.REQUESTED else domain.signed_decision(record, event_type, self.key)
            )
            event = envelope_type.build(data, source=SOURCE)
            made = record_event("approvals", event, self._signed)  # with the current trace context, signed, before it is stored
            outbox.append(OutboxItem(event.id, record.approval_id, "approvals", made.value.decode(), made))
        told = kept_settled(record, outbox)  # a decision's message shows it as signed: with the event it carries on the bus
        deliveries = [
            sealed(
                self.seals,
                Delivery(
                    delivery_id=f"msg_{uuid.uuid4().hex}",
                    endpoint_id=endpoint.endpoint_id,
                    tenant_id=endpoint.tenant_id,
                    approval_id=record.approval_id,
                    event_type=event_type.removeprefix("tidegate."),
                    body=self._webhook_body(told, event_type, endpoint),
                ),
            )
            for endpoint in await self.repo.endpoints(record.tenant_id)
        ]
        return outbox, deliveries

    def _signed(self, event: Envelope) -> bytes:
        return encode_signed(event, self.key)

    async def _publish(self, outbox: Sequence[OutboxItem]) -> None:
        """Publish outbox entries as they were stored (byte for byte, on every attempt), then mark them published."""
        if not outbox:
            return
        await self.publisher.publish_many([item.made or Recorded.stored(item.topic, item.payload) for item in outbox])
        for item in outbox:  # marked once the broker has it: in a polled batch the publish returned when queued (`once_delivered`)
            await once_delivered(functools.partial(self.repo.mark_published, item.event_id))
            self.published += 1
