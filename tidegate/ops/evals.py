"""Evals: a versioned set of de-identified tasks with expected actions and decisions, scored in process.

A case is one YAML file (`evals/<workflow>/<version>/<id>.yaml`): the task as a client submits it
and the proposals expected, in order, each with the decision policy should give (and optionally
its first reason). `run_eval` plans each case with a planner strategy and decides each proposal
with a policy pack, in this process (`tidegate.ops.inprocess`); the scorecard says how often the
agent proposed exactly the expected actions, how many expected decisions came out, the escalation
rate, the cost per task and the latency.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schemas import Mode, TaskSubmittedData
from servicekit import ToolCatalog
from services.planner import CostRates
from services.policy import CompiledPack
from tidegate.ops.inprocess import TaskRun, policy_service, run_task

__all__ = ["Case", "CaseResult", "EvalCase", "ExpectedAction", "Scorecard", "load_set", "run_eval"]


class ExpectedAction(BaseModel):
    """A proposal the agent should make, and what policy should decide."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tool: str
    decision: str = Field(pattern="^(allow|deny|escalate)$")
    reason: str | None = Field(default=None, description="First reason code, when the case pins it.")


class EvalTask(BaseModel):
    """The task of a case, without ids (the runner makes them)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant: str = "acme"
    workflow: str = "support_triage"
    mode: Mode = "autonomous"
    budget_usd: float | None = 5.0
    input: dict[str, Any]
    untrusted: list[str] = Field(default_factory=lambda: ["subject", "body"])


class EvalCase(BaseModel):
    """One case of an eval set."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    description: str
    tags: list[str] = Field(default_factory=list)
    task: EvalTask
    expect: list[ExpectedAction]
    expect_status: str | None = Field(default=None, description="`completed` or `failed`, when the case pins it.")


Case = EvalCase


def load_set(directory: Path) -> list[EvalCase]:
    """Every case of the set in `directory`, by id; a case that does not read is a ValueError naming its file.

    An eval set is authored, not recorded: a broken case is refused (skipping it would inflate the score).
    """
    cases = []
    for path in sorted(directory.glob("*.yaml")):
        try:
            cases.append(EvalCase.model_validate(yaml.safe_load(path.read_text())))
        except (yaml.YAMLError, ValidationError) as exc:
            raise ValueError(f"eval case {path}: {exc}") from exc
    if not cases:
        raise ValueError(f"no eval case (*.yaml) in {directory}")
    return sorted(cases, key=lambda c: c.id)


def to_task(case: EvalCase, run_id: str) -> TaskSubmittedData:
    """The task a client would submit for `case`."""
    t = case.task
    return TaskSubmittedData(
        task_id=f"eval-{run_id}-{case.id}",
        tenant_id=t.tenant,
        workflow=t.workflow,
        input=t.input,
        untrusted=t.untrusted,
        requested_by="eval@tidegate.local",
        budget_usd=t.budget_usd,
        mode=t.mode,
    )


@dataclass(frozen=True)
class CaseResult:
    """How one case went."""

    case: EvalCase
    run: TaskRun

    @property
    def actions_match(self) -> bool:
        """The agent proposed exactly the expected tools, in order."""
        return [s.tool for s in self.run.steps] == [e.tool for e in self.case.expect]

    @property
    def decisions_matched(self) -> int:
        """Expected proposals whose tool and decision (and reason, when pinned) came out at their position."""
        hits = 0
        for expected, got in zip(self.case.expect, self.run.steps, strict=False):
            if expected.tool == got.tool and expected.decision == got.decision:
                hits += expected.reason is None or (bool(got.reasons) and got.reasons[0] == expected.reason)
        return hits

    @property
    def decisions_total(self) -> int:
        """Denominator of decision accuracy: a missing or extra proposal counts as a miss."""
        return max(len(self.case.expect), len(self.run.steps))

    @property
    def passed(self) -> bool:
        """Every expectation met."""
        status_ok = self.case.expect_status is None or self.case.expect_status == self.run.status
        return self.actions_match and self.decisions_matched == self.decisions_total and status_ok


@dataclass
class Scorecard:
    """The figures of one eval run."""

    label: str
    results: list[CaseResult] = field(default_factory=list)

    @property
    def cases(self) -> int:
        """Cases run."""
        return len(self.results)

    @property
    def passed(self) -> int:
        """Cases with every expectation met."""
        return sum(r.passed for r in self.results)

    @property
    def action_accuracy(self) -> float:
        """Share of cases whose proposals were exactly the expected tools."""
        return sum(r.actions_match for r in self.results) / max(1, self.cases)

    @property
    def decision_accuracy(self) -> float:
        """Share of expected decisions that came out (missing and extra proposals count as misses)."""
        total = sum(r.decisions_total for r in self.results)
        return sum(r.decisions_matched for r in self.results) / max(1, total)

    @property
    def escalation_rate(self) -> float:
        """Share of proposals that escalated to a human."""
        steps = [s for r in self.results for s in r.run.steps]
        return sum(s.decision == "escalate" for s in steps) / max(1, len(steps))

    @property
    def cost_per_task(self) -> float:
        """Mean task cost, USD (model, tools, orchestration, human review as the planner prices it)."""
        return statistics.fmean(r.run.cost_usd for r in self.results) if self.results else 0.0

    def latency_ms(self, q: float) -> float:
        """Latency quantile of planning and deciding one task, milliseconds."""
        values = sorted(r.run.latency_ms for r in self.results)
        if not values:
            return 0.0
        return values[min(len(values) - 1, int(q * len(values)))]

    def failures(self) -> list[CaseResult]:
        """Cases that missed an expectation."""
        return [r for r in self.results if not r.passed]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready scorecard."""
        return {
            "label": self.label,
            "cases": self.cases,
            "passed": self.passed,
            "action_accuracy": round(self.action_accuracy, 4),
            "decision_accuracy": round(self.decision_accuracy, 4),
            "escalation_rate": round(self.escalation_rate, 4),
            "cost_per_task_usd": round(self.cost_per_task, 6),
            "latency_p50_ms": round(self.latency_ms(0.5), 2),
            "latency_p95_ms": round(self.latency_ms(0.95), 2),
            "failures": [
                {
                    "case": r.case.id,
                    "expected": [f"{e.tool}:{e.decision}" for e in r.case.expect],
                    "got": [f"{s.tool}:{s.decision}({','.join(s.reasons)})" for s in r.run.steps],
                    "status": r.run.status,
                }
                for r in self.failures()
            ],
        }


async def run_eval(
    cases: list[EvalCase], *, strategy: Any, pack: CompiledPack, catalog: ToolCatalog, label: str, rates: CostRates | None = None
) -> Scorecard:
    """Run every case (each with a fresh policy state, so cases do not leak spend or payees into each other)."""
    import uuid

    run_id = uuid.uuid4().hex[:8]
    card = Scorecard(label)
    for case in cases:
        policy = policy_service(pack, catalog)
        run = await run_task(to_task(case, run_id), strategy, policy, catalog, rates or CostRates())
        card.results.append(CaseResult(case, run))
    return card
