"""What a task's outcome means to a person: `completed`, `completed_with_handoff` or `failed`.

A task whose action was refused (denied by policy, rejected by a human, or let expire) is re-planned with the step's
alternatives, typically a note and a reply draft saying a human follows up (docs/planner.md), and closes
`task.completed`: the contract's status is unchanged. Counted as plainly completed it would say the refund happened;
every report that counts outcomes (`tidegate tasks`, `tidegate costs`, the `tidegate_task_outcomes_total` metric)
names it `completed_with_handoff` instead, read off the outcome's own counts.
"""

from __future__ import annotations

from typing import Literal

from schemas import ActionCounts

__all__ = ["HANDOFF", "Outcome", "outcome_of", "refused"]

Outcome = Literal["completed", "completed_with_handoff", "failed"]

HANDOFF: Outcome = "completed_with_handoff"


def refused(counts: ActionCounts) -> int:
    """How many of a task's actions were refused: denied by policy, rejected by a human, or expired unanswered."""
    return counts.denied + counts.rejected + counts.expired


def outcome_of(status: str, counts: ActionCounts) -> Outcome:
    """`completed_with_handoff` for a completed task with a refused action (handed to a human), else its status."""
    if status == "failed":
        return "failed"
    return HANDOFF if refused(counts) else "completed"
