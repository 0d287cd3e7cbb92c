"""An approval request as the service keeps it, and its states: pending until decided, expired or escalated.

The literals and event types a decision speaks in live here, with `Frozen`, the base every value of the domain shares.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schemas import ApprovalVote, Reason
from servicekit.metrics import observe_row_refused

__all__ = [
    "EDITED",
    "EXPIRED",
    "GRANTED",
    "REJECTED",
    "REQUESTED",
    "RESOLVED",
    "UNKNOWN_RISK",
    "UNREADABLE_FIX",
    "ApprovalRecord",
    "Ballot",
    "Frozen",
    "Kind",
    "Resolution",
    "Status",
    "Transition",
    "UnreadableRequest",
    "Via",
    "escalate",
    "expire",
    "read_record",
]

log = logging.getLogger(__name__)

Status = Literal["pending", "granted", "rejected", "expired", "resolved"]
Kind = Literal["approval", "follow_up"]
Via = Literal["token", "link", "callback"]
Resolution = Literal["confirmed_done", "confirmed_not_done"]
GRANTED, REJECTED, EXPIRED, REQUESTED, RESOLVED = (
    "tidegate.approval.granted",
    "tidegate.approval.rejected",
    "tidegate.approval.expired",
    "tidegate.approval.requested",
    "tidegate.approval.resolved",
)
EDITED = "tidegate.approval.edited"  # a webhook message only (no bus event): the call a pending request awaits approval of changed
UNKNOWN_RISK = "unknown"


class Frozen(BaseModel):
    """A value of the approval domain: immutable, and no field it does not declare."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Ballot(Frozen):
    """The approval service's proof of one counted approval of a request: the key that signed it and the signature."""

    key_id: str
    signature: str


class ApprovalRecord(Frozen):
    """One request for a human: an escalated call awaiting approval, or an unknown outcome to follow up."""

    approval_id: str
    kind: Kind = "approval"
    action_id: str
    task_id: str
    tenant_id: str
    step: int = 0
    tool: str
    args: dict[str, Any]
    action_digest: str
    reasons: list[Reason] = Field(default_factory=list)
    facts: dict[str, Any] = Field(default_factory=dict)
    risk: str = UNKNOWN_RISK
    policy_version: str = ""
    requested_by: str | None = None  # the task's requester as the proposal names it (an outside agent's: the agent)
    task_requested_by: str | None = None  # as its signed request names it, when the policy learned the task (four eyes: both)
    proposer: str | None = None
    rationale: str = ""  # why the agent proposed it, as it wrote it (untrusted: shown as text)
    estimated_cost_usd: float = 0.0
    status: Status = "pending"
    required_approvals: int = 1
    approvers: list[str] = Field(default_factory=list)
    approver_groups: dict[str, list[str]] = Field(default_factory=dict)  # approver → groups held when they voted
    approved_via: dict[str, Via] = Field(default_factory=dict)  # approver → how their counted approval came (absent: a token)
    # approver → the service's signature of their counted approval (`_ballots`): the database cannot add one of its own
    ballots: dict[str, Ballot] = Field(default_factory=dict)
    edited_args: dict[str, Any] | None = None
    comment: str | None = None
    review_reason: str | None = None  # why a human rejected or edited (the tenant's taxonomy)
    votes: list[ApprovalVote] = Field(default_factory=list)  # every vote in order, each with its comment and reason (none before)
    decided_by: str | None = None
    decided_at: datetime | None = None
    resolution: Resolution | None = None
    result_error: dict[str, Any] | None = None
    created_at: datetime
    expires_at: datetime
    escalated_at: datetime | None = None
    version: int = 0
    traceparent: str | None = None  # trace of the escalation, so a human's decision continues the task's trace
    # the policy's `action.decided` this request was opened from, as received (signed), or a follow-up's: the executor's
    # `action.unknown`: what the approver is shown is checked against it (`_decision_proofs`); None: opened before
    # release 23 kept it (a follow-up: before release 25), or taken out
    decision: str | None = None
    # this service's own decision event (`approval.granted`, `rejected`, `expired`) as it published it (signed): who settled
    # the request, when and with what words are shown as it signed them (`_outcome_proofs`); None: pending, or settled
    # before release 24 kept it
    settled_event: str | None = None

    @property
    def is_pending(self) -> bool:
        """Whether a human can still act on it."""
        return self.status == "pending"


_told_unknown: set[frozenset[str]] = set()
_told_unreadable: set[tuple[str | None, str]] = set()
_TOLD_KEPT = 1024  # unreadable rows remembered as logged (past it, logged again: a sweep reads one every round)
UNREADABLE_FIX = (
    "it is not shown, counted in a queue, escalated, expired or decided; the approval service's database login may have been "
    "used to write it (docs/security/database.md): restore the row from a backup, or delete it as the operator, and the agent "
    "may propose the call again"
)


class UnreadableRequest(ValueError):
    """A request row this release cannot read as a request (a field of the wrong type, not an object): refused, never acted on.

    `approval_id`, `tenant_id`: the row's columns when its reader had them, else what its record says (None: nothing).
    """

    def __init__(self, approval_id: str | None, tenant_id: str | None, why: str) -> None:
        self.approval_id, self.tenant_id, self.why = approval_id, tenant_id, why
        super().__init__(f"request {approval_id}'s row is not a request this release reads ({why})")


def _why(exc: ValidationError, most: int = 5) -> str:
    """What is wrong, in one line: each field and pydantic's words, up to `most` (never a value: the login may have written it)."""
    said = [f"{'.'.join(str(p) for p in e['loc']) or 'the record'}: {e['msg']} [{e['type']}]" for e in exc.errors()[:most]]
    return "; ".join(said) + (f"; {exc.error_count() - most} more" if exc.error_count() > most else "")


def _refused(approval_id: str | None, tenant_id: str | None, why: str) -> UnreadableRequest:
    """Refuse an unreadable row: counted at every read, one WARNING per row and problem (`servicekit.row_proofs.row_refused`'s form)."""
    observe_row_refused("approval", "approvals", "invalid")
    told = (approval_id, why)
    if told not in _told_unreadable:
        if len(_told_unreadable) >= _TOLD_KEPT:
            _told_unreadable.clear()
        _told_unreadable.add(told)
        log.warning("approval: request %s (tenant %s) refused: its row is not a request this release reads (%s); %s",
                    approval_id, tenant_id, why, UNREADABLE_FIX)  # fmt: skip
    return UnreadableRequest(approval_id, tenant_id, why)


def read_record(text: str | bytes, approval_id: str | None = None, tenant_id: str | None = None) -> ApprovalRecord:
    """A request as its row keeps it, the keys this release does not know left out (told once per set of such keys).

    A newer release adds keys to the row (23 `decision`, 24 `settled_event`): read strictly, one such row stopped an older
    release's service at start (`extra_forbidden`, restarted for ever) until the rollback's SQL took the key out of every
    row. A key this release does not know grants nothing here: no check of this release reads it, so a request is shown,
    counted and decided as if it were absent, which is what that SQL made of it; a key the database login added likewise.
    Written back (a vote, an expiry), the row keeps only what this release knows, as after that SQL.

    A row that is no request at all (a field of the wrong type, `"required_approvals": "many"`; not an object) raises
    `UnreadableRequest`, logged and counted (`tidegate_rows_refused_total{table="approvals",reason="invalid"}`): every
    reader goes through here, and each refuses that row alone (a listing or a sweep skips it; one request asked for is
    answered `409 request_unreadable`), where one such row made every listing 500 and stopped the sweep. `approval_id`,
    `tenant_id`: the row's columns, which name it in the log (default: what its record says).
    """
    try:
        data = json.loads(text)
    except ValueError as exc:  # jsonb is always JSON; a text a caller passes may not be
        raise _refused(approval_id, tenant_id, f"not JSON: {type(exc).__name__}") from exc
    if not isinstance(data, dict):
        raise _refused(approval_id, tenant_id, f"the record is a JSON {type(data).__name__}, not an object")
    approval_id = approval_id or (data.get("approval_id") if isinstance(data.get("approval_id"), str) else None)
    tenant_id = tenant_id or (data.get("tenant_id") if isinstance(data.get("tenant_id"), str) else None)
    unknown = frozenset(data.keys() - ApprovalRecord.model_fields.keys())
    if unknown:
        if unknown not in _told_unknown and len(_told_unknown) < 64:
            _told_unknown.add(unknown)
            log.warning(
                "approval: request %s keeps %s, which this release does not know: left out (a newer release wrote it, or the "
                "database login did); nothing this release checks reads it",
                approval_id,
                ", ".join(sorted(unknown)),
            )
        data = {k: v for k, v in data.items() if k not in unknown}
    try:
        return ApprovalRecord.model_validate(data)
    except ValidationError as exc:
        raise _refused(approval_id, tenant_id, _why(exc)) from None


class Transition(Frozen):
    """A vote's effect: the record after it, and the decision event to publish (None while more votes are needed).

    `EDITED` is a webhook message only: a partial vote changed the call the request awaits approval of.
    """

    record: ApprovalRecord
    event_type: str | None = None


def expire(record: ApprovalRecord, now: datetime) -> Transition | None:
    """An overdue pending request expires (fail closed); follow-ups just close without an event."""
    if not record.is_pending or now < record.expires_at:
        return None
    expired = record.model_copy(update={"status": "expired", "decided_at": now, "version": record.version + 1})
    return Transition(record=expired, event_type=EXPIRED if record.kind == "approval" else None)


def escalate(record: ApprovalRecord, now: datetime, after: timedelta | None) -> ApprovalRecord | None:
    """The request opened to its escalation groups, once it has waited `after`; None when not due."""
    if after is None or not record.is_pending or record.escalated_at is not None or now < record.created_at + after:
        return None
    return record.model_copy(update={"escalated_at": now, "version": record.version + 1})
