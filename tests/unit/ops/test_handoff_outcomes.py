"""A task completed with a refused action is `completed_with_handoff` in `costs` and the metrics; expiries are not rejections."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fake_producer import KeepingProducer
from prometheus_client import REGISTRY

import schemas as s
from servicekit import Bus
from servicekit.costs import ReviewPrice
from servicekit.task_outcomes import outcome_of
from tidegate.ops.costs import cost_report

NOW = datetime(2026, 12, 5, 5, 20, tzinfo=UTC)


def _outcome(task: str, status: str, total: float, **counts: int) -> s.Envelope:
    data = s.TaskOutcomeData(
        task_id=task, tenant_id="acme", workflow="support_triage", status=status, summary="", duration_ms=1,  # type: ignore[arg-type]
        counts=s.ActionCounts(**counts), cost=s.TaskCost(total=total),
    )  # fmt: skip
    return (s.TaskCompleted if status == "completed" else s.TaskFailed).build(data, source="tidegate/planner")


def _approval(kind: type[s.Envelope], action: str, approvers: list[str]) -> s.Envelope:
    data = s.ApprovalData(
        approval_id=f"ap-{action}", action_id=action, task_id="t2", tenant_id="acme", tool="issue_refund", args={}, action_digest="d",
        approvers=approvers, expires_at=NOW,
    )  # fmt: skip
    return kind.build(data, source="tidegate/approval")  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("status", "counts", "expected"),
    [
        ("completed", {"succeeded": 5}, "completed"),
        ("completed", {"succeeded": 4, "expired": 1}, "completed_with_handoff"),
        ("completed", {"succeeded": 4, "rejected": 1}, "completed_with_handoff"),
        ("completed", {"succeeded": 4, "denied": 1}, "completed_with_handoff"),
        ("failed", {"rejected": 1}, "failed"),
    ],
)
def test_the_outcome_names_a_hand_off(status: str, counts: dict[str, int], expected: str) -> None:
    assert outcome_of(status, s.ActionCounts(**counts)) == expected


def test_costs_count_hand_offs_apart_and_name_expiries() -> None:
    proposals = [
        s.ActionProposed.build(
            s.ActionProposedData(action_id=a, task_id="t2", tenant_id="acme", step=4, tool="issue_refund", args={}, proposer="p",
                                 cost=s.ProposalCost(usd=0.01)),
            source="tidegate/planner",
        )
        for a in ("x", "y")
    ]  # fmt: skip
    events = [
        _outcome("t1", "completed", 0.1, succeeded=5),
        _outcome("t2", "completed", 0.3, succeeded=4, expired=1),
        _outcome("t3", "completed", 0.5, succeeded=4, rejected=1),
        *proposals,
        _approval(s.ApprovalExpired, "x", []),
        _approval(s.ApprovalRejected, "y", ["bob@acme.example"]),
    ]
    (g,) = cost_report(events, by="workflow", rate=ReviewPrice(6, 60)).as_dict()["groups"]
    assert (g["completed"], g["completed_with_handoff"], g["failed"]) == (1, 2, 0)
    assert g["cost_per_completed_p50_usd"] == pytest.approx(0.1)  # the refunds that never happened are not "completed" outcomes
    assert g["completed_with_handoff_total_usd"] == pytest.approx(0.8)
    assert (g["rejected_proposals"], g["rejected_usd"]) == (1, pytest.approx(6.01))  # bob's rejection, with his review time
    assert (g["expired_proposals"], g["expired_usd"]) == (1, pytest.approx(0.01))  # nobody decided: no review, not a rejection


async def test_the_outcome_metric_labels_a_hand_off() -> None:
    event = _outcome("t-h", "completed", 0.2, succeeded=4, rejected=1)
    event = event.model_copy(update={"data": event.data.model_copy(update={"tenant_id": "m-handoff"})})
    await Bus(KeepingProducer(), "planner", "unused:1", "p.").publish("tasks.outcomes", event)
    labels = {"tenant": "m-handoff", "workflow": "support_triage"}
    assert REGISTRY.get_sample_value("tidegate_task_outcomes_total", {**labels, "status": "completed_with_handoff"}) == 1
    assert REGISTRY.get_sample_value("tidegate_task_outcomes_total", {**labels, "status": "completed"}) is None
