"""What exactly is signed: the canonical bytes of tool calls, authorizations and approval decisions.

The policy service signs authorizations and the executor (and a governed function's client) verifies them; the approval service signs
decisions and the policy service verifies them. Both sides call these functions, so they agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from schemas.events import ActionAuthorizedData, ApprovalData, ApprovalVote
from schemas.serialization import canonical_json, digest

__all__ = ["APPROVAL_DOCUMENT_DOMAIN", "action_digest", "approval_document", "approval_message", "authorization_message"]


def _ts(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def action_digest(tenant_id: str, tool: str, args: dict[str, Any]) -> str:
    """SHA-256 of the canonical tool call; an approval or authorization binds to exactly this."""
    return digest({"tenant_id": tenant_id, "tool": tool, "args": args})


def authorization_message(data: ActionAuthorizedData) -> bytes:
    """The bytes the policy service signs for an `action.authorized` (signature field excluded)."""
    auth = data.authorization
    return canonical_json(
        {
            "action_id": data.action_id,
            "task_id": data.task_id,
            "tenant_id": data.tenant_id,
            "tool": data.tool,
            "args": data.args,
            "via": auth.via,
            "policy_version": auth.policy_version,
            "action_digest": auth.action_digest,
            "approval_id": auth.approval_id,
            "issued_at": _ts(auth.issued_at),
            "expires_at": _ts(auth.expires_at),
            "key_id": auth.key_id,
        }
    )


def approval_message(event_type: str, data: ApprovalData) -> bytes:
    """The bytes the approval service signed for a decision (`granted`, `rejected`, `expired`, `resolved`) before release 22.

    The policy service still verifies a decision signed so (a decision in flight across the upgrade, a what-if sandbox's);
    since release 22 the service signs `approval_document`.

    A follow-up's `resolution`, a decision's `review_reason`, a grant's `approver_groups` and a decision's `votes` (each with
    the credential that proved its approver) are signed too; each is left out when empty, so the messages of the other
    decisions are the bytes they always were.
    """
    message: dict[str, Any] = {
        "type": event_type,
        "approval_id": data.approval_id,
        "action_id": data.action_id,
        "task_id": data.task_id,
        "tenant_id": data.tenant_id,
        "tool": data.tool,
        "args": data.args,
        "action_digest": data.action_digest,
        "approver": data.approver,
        "approvers": sorted(data.approvers),
        "edited_args": data.edited_args,
        "decided_at": _ts(data.decided_at),
        "expires_at": _ts(data.expires_at),
        "key_id": data.key_id,
    }
    if data.resolution is not None:
        message["resolution"] = data.resolution
    if data.review_reason is not None:
        message["review_reason"] = data.review_reason
    if data.approver_groups:  # left out when empty, as `resolution`: older messages keep their bytes
        message["approver_groups"] = {a: sorted(g) for a, g in data.approver_groups.items()}
    if data.votes:  # each approver's vote with their comment and reason; left out when empty, as `approver_groups`
        message["votes"] = [_vote(v) for v in data.votes]
    return canonical_json(message)


APPROVAL_DOCUMENT_DOMAIN = b"tidegate-approval-document\n"


def approval_document(event_type: str, data: ApprovalData | Mapping[str, Any]) -> bytes:
    """The bytes the approval service signs for a decision since release 22: its type and its whole `data` as sent, but `signature`.

    `data` is the decision's `data` as the event carries it (JSON, None values left out, as the envelope is sent), or the model
    it is made from. A consumer verifies over the document it received, so a field a newer approval service adds is signed and
    verifies at an older policy service (which ignores it), and a field nobody signed, added on the way, breaks the signature.
    The domain keeps these bytes apart from `approval_message`'s, which older decisions are signed over.
    """
    document = data.model_dump(mode="json", exclude_none=True) if isinstance(data, ApprovalData) else dict(data)
    document.pop("signature", None)
    return APPROVAL_DOCUMENT_DOMAIN + canonical_json({"type": event_type, "data": document})


def _vote(vote: ApprovalVote) -> dict[str, Any]:
    """A vote as signed: its `credential` left out when null, so a vote recorded before it keeps the bytes it was signed with."""
    signed = vote.model_dump(mode="json")
    if signed.get("credential") is None:
        signed.pop("credential", None)
    return signed
