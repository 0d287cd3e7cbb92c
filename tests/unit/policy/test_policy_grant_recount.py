"""The policy service counts a grant's approvers again: names that differ only in case are one person, the requester none."""

from __future__ import annotations

from pathlib import Path

from signers import as_operator
from test_policy_service import Published, approval, proposed, published, refund, service  # noqa: F401  (the fixtures)

from schemas import ApprovalGranted, ControlTenant, ControlTenantData
from servicekit import SigningKey
from services.policy.service import PolicyService


async def test_the_requester_in_another_case_is_not_counted_as_an_approver(
    service: PolicyService,  # noqa: F811
    published: Published,  # noqa: F811
    tmp_path: Path,
) -> None:
    key = SigningKey.load_or_create(tmp_path, "approval")
    await service.on_proposed(proposed("issue_refund", refund(900.0), requested_by="alice@acme.example"))
    escalated = published.on("actions.decided")[-1]
    assert escalated.data.outcome == "escalate"
    grant = approval(
        ApprovalGranted,
        escalated,
        key,
        approver="Alice@ACME.example",
        approvers=["Alice@ACME.example"],
        approver_groups={"Alice@ACME.example": ["finance"]},
    )
    await service.on_approval(grant)
    after = published.on("actions.decided")[-1]
    assert (after.data.outcome, after.data.via) == ("deny", "approval")
    assert "approval_quorum_not_met" in [r.code for r in after.data.reasons]
    assert published.on("actions.authorized") == []


async def test_one_person_in_two_spellings_makes_no_quorum_of_two(
    service: PolicyService,  # noqa: F811
    published: Published,  # noqa: F811
    tmp_path: Path,
) -> None:
    key = SigningKey.load_or_create(tmp_path, "approval")
    two = ControlTenant.build(
        ControlTenantData(
            tenant_id="acme", settings={"required_approvals": {"financial": 2}, "known_payees": ["cus_1001"]}, set_by="admin"
        ),
        source="tidegate/cli",
    )
    await service.on_control(as_operator(two))
    outcomes = []
    for action_id, names in (("a-1", ["bob@acme.example", "Bob@acme.example"]), ("a-2", ["bob@acme.example", "carol@acme.example"])):
        await service.on_proposed(proposed("issue_refund", refund(900.0), action_id=action_id, requested_by="alice@acme.example"))
        escalated = published.on("actions.decided")[-1]
        assert escalated.data.outcome == "escalate", escalated.data.reasons
        grant = approval(
            ApprovalGranted,
            escalated,
            key,
            approval_id=f"ap-{action_id}",
            approver=names[1],
            approvers=names,
            approver_groups={n: ["finance"] for n in names},
        )
        await service.on_approval(grant)
        after = published.on("actions.decided")[-1]
        outcomes.append((after.data.outcome, [r.code for r in after.data.reasons if r.code == "approval_quorum_not_met"]))
    assert outcomes == [("deny", ["approval_quorum_not_met"]), ("allow", [])]
