"""How a settled request is shown is what the service signed when it settled it: its decision event, kept, checked when shown.

Who approved or rejected a request, when, with which comment, reason, edited args and votes is in the service's own
`approval.granted` / `approval.rejected` / `approval.expired`, signed with its key and published (the audit log keeps it:
`tidegate audit explain`, `tidegate autonomy report`). The row the API, the page and `tidegate approvals show` read is
written by the service's database login, which could rewrite a settled request's decider, time and words, and tell an
auditor a story the signed events contradict (attacker4 F3). So the service keeps the event as it published it
(`ApprovalRecord.settled_event`), and every time the request is shown the event must verify as the approval service's
(`Authority.check`, as every consumer checks it) for exactly that request, action, tenant and task; the row's copy of
what it settled is then replaced by the event's where they differ, `not_as_signed` says which fields, a WARNING names the
request once and `tidegate_rows_refused_total{service="approval",table="approvals"}` counts each read. A row that keeps
an event that does not verify, or a row set back to pending beside one, is shown flagged and cannot be approved.
A request settled before release 24 kept no event, and is shown flagged, not counted (its history is the audit log's):
one from before release 23 too, since a row the login stripped of both events looks the same.

A follow-up keeps its `approval.resolved` the same way (since release 27): before, the login could set a resolved follow-up
back to `pending`, shown proven, and it was resolved again the other way (a second, opposite signed finding on one call,
attacker7). Its signed resolution now says it is resolved: shown so, flagged, and resolvable neither way. A follow-up
without one is shown as its row says, as before: it expired (which signs nothing) or was resolved before release 27.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from schemas import ApprovalData, ApprovalExpired, ApprovalGranted, ApprovalRejected, ApprovalResolved, decode_document
from servicekit import Authority
from services.approval.domain import ApprovalRecord

__all__ = ["Settled", "as_settled"]

TOPIC = "approvals"
_STATUS: dict[type, str] = {
    ApprovalGranted: "granted",
    ApprovalRejected: "rejected",
    ApprovalExpired: "expired",
    ApprovalResolved: "resolved",
}
_SETTLES: dict[str, tuple[type, ...]] = {  # the events that settle a request of each kind
    "approval": (ApprovalGranted, ApprovalRejected, ApprovalExpired),
    "follow_up": (ApprovalResolved,),
}
Decision = ApprovalGranted | ApprovalRejected | ApprovalExpired | ApprovalResolved
NO_EVENT = (
    "was settled, and keeps no signed decision of the approval service (settled before release 24, or removed): who settled "
    "it and how is not proven here; `tidegate audit explain` tells it from the signed events"
)


@dataclass(frozen=True)
class Settled:
    """What the service signed of a settled request (`fields`, to show instead of the row's), and why the row is not that.

    `counted_as`: the `reason` of `tidegate_rows_refused_total` (None: flagged, not counted: kept no event from before).
    """

    fields: dict[str, Any]
    why: str
    counted_as: str | None = "invalid"


def as_settled(record: ApprovalRecord, authority: Authority | None) -> Settled | None:
    """Why `record` is not shown as the service settled it, and what it signed (None: it is, or it was never settled)."""
    if record.settled_event is None:
        if record.kind == "follow_up":
            return None  # expired (which signs nothing), or resolved before release 27 kept its event: as its row says
        # Settled before release 24, or the login took the event out (and the escalation's with it: nothing tells the two
        # apart, so neither is shown as proven; attacker5): flagged, not counted, pointed to the audit log's signed events.
        return None if record.is_pending else Settled({}, NO_EVENT, None)
    event = _verified(record, authority)
    if isinstance(event, str):
        return Settled({}, f"keeps a decision of the approval service that {event}")
    status, data = _STATUS[type(event)], event.data
    signed = _settled_fields(status, data)
    changed = [name for name, value in signed.items() if _dumped(getattr(record, name)) != _dumped(value)]
    if not changed:
        return None
    return Settled(signed, f"was changed in the database after it was settled ({', '.join(changed)} not as the service signed)")


def _verified(record: ApprovalRecord, authority: Authority | None) -> Decision | str:
    """The kept event when it is the service's signed decision of this request; else why not (said of the event)."""
    text = record.settled_event or ""
    try:
        event, document = decode_document(TOPIC, text)
    except ValueError as exc:  # pydantic's ValidationError, or JSON that is not
        return f"is not an event of {TOPIC} ({type(exc).__name__})"
    if authority is None:
        return "cannot be verified (this service was given no public keys)"
    if (refusal := authority.check(text, event, document, kept=True)) is not None:
        return f"is refused: {refusal.message}"
    if not isinstance(event, Decision) or type(event) not in _SETTLES[record.kind]:
        return f"is a {event.type}, not a decision of a {'follow-up' if record.kind == 'follow_up' else 'request'}"
    d = event.data
    if (d.approval_id, d.action_id, d.tenant_id, d.task_id) != (record.approval_id, record.action_id, record.tenant_id, record.task_id):
        return f"is of another request ({d.approval_id}, action {d.action_id}, tenant {d.tenant_id})"
    return event


def _settled_fields(status: str, data: ApprovalData) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "status": status,
        "decided_by": data.approver,
        "decided_at": data.decided_at,
        "approvers": data.approvers,
        "comment": data.comment,
        "review_reason": data.review_reason,
        "edited_args": data.edited_args,
        "votes": data.votes,
    }
    if status == "granted":  # a grant's alone are signed (the groups the policy counts); a rejection's event names none
        fields["approver_groups"] = data.approver_groups
    if status == "resolved":
        fields["resolution"] = data.resolution
    return fields


def _dumped(value: Any) -> Any:
    """A value as JSON holds it: the row's copy was read back from JSON, the event's decoded from it."""
    if isinstance(value, list):
        return [_dumped(v) for v in value]
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    return value.isoformat() if hasattr(value, "isoformat") else value
