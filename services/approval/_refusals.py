"""Why a vote is not accepted (`Refusal`, with the HTTP status an API answers with), and the refusals several checks share."""

from __future__ import annotations

from collections.abc import Callable

from services.approval._approval_record import UNREADABLE_FIX, ApprovalRecord, Frozen, UnreadableRequest

__all__ = ["Refusal", "already_settled", "digest_changed", "expired_undecided", "not_found", "not_read", "refuse"]


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


def not_read(found: UnreadableRequest | None, approval_id: str, may_see: Callable[[str], bool]) -> Refusal:
    """The answer for a request not read: `409 request_unreadable` for a refused row of a tenant the caller may see.

    Else `not_found`, as for a missing one: another tenant's caller learns nothing (`read_record` refuses the row).
    """
    if found is None or found.tenant_id is None or not may_see(found.tenant_id):
        return not_found(approval_id)
    return refuse("request_unreadable", 409, f"{found}: {UNREADABLE_FIX}")


def already_settled(record: ApprovalRecord) -> str:
    """Why a request that is no longer pending cannot be decided: its status, who settled it and when."""
    message = f"approval {record.approval_id} is already {record.status}"
    if record.decided_by:
        message += f" by {record.decided_by}"
    if record.decided_at is not None:
        message += f" at {record.decided_at.isoformat(timespec='seconds')}"
    return message


def _head(digest: str) -> str:
    return digest if len(digest) <= 12 else digest[:12] + "…"


def _length(seen: str, digest: str) -> str:
    return "" if len(seen) == len(digest) else f", {len(seen)} characters where a digest has {len(digest)}"


def digest_changed(record: ApprovalRecord, seen: str) -> Refusal:
    """A vote for another call than the request's now: it changed since it was read, or the digest sent is not whole.

    Both are said, with the two digests' heads: the message said only "the call changed", and a digest cut where a narrow
    terminal wrapped the ready-to-paste line read as an agent that had changed the call.
    """
    return refuse(
        "digest_mismatch",
        409,
        f"the digest you sent ({_head(seen)}{_length(seen, record.action_digest)}) is not the call's ({_head(record.action_digest)}): "
        "the call changed since you read it, "
        f"or the digest was cut or mistyped; read the call again (reload the page, or `tidegate approvals show {record.approval_id}`) "
        "and decide on the call it shows",
    )


def expired_undecided(record: ApprovalRecord) -> Refusal:
    """A vote after the request's expiry: nothing ran, and nothing can be decided; the agent asks again if it still wants it."""
    return refuse(
        "expired",
        409,
        f"approval {record.approval_id} expired at {record.expires_at.isoformat(timespec='seconds')} before anyone decided it: "
        "nothing ran, and it can no longer be decided (if the call is still wanted, the agent asks again, as a new request)",
    )
