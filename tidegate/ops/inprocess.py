"""One task through the planner's state machine and the real policy service, in this process, with no Kafka.

The planner's pure transitions (`services.planner.domain`) and the policy service's use case
(`PolicyService.on_proposed`, over its in-memory repository) run as they do in production; the
executor is simulated (an allowed call succeeds at its catalogued cost and touches nothing), and an
escalation is answered by a simulated human who rejects it, so the planner's hand-off runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas import (
    ActionDecided,
    ActionProposed,
    ActionResultData,
    ApprovalData,
    Envelope,
    ResultCost,
    RiskClass,
    TaskCompleted,
    TaskFailed,
    TaskSubmittedData,
    action_identity,
    decode,
)
from servicekit import ToolCatalog
from servicekit.costs import call_cost_usd
from services.planner import CostRates, domain
from services.policy import CompiledPack, PolicyService, in_process

__all__ = ["Step", "TaskRun", "run_task"]

MAX_EVENTS = 200


@dataclass(frozen=True)
class Step:
    """One proposal and what policy decided about it."""

    tool: str
    args: dict[str, Any]
    decision: str
    reasons: list[str]
    cost_usd: float


@dataclass
class TaskRun:
    """What happened to one task in process."""

    task_id: str
    steps: list[Step] = field(default_factory=list)
    status: str = "running"
    reason: str | None = None
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    plan_error: str | None = None


def policy_service(pack: CompiledPack, catalog: ToolCatalog) -> PolicyService:
    """The real policy service over an in-memory repository, publishing nowhere (a throwaway key: it authorizes nothing real)."""
    return in_process(pack, catalog)


async def run_task(task: TaskSubmittedData, strategy: Any, policy: PolicyService, catalog: ToolCatalog, rates: CostRates) -> TaskRun:
    """Plan `task` with `strategy`, decide each proposal with `policy`, simulate executor and human, until the task closes."""
    started = time.perf_counter()
    run = TaskRun(task.task_id)
    read_only = frozenset(name for name, spec in catalog.items() if spec.risk is RiskClass.READ)
    now = datetime.now(UTC)
    plan = await strategy.plan(task)
    run.plan_error = plan.error
    transition = domain.start_task(
        task,
        plan.steps,
        strategy=strategy.name,
        now=now,
        rates=rates,
        read_only=read_only,
        dropped=plan.dropped,
        error=plan.error,
        detail=plan.detail,
    )
    state = transition.state
    queue: list[Envelope] = [o.event for o in transition.outbound]
    handled = 0
    while queue and handled < MAX_EVENTS:
        event = queue.pop(0)
        handled += 1
        if isinstance(event, ActionProposed):
            record = await policy.on_proposed(event)
            decided: ActionDecided = decode("actions.decided", record.decided_event)
            d = decided.data
            run.steps.append(Step(d.tool, d.args, d.outcome, [str(r.code) for r in d.reasons], event.data.cost.usd))
            transition = domain.on_decision(state, d, now, rates, read_only)
            state = transition.state
            queue += [o.event for o in transition.outbound]
            if d.outcome == "allow":
                spec = catalog.get(d.tool)
                result = ActionResultData(
                    **action_identity(d),
                    tool=d.tool,
                    status="succeeded",
                    result={"simulated": True},
                    attempts=1,
                    duration_ms=0.0,
                    cost=ResultCost(usd=call_cost_usd(spec.cost_usd if spec else 0.0, 1)),
                )
                await policy.on_result(_succeeded(result))
                transition = domain.on_result(state, result, now, rates, read_only)
            elif d.outcome == "escalate":
                rejection = ApprovalData(
                    approval_id=f"sim-{d.action_id}",
                    action_id=d.action_id,
                    task_id=d.task_id,
                    tenant_id=d.tenant_id,
                    tool=d.tool,
                    args=d.args,
                    action_digest=d.action_digest,
                    approver="simulated-human",
                    approvers=["simulated-human"],
                    comment="rejected by the simulated reviewer",
                    expires_at=now + timedelta(hours=1),
                )
                transition = domain.on_approval(state, "rejected", rejection, now, rates, read_only)
            else:
                continue
            state = transition.state
            queue += [o.event for o in transition.outbound]
        elif isinstance(event, TaskCompleted | TaskFailed):
            run.status = event.data.status
            run.reason = event.data.reason
            run.cost_usd = event.data.cost.total
    run.latency_ms = (time.perf_counter() - started) * 1000
    return run


def _succeeded(data: ActionResultData) -> Any:
    from schemas import ActionSucceeded

    return ActionSucceeded.build(data, source="tidegate/eval")
