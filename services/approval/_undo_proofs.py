"""Which kept result an approver's undo may take its plan from: only the executor's own signed event for that very action.

`approval.undo_results` keeps, beside its copy of a succeeded call's result, the executor's `action.succeeded` as the
service received it. The service's own database login can write both, so the undo API proposes a plan only from an
event that verifies as the executor's (`servicekit.received.proven`: `Authority.check`, as every consumer checks it, a
key of the executor, current or retired within its grace) for exactly the action asked for, its tenant, task and step.
A row that fails, one whose copy is not a result, or one kept before there was an event, is refused: a WARNING naming
the action and the fix, the metric `tidegate_rows_refused_total{service="approval",table="undo_results"}`, and the undo
is not offered (422 `undo_irreversible`, saying why); `tidegate undo` reads the signed event from the audit log and is not affected.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas import ActionIdentity, ActionResultData, ActionSucceeded, action_identity
from servicekit import Authority
from servicekit.received import NotProven, proven
from servicekit.row_proofs import row_refused
from services.approval._undo_store import KeptResult, UnreadableResult

__all__ = ["RowRefused", "proven_result", "unreadable_undo"]

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


def proven_result(kept: KeptResult | UnreadableResult, action_id: str, authority: Authority | None) -> ActionResultData | RowRefused:
    """The result in `kept`'s event when it is the executor's signed result of `action_id`; else why not (logged and counted).

    `authority`: the deployment's public keys (None: no kept event is trusted). The event must also name the tenant,
    task and step of the row it is kept in (an event of another action, moved into this row, is refused), and the
    row's copy of the call and its plan must be the event's: a copy changed in the database is refused too, so the
    change is told, and so is a copy that is not a result at all.
    """
    proven = _proven(kept, action_id, authority)
    if isinstance(proven, ActionResultData):
        return proven
    if isinstance(kept, UnreadableResult):
        what = f"the result kept for the undo of action {action_id} (tenant {kept.tenant_id}, task {kept.task_id})"
    else:
        copy = kept.result
        what = f"the result kept for the undo of action {action_id} ({copy.tool}, tenant {copy.tenant_id}, task {copy.task_id})"
    before = isinstance(kept, KeptResult) and kept.event is None
    return _refused(action_id, what, proven, before=before)


def unreadable_undo(undo: UnreadableResult, action_id: str) -> RowRefused:
    """Why `action_id`'s undo is not offered when the row kept for its undo is not a result: that undo may have run (logged and counted)."""
    what = f"the result kept for action {undo.action_id}, the undo of {action_id} (tenant {undo.tenant_id}, task {undo.task_id})"
    return _refused(action_id, what, _unreadable(undo), before=False, of=f"its undo {undo.action_id}")


def _refused(action_id: str, what: str, unproven: NotProven, *, before: bool, of: str = "it") -> RowRefused:
    """Tell the operator (`row_refused`, with the fix) and say to the approver why `action_id`'s undo is not offered.

    `what`: the row, for the operator; `of`: whose result it keeps, for the approver; `before`: a row kept before migration 014.
    """
    fix = (_BEFORE if before else _TAMPERED).format(action_id=action_id)
    row_refused("approval", "undo_results", what, unproven.why, fix, counted_as=unproven.counted_as)
    by_cli = _BY_CLI.format(action_id=action_id)
    return RowRefused(
        f"the undo of {action_id} cannot be offered here: the result this service keeps for {of} {unproven.why}; nothing was proposed; "
        f"{by_cli}"
    )


def _proven(kept: KeptResult | UnreadableResult, action_id: str, authority: Authority | None) -> ActionResultData | NotProven:
    """`kept`'s event's result when it verifies for `action_id`; else why not, and the metric's reason."""
    if isinstance(kept, UnreadableResult):
        return _unreadable(kept)
    if kept.event is None:
        return NotProven("carries no signed result event of the executor (it was kept before this release)", "unsigned")
    copy = kept.result
    expected: ActionIdentity = {**action_identity(copy), "action_id": action_id}  # the action asked for, as its row tells it
    event = proven(TOPIC, kept.event, expected, authority, signed="the executor's signed result", shown=True)
    if isinstance(event, NotProven):
        return event
    if not isinstance(event, ActionSucceeded):
        return NotProven(f"carries the executor's signed {event.type}, not a succeeded call's result", "invalid")
    data: ActionResultData = event.data
    if (copy.tool, copy.status, copy.undo) != (data.tool, data.status, data.undo):  # the row's copy was changed since it was kept
        return NotProven("was changed in the database: its copy of the call and its undo plan is not the executor's signed one", "invalid")
    return data


def _unreadable(kept: UnreadableResult) -> NotProven:
    return NotProven(f"was written in the database: its copy of the call is not a result ({kept.why})", "invalid")
