"""A planner task's state, as stored between events, and what one event makes of it (`Transition`).

Pure models: `TaskState` holds the queue of planned steps (`PlannedStep`) and what became of each (`StepRecord`);
`CostRates` and `StepTimeouts` are what a deployment sets. The state machine moving a task on is `domain`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas import ActionCounts, Envelope, Mode, ProposalCost, TaskCost
from servicekit.costs import ReviewPrice, task_cost

__all__ = [
    "CostRates",
    "Outbound",
    "PlannedStep",
    "StepRecord",
    "StepStatus",
    "StepTimeouts",
    "TaskState",
    "TaskStatus",
    "Transition",
]


StepStatus = Literal[
    "proposed", "allowed", "escalated", "denied", "rejected", "expired", "succeeded", "failed", "unknown", "timed_out", "refused"
]
TaskStatus = Literal["running", "waiting_human", "completed", "failed"]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class PlannedStep(_Model):
    """A step a strategy planned: the tool call, and what to do if policy or a human refuses it."""

    tool: str
    args: dict[str, Any]
    rationale: str = ""
    tainted_args: list[str] = Field(default_factory=list)
    on_deny: list[PlannedStep] = Field(
        default_factory=list,
        description="Steps that replace this one and the rest of the plan when it is refused; `{reason}` in a string arg is filled in.",
    )
    required: bool = Field(default=True, description="A refused required step without alternatives fails the task.")
    continue_on_failure: bool = Field(default=False, description="A failed call moves on instead of failing the task.")
    cost: ProposalCost = Field(default_factory=ProposalCost, description="Model cost of planning this step.")
    confidence: float = Field(default=1.0, ge=0, le=1, description="How sure the strategy is of the step (a playbook's are 1).")


class StepRecord(_Model):
    """One proposed action and everything that happened to it."""

    step: int
    action_id: str
    tool: str
    args: dict[str, Any]
    rationale: str = ""
    tainted_args: list[str] = Field(default_factory=list)
    status: StepStatus = "proposed"
    decision: str | None = None
    reasons: list[str] = Field(default_factory=list, description="Reason codes of the latest decision or approval.")
    reason_messages: list[str] = Field(default_factory=list)
    approval_id: str | None = None
    read_only: bool = False
    attempts: int = 0
    cost_usd: float = 0.0
    result: dict[str, Any] | None = None
    error: str | None = None
    waiting_since: datetime | None = Field(
        default=None, description="When the step last started waiting for a machine's answer (proposed, allowed or granted)."
    )
    approved_args: dict[str, Any] | None = Field(default=None, description="The args a human granted, when they edited the call.")
    repeats: str | None = Field(default=None, description="The action this step proposes again (its authorization expired unused).")
    proposals: int = Field(default=1, ge=1, description="How many times this planned call has been proposed, this step included.")
    planned: PlannedStep


class CostRates(_Model):
    """Prices the planner applies to what it cannot read off events."""

    orchestration_usd_per_event: float = 0.00001
    review: ReviewPrice = ReviewPrice()  # of one human touch: the kit's `TIDEGATE_HUMAN_*`, as everywhere a decision is priced


class TaskState(_Model):
    """Everything the planner knows about one task.

    Stored without the fields at their default, here and in its steps and plan entries (`PostgresTaskRepository`): a
    changed default changes every state stored before (tests/unit/planner/test_stored_state_defaults.py).
    """

    task_id: str
    tenant_id: str
    workflow: str
    mode: Mode
    requested_by: str
    budget_usd: float | None = None
    strategy: str
    status: TaskStatus = "running"
    plan: list[PlannedStep] = Field(default_factory=list, description="Steps still to propose, in order.")
    steps: list[StepRecord] = Field(default_factory=list)
    counts: ActionCounts = Field(default_factory=ActionCounts)
    model_usd: float = 0.0
    retrieval_usd: float = 0.0
    tools_usd: float = 0.0
    retries_usd: float = 0.0
    events: int = Field(default=0, description="Events handled or published for the task (orchestration cost).")
    human_touches: int = 0
    dropped: list[str] = Field(
        default_factory=list,
        description="What the strategy wanted but the planner refused: a tool not in the catalog (its name alone), or the tool "
        "and why in brackets (not granted to the task's tenant, arguments that are not JSON or that no event can carry).",
    )
    started_at: datetime
    ended_at: datetime | None = None
    summary: str | None = None
    reason: str | None = None
    submission: str | None = Field(
        default=None,
        description="`submission_digest` of the request the task was started from (None: a state written before it was kept).",
    )

    @property
    def current(self) -> StepRecord | None:
        """The latest proposed step."""
        return self.steps[-1] if self.steps else None

    def step_by_action(self, action_id: str, tenant_id: str) -> StepRecord | None:
        """The step that proposed `action_id`, if it is ours: an event of another tenant never moves our task."""
        if tenant_id != self.tenant_id:
            return None
        return next((s for s in self.steps if s.action_id == action_id), None)

    def cost(self, rates: CostRates) -> TaskCost:
        """The cost breakdown so far."""
        return task_cost(
            model=self.model_usd,
            retrieval=self.retrieval_usd,
            tools=self.tools_usd,
            orchestration=self.events * rates.orchestration_usd_per_event,
            retries=self.retries_usd,
            human_review=rates.review.usd(self.human_touches),
        )


class StepTimeouts(_Model):
    """How long a step may wait for a decision or a result, per tool (from its risk class), before its task is closed.

    A step waiting for a human (escalated, not yet decided) is not timed out here: its approval
    expires on the approval service's clock and the planner hears `approval.expired`. Once granted,
    the policy's new decision is due like any other.
    """

    default_s: float = 900.0
    by_tool: dict[str, float] = Field(default_factory=dict)

    def of(self, tool: str) -> timedelta:
        """The time a step of `tool` may wait."""
        return timedelta(seconds=self.by_tool.get(tool, self.default_s))


# What a transition hands the repository is never validated nor serialised itself (its state and events are models):
# plain frozen dataclasses, built at no more than the cost of a tuple.
@dataclass(frozen=True, slots=True)
class Outbound:
    """An event to publish on a catalog topic once the new state is saved."""

    topic: str
    event: Envelope


@dataclass(frozen=True, slots=True)
class Transition:
    """The result of applying one event: the new state and what to publish."""

    state: TaskState
    outbound: list[Outbound] = field(default_factory=list)
    changed: bool = True
