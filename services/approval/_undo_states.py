"""What the approval service knows of an action an approver asks to undo, and of its undo, as `servicekit.undo`'s rule reads it.

From the results it keeps (`_undo_store`: succeeded calls with a plan, and the id each one's undo has) and the
decisions and results it saw (`_task_event_store`, forgotten after `task_events_kept_s`), and the resolution of the
action's follow-up, when a person recorded one (its repository). The plan an undo may be proposed from is only ever
the executor's signed event kept for the action (`_undo_proofs`): the rest, which the service's database login can
write, can only make an undo refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from schemas import ActionResultData
from servicekit import Authority
from servicekit.undo import ActionState, undo_action_id
from services.approval._task_event_store import TaskEvent
from services.approval._undo_proofs import RowRefused, proven_result, unreadable_undo
from services.approval._undo_store import KeptResult, UndoResults, UnreadableResult
from services.approval.repository import ApprovalRepository

__all__ = ["UndoCase", "undo_case"]

DECIDED = "tidegate.action.decided"


@dataclass(frozen=True)
class UndoCase:
    """An action asked to be undone: its tenant, its state and its undo's (None: none seen), and its kept result, if any.

    `result` is the executor's signed result of the action, verified (None: none kept, or `refused`, with why).
    `action` is None only when its kept row's copy is not a result (`refused` says so): nothing else tells its plan.
    """

    tenant_id: str
    action: ActionState | None
    undo: ActionState | None
    result: ActionResultData | None
    refused: RowRefused | None = None


async def undo_case(results: UndoResults, seen: ApprovalRepository, action_id: str, authority: Authority | None) -> UndoCase | None:
    """What the service knows of `action_id` and of its undo (with its follow-up's resolution); None when it knows nothing of it.

    A kept result is verified against `authority` (`_undo_proofs.proven_result`): one that fails is logged, counted and
    `refused`; its row's copy then still tells the action's state (it can only make the undo refused), unless it is not
    a result at all. A row kept for the undo whose copy is not a result refuses the undo too (that undo may have run).
    """
    undo_id = undo_action_id(action_id)
    # The events first: a result is kept before it is recorded among them (`on_result`), so one they show is found kept.
    events = await seen.action_events([action_id, undo_id])
    row, undone_row = await results.get(action_id), await results.get(undo_id)
    proven = proven_result(row, action_id, authority) if row is not None else None
    refused = proven if isinstance(proven, RowRefused) else None
    if isinstance(row, UnreadableResult):  # nothing tells its plan (the events seen lack it): only the refusal is told
        return UndoCase(row.tenant_id, None, None, None, refused)  # its tenant column, to tell it to that tenant only
    kept = proven if isinstance(proven, ActionResultData) else row.result if row is not None else None
    undone = undone_row.result if isinstance(undone_row, KeptResult) else None  # only ever a reason to refuse: never proposed from
    tenant = kept.tenant_id if kept is not None else next((e.tenant_id for e in events if e.action_id == action_id), None)
    if tenant is None:
        return None
    action = _state(action_id, kept, _of(events, action_id, tenant), await results.original_of(action_id, tenant))
    if action is None:
        return None
    if isinstance(undone_row, UnreadableResult) and undone_row.tenant_id == tenant and refused is None:
        refused = unreadable_undo(undone_row, action_id)  # the undo may have run: it is not proposed again
    follow_up = await seen.get_by_action(action_id, "follow_up", tenant_id=tenant)
    if follow_up is not None and follow_up.resolution is not None:  # what a person found of an unknown outcome
        action = replace(action, resolution=follow_up.resolution, resolved_by=follow_up.decided_by)
    if undone is not None and undone.tenant_id != tenant:
        undone = None  # another tenant's action holds the id: nothing of it is told
    undo = _state(undo_id, undone, _of(events, undo_id, tenant), action_id)
    return UndoCase(tenant, action, undo, kept if refused is None else None, refused)


def _of(events: Sequence[TaskEvent], action_id: str, tenant_id: str) -> list[TaskEvent]:
    return [e for e in events if e.action_id == action_id and e.tenant_id == tenant_id]


def _state(action_id: str, kept: ActionResultData | None, events: Sequence[TaskEvent], undoes: str | None) -> ActionState | None:
    """The state of an action from its kept result, else from the events seen of it; None when there are neither."""
    if kept is not None:
        return ActionState.of_result(kept, undoes=undoes)
    if not events:
        return None
    decisions = [e for e in events if e.type == DECIDED]
    results = [e for e in events if e.type != DECIDED]
    decision = decisions[-1] if decisions else None  # the last decision holds (a human's grant re-evaluated)
    result = results[0] if results else None  # the first result holds (the executor runs an action once)
    return ActionState(
        action_id,
        events[0].tool,
        events[0].task_id,
        undoes=undoes,
        decision=decision.outcome if decision else None,
        denied_for=_detail(decision) if decision else "",
        status=result.outcome if result else None,
        error=(_detail(result) or None) if result else None,
    )


def _detail(event: TaskEvent) -> str:
    """What a task event's summary says after its first colon: a decision's reason codes, a result's error message.

    The service writes them so (`_decided_task_event`: "deny via policy: kill_switch"; `_result_task_event`:
    "failed after 2 attempt(s): http_503: helpdesk down").
    """
    return event.summary.partition(": ")[2]
