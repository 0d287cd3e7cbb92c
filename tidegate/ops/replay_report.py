"""A replay's report: each task's story then and now, and what changed."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypedDict

from schemas import (
    ActionDecided,
    ActionFailed,
    ActionProposed,
    ActionSucceeded,
    ActionUnknown,
    ApprovalExpired,
    ApprovalRejected,
    TaskCompleted,
    TaskFailed,
)
from servicekit import action_digest
from servicekit.unreadable import Skipped
from tidegate.ops.sandbox import UNANSWERABLE

__all__ = ["ReplayReport", "ReplayedAction", "Story", "TaskDiff", "TaskKey", "stories", "then_now"]


class ReplayedAction(TypedDict):
    """One proposed action on one side of a replay: its call, what policy and a human made of it, its result and cost.

    A dict (the report's JSON is these as they are), typed so that every reader names the same keys.
    """

    step: int
    tool: str
    args: dict[str, Any]
    digest: str  # the first 16 hex of its action digest: the same call on both sides
    decision: str | None  # what policy alone said (None: undecided)
    reasons: list[str]
    after_human: str | None  # `then_now`: the decision after a grant, `reject`, `expired`, or None
    result: str | None
    cost_usd: float


@dataclass
class Story:
    """What happened to one task, on one side of the comparison.

    `cost_usd` is the figure compared: the task's total (`task_cost_usd`, which its outcome event reports: model,
    tools, orchestration, human review) when both sides have one, else the sum of its actions' costs.
    """

    actions: list[ReplayedAction] = field(default_factory=list)
    outcome: str | None = None
    cost_usd: float = 0.0
    task_cost_usd: float | None = None

    def actions_cost_usd(self) -> float:
        """What its actions cost: each proposal's cost and its result's."""
        return round(sum(float(a["cost_usd"]) for a in self.actions), 8)

    def signature(self) -> list[tuple[str, str]]:
        """The actions as (tool, args digest), to tell a changed plan from a changed decision."""
        return [(a["tool"], a["digest"]) for a in self.actions]


@dataclass
class TaskDiff:
    """One task, then and now."""

    task_id: str
    tenant_id: str
    then: Story
    now: Story

    def __post_init__(self) -> None:
        # A side without a task total (recorded proposals replayed, no planner) is the sum of its actions' costs:
        # the other side is then compared by that sum too, never a task's total against a sum of tool costs.
        if (self.then.task_cost_usd is None) != (self.now.task_cost_usd is None):
            self.then = dataclasses.replace(self.then, cost_usd=self.then.actions_cost_usd())
            self.now = dataclasses.replace(self.now, cost_usd=self.now.actions_cost_usd())

    @property
    def actions_changed(self) -> bool:
        """The agent proposed different calls."""
        return self.then.signature() != self.now.signature()

    @property
    def decisions_changed(self) -> bool:
        """Policy decided differently on the proposals both sides share."""
        then = {(a["tool"], a["digest"]): a["decision"] for a in self.then.actions}
        return any(then.get((a["tool"], a["digest"]), a["decision"]) != a["decision"] for a in self.now.actions if a["decision"])

    @property
    def outcome_changed(self) -> bool:
        """The task ended differently (only known with a planner)."""
        return self.now.outcome is not None and self.now.outcome != self.then.outcome

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready diff."""
        return {
            "task_id": self.task_id,
            "tenant_id": self.tenant_id,
            "actions_changed": self.actions_changed,
            "decisions_changed": self.decisions_changed,
            "outcome_changed": self.outcome_changed,
            "then": self.then.__dict__,
            "now": self.now.__dict__,
        }


@dataclass
class ReplayReport:
    """Everything a replay found."""

    sandbox_prefix: str
    planner: str | None
    recorded_events: int
    tasks: list[TaskDiff] = field(default_factory=list)
    inputs: int = 0
    answered: int = 0
    unanswerable: int = 0
    refused: int = 0
    skipped: Skipped = field(default_factory=Skipped)
    seconds: float = 0.0
    read_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready report."""
        return {
            "sandbox_prefix": self.sandbox_prefix,
            "planner": self.planner,
            "recorded_events": self.recorded_events,
            "inputs_replayed": self.inputs,
            "calls_answered_from_record": self.answered,
            "calls_unanswerable": self.unanswerable,
            "authorizations_refused": self.refused,
            "skipped": self.skipped.as_dict(),
            "undecided_now": sum(1 for t in self.tasks for a in t.now.actions if a["decision"] is None),
            "tasks": [t.as_dict() for t in self.tasks],
            "changed": {
                "actions": sum(t.actions_changed for t in self.tasks),
                "decisions": sum(t.decisions_changed for t in self.tasks),
                "outcomes": sum(t.outcome_changed for t in self.tasks),
            },
            "seconds": round(self.seconds, 3),
        }


TaskKey = tuple[str, str]
"""(tenant, task id): a task id is its tenant's, so two tenants' tasks of one id are two stories (docs/planner.md, Task ids)."""

# What a human's answer to an escalation makes of it, as `after_human` says it: a grant is re-decided by policy
# (`allow`, or `deny` when something changed); a rejection or an expiry is final, with no decision after it.
_REJECTED, _EXPIRED = "reject", "expired"


def stories(events: list[Any]) -> dict[TaskKey, Story]:
    """Each task's story from its events: actions with decision, what a human made of an escalation, result; outcome, cost.

    `after_human` of an escalated action: the decision after a human's grant (`allow`), `reject` when a human rejected it,
    `expired` when nobody answered; None while it waits (or, in a sandbox without recorded humans, was never asked).
    """
    stories: dict[TaskKey, Story] = {}
    actions: dict[tuple[str, str], ReplayedAction] = {}
    # Proposals first: a decision or result read from another topic may come before its proposal.
    events = [e for e in events if isinstance(e, ActionProposed)] + [e for e in events if not isinstance(e, ActionProposed)]
    for e in events:
        d = e.data
        story = stories.setdefault((d.tenant_id, d.task_id), Story()) if getattr(d, "task_id", None) else None
        if story is None:
            continue
        a = actions.get((d.tenant_id, d.action_id)) if getattr(d, "action_id", None) else None
        if isinstance(e, ActionProposed) and a is None:
            a = ReplayedAction(
                step=d.step, tool=d.tool, args=d.args, digest=action_digest(d.tenant_id, d.tool, d.args)[:16], decision=None,
                reasons=[], after_human=None, result=None, cost_usd=d.cost.usd,
            )  # fmt: skip
            actions[(d.tenant_id, d.action_id)] = a
            story.actions.append(a)
        elif isinstance(e, ActionDecided) and a is not None:
            if d.via == "approval":
                a["after_human"] = d.outcome  # re-decided after a grant: not what policy alone said
            elif a["decision"] is None:
                a["decision"] = d.outcome
                a["reasons"] = [str(r.code) for r in d.reasons]
        elif isinstance(e, ApprovalRejected | ApprovalExpired) and a is not None and a["after_human"] is None:
            a["after_human"] = _REJECTED if isinstance(e, ApprovalRejected) else _EXPIRED
        elif isinstance(e, ActionSucceeded | ActionFailed | ActionUnknown) and a is not None and a["result"] is None:
            # An action has one result: one published again (a repeat of the action answered from the record) is not another.
            a["result"] = d.error.type if d.error and d.error.type == UNANSWERABLE else d.status
            a["cost_usd"] = round(a["cost_usd"] + d.cost.usd, 8)
        elif isinstance(e, TaskCompleted | TaskFailed):
            story.outcome = d.status
            story.task_cost_usd = d.cost.total
    for story in stories.values():
        story.cost_usd = story.task_cost_usd if story.task_cost_usd is not None else story.actions_cost_usd()
    return stories


def then_now(after_human: str | None) -> str:
    """What a human made of an escalation, as the replay table shows it after `escalate` ("" when nothing yet)."""
    if after_human is None:
        return ""
    return " (expired: no human answered)" if after_human == _EXPIRED else f" (human → {after_human})"
