"""A human's `confirmed_done` on an unknown outcome settles its budget at what the `action.unknown` reported, not the estimate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from policy_at_a_time import policy_at

from schemas import ActionProposed, ActionProposedData, ActionResultData, ActionUnknown, ApprovalData, ApprovalResolved, ResultCost
from servicekit import SigningKey, approval_message
from services.policy import InMemoryPolicyRepository
from services.policy.service import PolicyService
from services.policy.settings import PolicySettings

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
REFUND = {"payee_id": "cus_1001", "amount_usd": 40.0, "order_id": "O-1"}  # estimated at 0.01 USD by the catalog


@pytest.fixture
def service(tmp_path: Path) -> PolicyService:
    return policy_at(NOW, tmp_path, PolicySettings(authorization_ttl_s=60, provenance_wait_s=0))


async def unknown_then_confirmed_done(service: PolicyService, key: SigningKey, action_id: str, reported_usd: float) -> None:
    """An allowed refund ends `action.unknown` having cost `reported_usd`; a human then confirms it happened."""
    proposal = ActionProposedData(
        action_id=action_id, task_id="t-1", tenant_id="acme", step=1, tool="issue_refund", args=REFUND, proposer="tests", mode="autonomous"
    )
    await service.on_proposed(ActionProposed.build(proposal, source="tests"))
    result = ActionResultData(
        action_id=action_id, task_id="t-1", tenant_id="acme", tool="issue_refund", status="unknown", attempts=3, duration_ms=1.0,
        cost=ResultCost(usd=reported_usd),
    )  # fmt: skip
    await service.on_result(ActionUnknown.build(result, source="tests"))
    finding = ApprovalData(
        approval_id=f"fu-{action_id}", action_id=action_id, task_id="t-1", tenant_id="acme", tool="issue_refund", args=REFUND,
        action_digest="d", approver="bob", expires_at=NOW + timedelta(hours=1), decided_at=NOW, key_id=key.key_id,
        resolution="confirmed_done",
    )  # fmt: skip
    signed = finding.model_copy(update={"signature": key.sign(approval_message(ApprovalResolved.model_fields["type"].default, finding))})
    await service.on_approval(ApprovalResolved.build(signed, source="tidegate/approval"))


async def test_confirmed_done_settles_at_the_cost_the_unknown_outcome_reported(service: PolicyService, tmp_path: Path) -> None:
    repo = service.repo
    assert isinstance(repo, InMemoryPolicyRepository)
    await unknown_then_confirmed_done(service, SigningKey.load_or_create(tmp_path, "approval"), "u-1", reported_usd=0.03)
    assert repo.reservations["u-1"][1] == "settled"
    assert repo.spend[("acme", "*")] == pytest.approx(0.03)  # three attempts' cost, as `tidegate costs` counts them
    assert repo.spend[("acme", "t-1")] == pytest.approx(0.03)


async def test_confirmed_done_of_an_unknown_outcome_that_reported_no_cost_settles_at_the_estimate(
    service: PolicyService, tmp_path: Path
) -> None:
    repo = service.repo
    assert isinstance(repo, InMemoryPolicyRepository)
    await unknown_then_confirmed_done(service, SigningKey.load_or_create(tmp_path, "approval"), "u-2", reported_usd=0.0)
    assert repo.spend[("acme", "*")] == pytest.approx(0.01)
