"""A queued webhook message is the approval service's own: signed when it is queued, checked before each attempt.

The Standard Webhooks signature a receiver verifies is made at send time, with the endpoint's secret, over the body as
stored in `approval.webhook_deliveries`. The service's database login can write that table: a body it rewrote (another
amount, a `page_url` to a look-alike site, a request shown as settled) or a message it inserted would reach the
approver's chat signed as the service's. So each message is signed with the service's key when it is queued (its id,
tenant, endpoint, request, type and the SHA-256 of its body), and an attempt sends only a message whose proof holds:
one that does not is failed with why (`NOT_SIGNED`), never sent, logged once and counted in
`tidegate_rows_refused_total{service="approval",table="webhook_deliveries"}` (attacker4).

A message with no proof at all was queued by a release before 24 (or written by the login): it is never sent as stored.
When its request is pending and shown as the policy signed it (the check every showing makes; a follow-up: as the
executor signed it), the service writes the request's message again, as it would now, signed, in its place
(`signed_again_id`: once per endpoint and request, however many unsigned rows name it); else it is failed with why
(`unsigned_refusal`), as any unproven message (upgrade24). A pending request that keeps no signed event yet (opened by
an older release, `tidegate approvals adopt` not run) holds its message (`HELD`), retried as any message, until it is
adopted and so proven (upgrade25).
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

from services.approval._row_proofs import Seals
from services.approval._webhook_values import Delivery

__all__ = [
    "HELD",
    "NOT_SIGNED",
    "SIGNED_AGAIN",
    "UNADOPTED_FIX",
    "message_claims",
    "sealed",
    "signed_again_id",
    "unproven",
    "unsigned_refusal",
    "unsigned_then",
    "unsigned_unsent",
]

NOT_SIGNED = "not sent: the message is not the approval service's signed one"
SIGNED_AGAIN = "not sent: queued unsigned by a release before 24; its request's message was queued again, signed, as"
HELD = "not sent yet: queued unsigned by a release before 24; held until its request is proven, then queued again, signed"
UNADOPTED_FIX = "the operator runs `tidegate approvals adopt` (docs/approval.md)"
_FIX = "the approval service's database login may have been used to write it: rotate that login's password (docs/security/database.md)"


def unsigned_then(d: Delivery) -> bool:
    """Whether `d` carries no proof at all: as a release before 24 queued every message (migration 018 came with 24)."""
    return d.key_id is None and d.signature is None


def signed_again_id(tenant_id: str, endpoint_id: str, approval_id: str) -> str:
    """The `webhook-id` of the signed message written in place of unsigned ones: one per endpoint and request, ever."""
    digest = hashlib.sha256("\0".join(("signed again", tenant_id, endpoint_id, approval_id)).encode()).hexdigest()
    return f"msg_{digest[:32]}"


def message_claims(d: Delivery) -> dict[str, Any]:
    """What a message's proof covers: which message it is, for whom, and its body (by SHA-256)."""
    return {
        "delivery_id": d.delivery_id,
        "tenant_id": d.tenant_id,
        "endpoint_id": d.endpoint_id,
        "approval_id": d.approval_id,
        "event_type": d.event_type,
        "body_sha256": hashlib.sha256(d.body.encode("utf-8", "surrogatepass")).hexdigest(),
    }


def sealed(seals: Seals | None, d: Delivery) -> Delivery:
    """`d` with the service's proof (None `seals`: a store of a test's own, which signs none and trusts its memory)."""
    if seals is None:
        return d
    proof = seals.messages.sign(message_claims(d))
    return replace(d, key_id=proof.key_id, signature=proof.signature)


def unproven(seals: Seals | None, d: Delivery) -> str | None:
    """Why `d` may not be sent (told to the operator once per message and counted), or None: it is the service's own."""
    if seals is None:
        return None
    why = seals.messages.why_not(message_claims(d), d.key_id, d.signature)
    if why is not None:
        seals.messages.refused(
            f"webhook message {d.delivery_id} (request {d.approval_id}, tenant {d.tenant_id})", why, _FIX, row=d.delivery_id
        )
    return None if why is None else f"{NOT_SIGNED} ({why})"


def unsigned_refusal(seals: Seals, d: Delivery, why_request: str) -> str:
    """Why the unsigned `d` is failed, not queued again: `why_request`, why its request is not one to ask about (told, counted)."""
    why = f"unsigned, and not queued again signed: {why_request}"
    seals.messages.refused(
        f"webhook message {d.delivery_id} (request {d.approval_id}, tenant {d.tenant_id})",
        why,
        "a message queued by a release before 24 is sent again only for a pending request shown as the policy signed it; "
        "its approvers find the request on the page or with `tidegate approvals list`; if no release before 24 ran here, " + _FIX,
        counted_as="unsigned",
        row=d.delivery_id,
    )
    return unsigned_unsent(why_request)


def unsigned_unsent(why_request: str) -> str:
    """The error of an unsigned message failed, not queued again: `why_request`, why its request is not one to ask about."""
    return f"{NOT_SIGNED} (unsigned, and not queued again signed: {why_request})"
