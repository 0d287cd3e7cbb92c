from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from schemas import (
    ActionDecided,
    ActionDecidedData,
    ActionFailed,
    ActionResultData,
    ActionSucceeded,
    ActionUnknown,
    ApprovalData,
    ApprovalExpired,
    ApprovalGranted,
    ApprovalRejected,
    ApprovalRequested,
    Envelope,
    ErrorInfo,
    Reason,
    ResultCost,
    TaskSubmitted,
    utcnow,
)
from servicekit import REPO_ROOT, EventOutlet, ToolCatalog
from servicekit.costs import ReviewPrice
from services.planner.action_ids import ActionIds
from services.planner.handlers import PlannerHandlers
from services.planner.repository import InMemoryTaskRepository
from services.planner.strategies import PlaybookStrategy
from services.planner.task_state import CostRates

RATES = CostRates(orchestration_usd_per_event=0.001, review=ReviewPrice(minutes_per_decision=6.0, hourly_rate_usd=50.0))


@pytest.fixture(scope="session")
def catalog() -> ToolCatalog:
    return ToolCatalog.load(REPO_ROOT / "catalog" / "tools")


class Harness:
    """Planner handlers over the in-memory repository, with a recording publisher."""

    def __init__(self, catalog: ToolCatalog, rates: CostRates = RATES) -> None:
        self.repo = InMemoryTaskRepository()
        self.published: list[tuple[str, Envelope]] = []
        self.handlers = PlannerHandlers(
            repo=self.repo,
            strategy=PlaybookStrategy(catalog),
            out=EventOutlet(self._publish),
            rates=rates,
            read_only=frozenset({"lookup_order", "get_ticket"}),
            ids=ActionIds(b"planner-test-secret-".ljust(32, b".")),
        )

    async def _publish(self, topic: str, event: Envelope) -> None:
        self.published.append((topic, event))

    def proposals(self) -> list[Any]:
        return [e.data for t, e in self.published if t == "actions.proposed"]

    def outcomes(self) -> list[Any]:
        return [e for t, e in self.published if t == "tasks.outcomes"]

    def last(self) -> Any:
        return self.proposals()[-1]

    async def submit(self, task: Any) -> TaskSubmitted:
        event = TaskSubmitted.build(task, source="test")
        await self.handlers.on_task(event)
        return event

    async def decide(self, proposal: Any, outcome: str, *codes: str, via: str = "policy") -> ActionDecided:
        data = ActionDecidedData(
            action_id=proposal.action_id,
            task_id=proposal.task_id,
            tenant_id=proposal.tenant_id,
            step=proposal.step,
            tool=proposal.tool,
            args=proposal.args,
            action_digest="d",
            outcome=outcome,
            reasons=[Reason(code=c, policy_id="p", message=f"because {c}") for c in codes],
            policy_version="v1",
            latency_ms=1.0,
            via=via,
        )
        event = ActionDecided.build(data, source="test")
        await self.handlers.on_decided(event)
        return event

    async def result(self, proposal: Any, status: str = "succeeded", *, attempts: int = 1, usd: float = 0.0) -> Envelope:
        cls = {"succeeded": ActionSucceeded, "failed": ActionFailed, "unknown": ActionUnknown}[status]
        data = ActionResultData(
            action_id=proposal.action_id,
            task_id=proposal.task_id,
            tenant_id=proposal.tenant_id,
            step=proposal.step,
            tool=proposal.tool,
            status=status,
            result={"ok": True} if status == "succeeded" else None,
            error=None if status == "succeeded" else ErrorInfo(type="boom", message="it broke"),
            attempts=attempts,
            duration_ms=3.0,
            cost=ResultCost(usd=usd),
        )
        event = cls.build(data, source="test")
        await self.handlers.on_result(event)
        return event

    async def approval(
        self, proposal: Any, kind: str, approvers: list[str] | None = None, *, edited_args: dict[str, Any] | None = None
    ) -> Envelope:
        cls = {"requested": ApprovalRequested, "granted": ApprovalGranted, "rejected": ApprovalRejected, "expired": ApprovalExpired}[kind]
        data = ApprovalData(
            approval_id=f"ap-{proposal.action_id}",
            action_id=proposal.action_id,
            task_id=proposal.task_id,
            tenant_id=proposal.tenant_id,
            tool=proposal.tool,
            args=proposal.args,
            action_digest="d",
            approver=(approvers or [None])[0] if kind in ("granted", "rejected") else None,
            approvers=approvers or [],
            edited_args=edited_args,
            expires_at=utcnow(),
        )
        event = cls.build(data, source="test")
        await self.handlers.on_approval(event)
        return event

    async def run_allowed(self, proposal: Any, usd: float = 0.0) -> None:
        await self.decide(proposal, "allow", "low_risk_write_allowed")
        await self.result(proposal, usd=usd)


@pytest.fixture
def harness(catalog: ToolCatalog) -> Harness:
    return Harness(catalog)


@pytest.fixture
def harness_priced(catalog: ToolCatalog) -> Callable[[CostRates], Harness]:
    """A harness at the rates a test wires (the ones a built planner holds)."""
    return lambda rates: Harness(catalog, rates)
