"""What-if keeps the tenant's spend cap that held then (`facts.tenant_budget_usd`), as it keeps a kill switch."""

from __future__ import annotations

from typing import Any

from schemas import ActionDecidedData, ActionProposedData, Reason, ReasonCode
from servicekit import KitSettings
from tidegate.ops.whatif import evaluate, load_pack

REFUND = {"payee_id": "cus_1001", "amount_usd": 40.0, "order_id": "O-1"}  # estimated at 0.01 USD, within acme's threshold


def proposal(n: int) -> ActionProposedData:
    return ActionProposedData(
        action_id=f"a-{n}", task_id=f"t-{n}", tenant_id="acme", step=1, tool="issue_refund", args=REFUND,
        proposer="tidegate/planner/playbook", mode="autonomous", confidence=1.0,
    )  # fmt: skip


def decided(p: ActionProposedData, outcome: str, code: str, **facts: Any) -> ActionDecidedData:
    return ActionDecidedData(
        action_id=p.action_id, task_id=p.task_id, tenant_id=p.tenant_id, tool=p.tool, args=p.args, action_digest="d",
        outcome=outcome, reasons=[Reason(code=ReasonCode(code), policy_id="x")], policy_version="v", latency_ms=1.0,  # type: ignore[arg-type]
        facts={"payee_is_new": False, "spend_task_usd": 0.0, "spend_tenant_usd": 0.015} | facts,
    )  # fmt: skip


def test_a_denial_under_an_operators_cap_since_raised_does_not_flip_under_the_same_pack() -> None:
    """`tidegate budget set acme 0.019`, refunds denied, the cap raised again: the live pack flips none of them."""
    kit = KitSettings()
    proposals = [proposal(n) for n in range(3)]
    decisions = [decided(p, "deny", "budget_exceeded", tenant_budget_usd=0.019) for p in proposals]
    report = evaluate(load_pack(kit.policy_dir, kit.tools_dir), proposals, decisions)
    assert (report.evaluated, report.unchanged, report.flips) == (3, 3, [])


def test_an_allow_under_a_recorded_cap_stays_an_allow_and_a_bad_cap_is_skipped() -> None:
    kit = KitSettings()
    proposals = [proposal(n) for n in range(3)]
    decisions = [
        decided(proposals[0], "allow", "within_threshold", tenant_budget_usd=50),
        decided(proposals[1], "allow", "within_threshold", tenant_budget_usd=None),  # no cap then
        decided(proposals[2], "allow", "within_threshold", tenant_budget_usd="lots"),
    ]
    report = evaluate(load_pack(kit.policy_dir, kit.tools_dir), proposals, decisions)
    assert (report.evaluated, report.unchanged, report.flips) == (2, 2, [])
    assert report.skipped.counts == {"not_decidable": 1}
