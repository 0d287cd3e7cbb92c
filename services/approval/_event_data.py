"""A request as the approval events carry it: `approval.requested` unsigned, a decision signed by the service."""

from __future__ import annotations

from schemas import ApprovalData
from servicekit import SigningKey, approval_document
from services.approval._approval_record import ApprovalRecord

__all__ = ["signed_decision", "unsigned_request"]


def _approval_data(record: ApprovalRecord) -> ApprovalData:
    return ApprovalData(
        approval_id=record.approval_id,
        action_id=record.action_id,
        task_id=record.task_id,
        tenant_id=record.tenant_id,
        tool=record.tool,
        args=record.args,
        action_digest=record.action_digest,
        reasons=record.reasons,
        policy_version=record.policy_version,
        approver=record.decided_by,
        approvers=record.approvers,
        approver_groups=record.approver_groups if record.status == "granted" else {},
        comment=record.comment,
        review_reason=record.review_reason,
        edited_args=record.edited_args,
        expires_at=record.expires_at,
        decided_at=record.decided_at,
        requested_by=record.requested_by,
        task_requested_by=record.task_requested_by,
        resolution=record.resolution,
        votes=record.votes,
    )


def unsigned_request(record: ApprovalRecord) -> ApprovalData:
    """The data of `approval.requested` (not signed: it asks, it does not permit anything)."""
    return _approval_data(record).model_copy(
        update={"approver": None, "approvers": [], "comment": None, "review_reason": None, "decided_at": None, "votes": []}
    )


def signed_decision(record: ApprovalRecord, event_type: str, key: SigningKey) -> ApprovalData:
    """The data of a decision event, signed by the approval service over `approval_document`: the whole data as it is sent.

    `args` and `action_digest` are those of the original call the humans saw; `edited_args`, if any,
    are what the policy service re-evaluates.
    """
    data = _approval_data(record).model_copy(update={"key_id": key.key_id, "signature": None})
    return data.model_copy(update={"signature": key.sign(approval_document(event_type, data))})
