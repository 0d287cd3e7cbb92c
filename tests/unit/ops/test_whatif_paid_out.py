"""What-if re-decides a split refund's piece with what its task and its payee had been paid before it, as recorded.

A recorded `cumulative_threshold` escalation (the piece that made the task's, or the payee's, paid-out figure reach the
threshold) re-decided as a lone piece under the threshold would show as a flip to allow under the very pack that escalated it.
"""

from __future__ import annotations

from typing import Any

from schemas import ActionDecidedData, ActionProposedData, Reason, ReasonCode
from servicekit import KitSettings
from tidegate.ops.whatif import evaluate, load_pack

REFUND = {"payee_id": "cus_1001", "amount_usd": 40.0, "order_id": "O-1"}  # under acme's 500 USD threshold alone


def proposal(n: int) -> ActionProposedData:
    return ActionProposedData(
        action_id=f"a-{n}", task_id=f"t-{n}", tenant_id="acme", step=1, tool="issue_refund", args=REFUND,
        proposer="tidegate/planner/playbook", mode="autonomous", confidence=1.0,
    )  # fmt: skip


def escalated(p: ActionProposedData, **facts: Any) -> ActionDecidedData:
    return ActionDecidedData(
        action_id=p.action_id, task_id=p.task_id, tenant_id=p.tenant_id, tool=p.tool, args=p.args, action_digest="d",
        outcome="escalate", reasons=[Reason(code=ReasonCode.CUMULATIVE_THRESHOLD, policy_id="x")], policy_version="v",
        latency_ms=1.0, facts={"payee_is_new": False, "spend_task_usd": 0.0, "spend_tenant_usd": 0.0} | facts,
    )  # fmt: skip


def test_a_split_refunds_escalated_piece_does_not_flip_under_the_same_pack() -> None:
    """One piece escalated on its task's figure (480 + 40 ≥ 500), one on its payee's over 24 hours, in another task."""
    kit = KitSettings()
    proposals = [proposal(0), proposal(1)]
    decisions = [escalated(proposals[0], paid_task_usd=480.0), escalated(proposals[1], paid_payee_usd=480.0)]
    report = evaluate(load_pack(kit.policy_dir, kit.tools_dir), proposals, decisions)
    assert (report.evaluated, report.unchanged, report.flips) == (2, 2, [])


def test_a_fan_outs_escalated_piece_does_not_flip_under_the_same_pack() -> None:
    """Red team F5: a piece escalated on what the tenant paid out over 24 hours without a human (980 + 40 > 1,000)."""
    kit = KitSettings()
    proposals = [proposal(0)]
    report = evaluate(load_pack(kit.policy_dir, kit.tools_dir), proposals, [escalated(proposals[0], paid_tenant_usd=980.0)])
    assert (report.evaluated, report.unchanged, report.flips) == (1, 1, [])


def test_a_piece_paid_nothing_before_it_would_have_been_allowed() -> None:
    """The same escalations recorded with nothing paid before them are re-decided as the lone pieces they then were."""
    kit = KitSettings()
    proposals = [proposal(0)]
    report = evaluate(load_pack(kit.policy_dir, kit.tools_dir), proposals, [escalated(proposals[0])])
    assert [(f.then, f.now, f.now_reasons) for f in report.flips] == [("escalate", "allow", ["within_threshold"])]
