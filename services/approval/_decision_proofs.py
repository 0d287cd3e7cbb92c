"""What an approver is shown of a request is what the policy signed: its `action.decided`, kept as received, checked when shown.

A request's reasons, facts (the amount, a new payee, the taint and the passages flagged as injected), rationale, args,
proposer, requester and cost come from the policy's escalation. The service keeps that event as it received it
(envelope and signature, byte for byte: `ApprovalRecord.decision`) beside its copy of those fields, and its own database
login can write both. So before the API, the page, the CLI (through the API) or a webhook message shows a request, the
kept event must verify as the policy's (`servicekit.received.proven`: `Authority.check`, as every consumer checks it)
for exactly that action, tenant, task and step, and the row's copy must be the event's. When it is not:

- an event that verifies, with a copy the login rewrote: what is shown is the event's (the login's text is never shown);
- no event, or one that does not verify: nothing proves what the row says; it is shown as the row says, flagged;

and either way `not_as_signed` says why, approving is refused (`409 request_unproven`; a reject still settles it,
failing closed), and the operator is told once per row (a WARNING naming it and the fix) and at every read in
`tidegate_rows_refused_total{service="approval",table="approvals",reason}` (`unsigned` or `invalid`).
A follow-up (an unknown outcome to resolve) is opened from the executor's signed `action.unknown`, which it keeps in the
same field and is checked against the same way (its tool, reasons, attempts and error): before, the login could turn a
pending escalation into a follow-up, unflagged, and an approver's "it happened" was then signed and published as a human's
finding on a call that never ran (the policy settles or releases the call's reservation on it, attacker5). An unproven
follow-up can be resolved neither way (each resolution moves the call's reservation); it closes at its expiry, with no
event. A settled request without an event is not checked (settled before this release; its history is in the audit
log's signed events).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from schemas import ActionDecided, ActionDecidedData, ActionUnknown, action_identity
from servicekit import Authority
from servicekit.metrics import observe_row_refused
from servicekit.received import NotProven, proven
from services.approval._outcome_proofs import as_settled
from services.approval._refusals import already_settled
from services.approval._requests import follow_up_fields
from services.approval._row_proofs import Seals
from services.approval.domain import ApprovalRecord, Refusal

__all__ = ["SIGNED_FIELDS", "Shown", "adoption_refusal", "as_signed", "unproven_refusal"]

log = logging.getLogger("services.approval.service")  # as every part of the service logs
TOPIC = "actions.decided"
RESULTS = "actions.results"  # a follow-up's kept event: the executor's `action.unknown`
# The fields a request copies from the policy's decision (`_requests.request_from_decision`): what the approver is shown.
SIGNED_FIELDS = (
    "tool",
    "args",
    "action_digest",
    "reasons",
    "facts",
    "policy_version",
    "requested_by",
    "task_requested_by",
    "proposer",
    "rationale",
    "estimated_cost_usd",
)
_FIX = (
    "approving it is refused and the approver is told; the approval service's database login may have been used to write the "
    "row: rotate that login's password (docs/security/database.md), and reject the request (the agent proposes the call again)"
)
# A pending request without an event was opened before release 23 kept it (a follow-up: before release 25), or the login took
# it out: the operator keeps it.
_ADOPT = "`tidegate approvals adopt` keeps the policy's signed decision of it from the audit log (docs/approval.md)"
_ADOPT_FOLLOW_UP = "`tidegate approvals adopt` keeps the executor's signed result of it from the audit log (docs/approval.md)"
_FIX_UNSIGNED = f"approving it is refused until the operator adopts its decision: {_ADOPT}; if the audit log holds none, {_FIX}"
_FIX_FOLLOW_UP = (
    "resolving it is refused (it closes at its expiry, with no event) and the approver is told; the approval service's database "
    "login may have been used to write the row: rotate that login's password (docs/security/database.md)"
)
_told: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class Shown:
    """A request as it may be shown, and why what it shows is not proven to be the policy's (`not_as_signed`; None: it is).

    `record`: its decision's fields as the policy signed them, where the event verifies; else as the row says.
    """

    record: ApprovalRecord
    not_as_signed: str | None = None


def as_signed(record: ApprovalRecord, authority: Authority | None, seals: Seals | None) -> Shown:
    """`record` with what the policy signed of it and what this service signed when it settled it, and why not (told).

    `authority`: the deployment's public keys (None: no kept event is trusted). `seals` None: a store without seals (a
    test's twin) trusts its memory, as its approvals (`_ballots`); the service always has them (`app.build`).
    """
    shown = _as_decided(record, authority, seals)
    settled = as_settled(record, authority) if seals is not None else None
    if settled is None:
        return shown
    message = f"this request {settled.why}"
    if settled.counted_as is not None:
        _told_once(record, settled.why, settled.counted_as, "refused as the service settled it", _FIX)
    why = message if shown.not_as_signed is None else f"{shown.not_as_signed}; {message}"
    return Shown(shown.record.model_copy(update=settled.fields), why)


def _as_decided(record: ApprovalRecord, authority: Authority | None, seals: Seals | None) -> Shown:
    """`record` with what the policy signed of it, and why not when the row is not that (told to the operator)."""
    if seals is None:
        return Shown(record)
    if record.decision is None and not record.is_pending:
        return Shown(record)  # settled before this release kept the event: its history is the audit log's signed events
    signed, why = _checked(record, authority)
    if why is None:
        return Shown(record)
    if signed is None:
        return _refused(record, record, why)
    said = f"{why.why}: shown as the {_SIGNER[record.kind]} signed it"
    return _refused(record, record.model_copy(update=signed), NotProven(said, why.counted_as))


def adoption_refusal(record: ApprovalRecord, text: str, authority: Authority | None) -> str | None:
    """Why `text` (an `action.decided` as the bus held it) may not be kept as the decision `record` was opened from (None: it may).

    It may when the request would then be shown as it is, proven: the event verifies as the policy's escalation of
    exactly this action, tenant, task and step, and the row's copy is what it signed (`tidegate approvals adopt`, for a
    request opened before release 23 kept the event). A true event does not make a row the login rewrote approvable.
    """
    signed, why = _checked(record.model_copy(update={"decision": text}), authority)
    if why is None:
        return None
    return f"the request {why.why}" if signed is not None else f"the event {why.why}"


_SIGNER = {"approval": "policy", "follow_up": "executor"}


def _checked(record: ApprovalRecord, authority: Authority | None) -> tuple[dict[str, Any] | None, NotProven | None]:
    """What its kept event signed of `record` (None: it does not verify), and why the row is not that (None: it is)."""
    signed = _decided(record, authority) if record.kind == "approval" else _unknown(record, authority)
    if isinstance(signed, NotProven):
        return None, signed
    changed = [name for name, value in signed.items() if not _as_signed(name, getattr(record, name), value)]
    if not changed:
        return signed, None
    return signed, NotProven(f"was changed in the database ({', '.join(changed)} not as the {_SIGNER[record.kind]} signed)", "invalid")


def _decided(record: ApprovalRecord, authority: Authority | None) -> dict[str, Any] | NotProven:
    """The fields of a request as the policy's escalation kept in it signed them, or why it proves nothing."""
    if record.decision is None:
        return NotProven("carries no signed decision of the policy", "unsigned")
    event = proven(TOPIC, record.decision, action_identity(record), authority, signed="the policy's signed decision", shown=True)
    if isinstance(event, NotProven):
        return event
    if not isinstance(event, ActionDecided) or event.data.outcome != "escalate":
        return NotProven(f"carries the policy's signed {event.type}, not an escalation", "invalid")
    return _signed_fields(event.data)


def _unknown(record: ApprovalRecord, authority: Authority | None) -> dict[str, Any] | NotProven:
    """The fields of a follow-up as the executor's `action.unknown` kept in it signed them, or why it proves nothing."""
    if record.decision is None:
        return NotProven("is a follow-up that carries no signed unknown outcome of the executor", "unsigned")
    event = proven(RESULTS, record.decision, action_identity(record), authority, signed="the executor's signed result", shown=True)
    if isinstance(event, NotProven):
        return NotProven(f"is a follow-up whose kept result {event.why}", event.counted_as)
    if not isinstance(event, ActionUnknown):
        return NotProven(f"is a follow-up of the executor's signed {event.type}, not an unknown outcome", "invalid")
    return follow_up_fields(event.data)


def unproven_refusal(shown: Shown, *, rejecting: bool = False) -> Refusal | None:
    """Why approving (`rejecting`: rejecting) is refused: what the request shows is not proven to be what it claims (None: it is).

    A request's reject fails closed and stays open; a follow-up's "it did not happen" releases the call's reservation, so an
    unproven follow-up is resolved neither way (it closes at its expiry, with no event). A row the login set back to
    pending beside the service's signed decision of it is settled, as signed: no vote of either kind (a second, opposite
    decision of one request, attacker7).
    """
    if shown.not_as_signed is None:
        return None
    if not shown.record.is_pending:
        return Refusal(
            code="not_pending", status=409, message=f"{already_settled(shown.record)}, as the service signed it; {shown.not_as_signed}"
        )
    if shown.record.kind == "follow_up":
        return Refusal(
            code="request_unproven",
            status=409,
            message=f"{shown.not_as_signed}; recording what happened is refused (it closes at its expiry) and the operator is told"
            + ("" if shown.record.decision is not None else f" ({_ADOPT_FOLLOW_UP})"),
        )
    if rejecting:
        return None
    return Refusal(
        code="request_unproven",
        status=409,
        message=f"{shown.not_as_signed}; approving is refused: reject it (the agent may propose the call again) and tell the operator"
        + ("" if shown.record.decision is not None else f" ({_ADOPT})"),
    )


def _signed_fields(data: ActionDecidedData) -> dict[str, Any]:
    return {name: getattr(data, name) for name in SIGNED_FIELDS}


def _as_signed(name: str, kept: Any, signed: Any) -> bool:
    """Whether the row's `kept` value of field `name` is the signed one.

    A task's requester learned from an earlier escalation of the same action is kept when a later one lacks it
    (`_requests.refresh_request`): four eyes then binds one more person, never one fewer.
    """
    if name == "task_requested_by" and signed is None:
        return True
    return bool(_dumped(kept) == _dumped(signed))


def _dumped(value: Any) -> Any:
    """A value as JSON holds it: the row's copy was read back from JSON, the event's decoded from it."""
    if isinstance(value, list):
        return [_dumped(v) for v in value]
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else value


def _refused(record: ApprovalRecord, shown: ApprovalRecord, why: NotProven) -> Shown:
    if record.kind == "follow_up":
        fix = _FIX_FOLLOW_UP if record.decision is not None else f"{_FIX_FOLLOW_UP}; if it was opened before release 25: {_ADOPT_FOLLOW_UP}"
        _told_once(record, why.why, why.counted_as, "refused as the executor's unknown outcome", fix)
        return Shown(shown, f"this request {why.why}")
    _told_once(record, why.why, why.counted_as, "refused as the policy's escalation", _FIX_UNSIGNED if record.decision is None else _FIX)
    return Shown(shown, f"this request {why.why}")


def _told_once(record: ApprovalRecord, why: str, counted_as: str, refused_as: str, fix: str) -> None:
    """A WARNING naming the request the first time (a request is read at every listing), and the count at every read."""
    if (record.approval_id, why) not in _told:
        _told.add((record.approval_id, why))
        log.warning(
            "approval: request %s (%s, tenant %s, task %s) %s: it %s; %s",
            record.approval_id, record.tool, record.tenant_id, record.task_id, refused_as, why, fix,
        )  # fmt: skip
    observe_row_refused("approval", "approvals", counted_as)
