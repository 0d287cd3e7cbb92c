"""Which kept result an approver's undo may take its plan from: only the executor's own signed event for that very action.

`approval.undo_results` keeps, beside its copy of a succeeded call's result, the executor's `action.succeeded` as the
service received it. The service's own database login can write both, so the undo API proposes a plan only from an
event that verifies as the executor's (`Authority.check`, as every consumer checks it: a key of the executor, current
or retired within its grace) for exactly the action asked for, its tenant and task. A row that fails, or one kept
before there was an event, is refused: a WARNING naming the action and the fix, the metric
`tidegate_rows_refused_total{service="approval",table="undo_results"}`, and the undo is not offered (422
`undo_irreversible`, saying why); `tidegate undo` reads the signed event from the audit log and is not affected.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas import ActionResultData, ActionSucceeded, ReasonCode, decode_document
from servicekit import Authority
from servicekit.row_proofs import row_refused
from services.approval._undo_store import KeptResult

__all__ = ["RowRefused", "proven_result"]

TOPIC = "actions.results"
_BY_CLI = "an operator can undo the call with `tidegate undo {action_id}` (it reads the executor's signed result from the audit log)"
_TAMPERED = (
    "its undo is not offered over the approval API; the approval service's database login may have been used to write the row: "
    "rotate that login's password (docs/security/database.md); " + _BY_CLI
)
_BEFORE = "its undo is not offered over the approval API (rows kept before migration 014 carry no signed event); " + _BY_CLI


@dataclass(frozen=True)
class RowRefused:
    """Why a kept result grants no undo: said to the approver (`message`), the operator having been told in the log."""

    message: str


def proven_result(kept: KeptResult, action_id: str, authority: Authority | None) -> ActionResultData | RowRefused:
    """The result in `kept`'s event when it is the executor's signed result of `action_id`; else why not (logged and counted).

    `authority`: the deployment's public keys (None: no kept event is trusted). The event must also name the tenant and
    task of the row it is kept in (an event of another action, moved into this row, is refused), and the row's copy of
    the call and its plan must be the event's: a copy changed in the database is refused too, so the change is told.
    """
    proven = _proven(kept, action_id, authority)
    if isinstance(proven, ActionResultData):
        return proven
    why, counted_as = proven
    copy = kept.result
    what = f"the result kept for the undo of action {action_id} ({copy.tool}, tenant {copy.tenant_id}, task {copy.task_id})"
    fix = (_BEFORE if kept.event is None else _TAMPERED).format(action_id=action_id)
    row_refused("approval", "undo_results", what, why, fix, counted_as=counted_as)
    by_cli = _BY_CLI.format(action_id=action_id)
    return RowRefused(
        f"the undo of {action_id} cannot be offered here: the result this service keeps for it {why}; nothing was proposed; {by_cli}"
    )


def _proven(kept: KeptResult, action_id: str, authority: Authority | None) -> ActionResultData | tuple[str, str]:
    """`kept`'s event's result when it verifies for `action_id`; else why not, and the metric's reason."""
    if kept.event is None:
        return "carries no signed result event of the executor (it was kept before this release)", "unsigned"
    try:
        event, document = decode_document(TOPIC, kept.event)
    except ValueError as exc:  # pydantic's ValidationError, or JSON that is not
        return f"carries something that is not a result event ({type(exc).__name__})", "invalid"
    if authority is None:
        return "cannot be verified (this service was given no public keys)", "invalid"
    refusal = authority.check(kept.event, event, document)
    if refusal is not None:
        counted_as = "unsigned" if refusal.code == ReasonCode.SIGNATURE_MISSING else "invalid"
        return f"carries a result event that is refused: {refusal.message}", counted_as
    if not isinstance(event, ActionSucceeded):
        return f"carries the executor's signed {event.type}, not a succeeded call's result", "invalid"
    data: ActionResultData = event.data
    theirs = (data.action_id, data.tenant_id, data.task_id)
    if theirs != (action_id, kept.result.tenant_id, kept.result.task_id):
        named = f"{data.action_id}, tenant {data.tenant_id}, task {data.task_id}"
        return f"carries the executor's signed result of another action ({named})", "invalid"
    copy = kept.result
    if (copy.tool, copy.status, copy.undo) != (data.tool, data.status, data.undo):  # the row's copy was changed since it was kept
        return "was changed in the database: its copy of the call and its undo plan is not the executor's signed one", "invalid"
    return data
