"""What `tidegate undo` proposes: the undo calls of an action, or of every write of a task, read from the audit log.

The executor put each call's undo plan in its `action.succeeded` (`servicekit.undo`); this module finds
those results, leaves out what was undone already, and turns each into an ordinary proposal (or a refusal).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from schemas import (
    ActionProposed,
    ActionProposedData,
    ActionResultData,
    ActionSucceeded,
    Mode,
)
from servicekit.undo import UndoRefused, undo_action_id, undo_proposal, undo_refusal, undo_states
from servicekit.unreadable import Unreadable, read_event
from services.audit import PostgresAuditLog, SearchFilters, task_rows_of

__all__ = ["UndoStep", "read_recorded", "refusal_of", "undo_steps"]


@dataclass(frozen=True)
class UndoStep:
    """One action to undo: the proposal to publish, or why it cannot be undone by a tool."""

    action_id: str
    tool: str
    proposal: ActionProposedData | None = None
    refused: UndoRefused | None = None


def _events(rows: Iterable[Any], prefix: str) -> list[Any]:
    out = []
    for row in rows:
        if not row.valid:  # the audit refused it as the services do (its signature, above all): nothing to undo
            continue
        try:
            out.append(read_event(row.topic.removeprefix(prefix), row.value))
        except Unreadable:
            continue
    return out


async def read_recorded(
    log: PostgresAuditLog, prefix: str, *, action_id: str | None = None, task_id: str | None = None, tenant: str | None = None
) -> list[Any]:
    """The recorded events of one action (`action_id`) or one tenant's task (`task_id`, `tenant`), oldest first.

    A task id is its tenant's (docs/planner.md, Task ids): without `tenant`, a task id several tenants used is
    `SeveralTenants` (naming them), never one tenant's calls proposed for undoing in another's name.
    """
    if task_id is not None:
        return _events(await task_rows_of(log, task_id, prefix, tenant=tenant), prefix)
    rows = await log.search(SearchFilters(action_id=action_id, topic_prefix=prefix), limit=1000)
    return _events(rows, prefix)


def undo_steps(events: Iterable[Any], *, requested_by: str, mode: Mode = "autonomous", only: str | None = None) -> list[UndoStep]:
    """Undo proposals (or refusals) for the succeeded calls among `events`, newest first; `only` picks one action.

    A call undone already (its undo was proposed) and the undo calls themselves are left out, so undoing
    a task twice proposes nothing new. With `only`, the action is never left out silently: what stops its
    undo is a refusal that says so (`refusal_of`); no step at all means the events do not know the action.
    """
    events = list(events)
    if only is not None:
        refused = refusal_of(events, only)
        if refused is not None:
            return [refused]
    undone = {e.data.undoes for e in events if isinstance(e, ActionProposed) and e.data.undoes}
    undo_ids = {e.data.action_id for e in events if isinstance(e, ActionProposed) and e.data.undoes}
    results: dict[str, ActionResultData] = {}
    for e in events:
        if isinstance(e, ActionSucceeded):
            results.setdefault(e.data.action_id, e.data)
    steps = []
    for result in reversed(list(results.values())):
        if (only is not None and result.action_id != only) or result.action_id in undo_ids:
            continue
        if result.action_id in undone or undo_action_id(result.action_id) in undo_ids:
            continue
        if only is None and result.undo is None:
            continue  # a read, or a tool with no undo declared: `--task` undoes the writes that can be undone
        try:
            proposal = undo_proposal(result, requested_by=requested_by, proposer=f"undo:{requested_by}", mode=mode)
        except UndoRefused as exc:
            steps.append(UndoStep(result.action_id, result.tool, refused=exc))
            continue
        steps.append(UndoStep(result.action_id, result.tool, proposal=proposal))
    return steps


def refusal_of(events: Iterable[Any], action_id: str) -> UndoStep | None:
    """Why the action `action_id` cannot be undone now, read from its events and its undo's, or None when it may be.

    `events` are the action's and its undo's (`undo_action_id`); None too when they know nothing of the action.
    The rule is the one the approval API applies (`servicekit.undo.undo_refusal`).
    """
    action, undo = undo_states(events, action_id)
    refused = undo_refusal(action, undo) if action is not None else None
    return None if refused is None or action is None else UndoStep(action_id, action.tool, refused=refused)
