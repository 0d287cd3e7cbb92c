"""Why a vote is not accepted (`Refusal`, with the HTTP status an API answers with), and the refusals several checks share."""

from __future__ import annotations

from services.approval._approval_record import ApprovalRecord, Frozen

__all__ = ["Refusal", "already_settled", "not_found", "refuse"]


class Refusal(Frozen):
    """Why a vote is not accepted, with the HTTP status to answer."""

    code: str
    status: int
    message: str


def refuse(code: str, status: int, message: str) -> Refusal:
    """A refusal with its code, HTTP status and message."""
    return Refusal(code=code, status=status, message=message)


def not_found(approval_id: str) -> Refusal:
    """The answer for an id that does not exist and for one of another tenant alike, so a stranger learns nothing."""
    return refuse("not_found", 404, f"no approval {approval_id}")


def already_settled(record: ApprovalRecord) -> str:
    """Why a request that is no longer pending cannot be decided: its status, who settled it and when."""
    message = f"approval {record.approval_id} is already {record.status}"
    if record.decided_by:
        message += f" by {record.decided_by}"
    if record.decided_at is not None:
        message += f" at {record.decided_at.isoformat(timespec='seconds')}"
    return message
