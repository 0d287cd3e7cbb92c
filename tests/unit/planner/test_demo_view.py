"""The demo's view of a task, folded from events that may arrive in any order."""

from __future__ import annotations

from schemas import (
    ActionDecided,
    ActionDecidedData,
    ActionProposed,
    ActionProposedData,
    ApprovalData,
    ApprovalRequested,
    Reason,
    utcnow,
)
from tidegate.demo.run import TaskView
from tidegate.demo.tickets import DEMO_CASES, demo_tasks


def proposed(step: int, tool: str, tainted: list[str] | None = None) -> ActionProposed:
    data = ActionProposedData(
        action_id=f"t:{step}",
        task_id="t",
        tenant_id="acme",
        step=step,
        tool=tool,
        args={"x": 1},
        proposer="tidegate/planner/playbook",
        tainted_args=tainted or [],
    )
    return ActionProposed.build(data, source="test")


def decided(step: int, tool: str, outcome: str, code: str) -> ActionDecided:
    data = ActionDecidedData(
        action_id=f"t:{step}",
        task_id="t",
        tenant_id="acme",
        step=step,
        tool=tool,
        args={"x": 1},
        action_digest="d",
        outcome=outcome,
        reasons=[Reason(code=code, policy_id="p")],
        policy_version="v",
        latency_ms=1,
    )
    return ActionDecided.build(data, source="test")


def test_a_decision_before_its_proposal_is_kept_and_an_escalation_settles_once_requested():
    view = TaskView("t", "T-1002", "refund over the threshold", "escalated")
    view.apply("actions.decided", decided(1, "issue_refund", "escalate", "needs_human_approval"))
    view.apply("actions.proposed", proposed(1, "issue_refund", ["payee_id"]))
    action = view.actions["t:1"]
    assert (action.decision, action.reasons, action.tainted) == ("escalate", ["needs_human_approval"], ["payee_id"])
    assert view.status == "waiting on a human"
    assert not view.settled  # the approval request (and its id) is not there yet
    view.apply(
        "approvals",
        ApprovalRequested.build(
            ApprovalData(
                approval_id="ap-1",
                action_id="t:1",
                task_id="t",
                tenant_id="acme",
                tool="issue_refund",
                args={},
                action_digest="d",
                expires_at=utcnow(),
            ),
            source="test",
        ),
    )
    assert view.settled
    assert view.waiting_on_human.approval_id == "ap-1"


def test_demo_tasks_cover_every_case_with_fresh_orders_where_asked():
    tasks = demo_tasks("acme", run_id="r1", orders={"T-1001": "O-500199"})
    assert [t.input["ticket_id"] for t in tasks] == [c.ticket_id for c in DEMO_CASES]
    assert {t.mode for t in tasks} == {"autonomous"}
    assert all(t.untrusted == ["subject", "body"] for t in tasks)
    first = tasks[0]
    assert (first.input["order_id"], first.input["amount_usd"], first.input["payee_id"]) == ("O-500199", 42.5, "cus_1001")
    assert len(next(t for t in tasks if t.input["ticket_id"] == "T-1006").input["recipients"]) == 200


def test_a_tenants_demo_tasks_are_asked_by_that_tenants_own_person():
    # `explain` of globex's demo tasks said "requested by demo@acme.example": another tenant's person (auditor1).
    assert {t.requested_by for t in demo_tasks("acme", run_id="r1")} == {"demo@acme.example"}
    assert {(t.tenant_id, t.requested_by) for t in demo_tasks("globex", run_id="r1")} == {("globex", "demo@globex.example")}
