"""How a task stands when the audit explains it: its outcome's status, or what its actions' ends say of a task nothing closes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import schemas as s

if TYPE_CHECKING:
    from services.audit.explanation import ActionStory

__all__ = ["FOLLOW_UP_PENDING", "TaskStatus", "standing"]

TaskStatus = Literal["completed", "failed", "open", "ended"]

_OUR_PLANNER = "tidegate"  # the planner closes each task it plans with an outcome; nothing closes any other task


def standing(
    submitted: s.TaskSubmittedData | None, outcome: s.TaskOutcomeData | None, stories: Sequence[ActionStory]
) -> tuple[TaskStatus, str | None]:
    """The task's status and summary: its outcome's; else, of a task nothing will close, what its actions' ends say.

    A call whose outcome is unknown is not over until a human says what happened (`approval.resolved`): until then it is
    counted `FOLLOW_UP_PENDING`, never among the ended, and its task is `open`; its outcome's summary says so too.
    """
    states = Counter(_action_state(a) for a in stories)
    pending = states.pop(FOLLOW_UP_PENDING, 0)
    if outcome is not None:
        return outcome.status, outcome.summary + (f"; {pending} call(s) {FOLLOW_UP_PENDING}" if pending else "")
    if submitted is not None and submitted.planner == _OUR_PLANNER:
        return "open", (f"{pending} call(s) {FOLLOW_UP_PENDING}" if pending else None)  # the planner has not closed it yet
    record = f"no task outcome (planned by {submitted.planner})" if submitted else "no task record (proposed by a client)"
    still = states.pop("open", 0)
    ended = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
    if not stories:
        return "ended", f"{record}; no action recorded"
    if not still and not pending:
        return "ended", f"{record}; {_actions(len(stories))}, all ended: {ended}"
    waits = [f"{still} open (awaiting the policy, a human or the executor)"] if still else []
    waits += [f"{pending} {FOLLOW_UP_PENDING}"] if pending else []
    tail = f", {sum(states.values())} ended: {ended}" if states else ""
    return "open", f"{record}; {_actions(len(stories))}, {', '.join(waits)}{tail}"


FOLLOW_UP_PENDING = "unknown, a human follows it up (pending)"
"""How a call that ended `unknown` stands until a human resolves its follow-up (opened off the bus: docs/approval.md)."""


def _actions(n: int) -> str:
    return f"{n} action" + ("" if n == 1 else "s")


def _action_state(a: ActionStory) -> str:
    """How one action ended (its call's status, `denied`, `rejected`, `expired`; an unknown one, what a human found), or `open`."""
    if a.calls:
        if a.follow_up == "pending":
            return FOLLOW_UP_PENDING
        if a.follow_up is not None:
            return f"unknown (resolved: {a.follow_up})"
        return a.calls[-1].status
    if a.decisions and a.decisions[-1].outcome == "deny":
        return "denied"
    asked = [ap.status for ap in a.approvals if ap.status != "resolved"]
    if asked and asked[-1] in ("rejected", "expired"):
        return asked[-1]
    return "open"
