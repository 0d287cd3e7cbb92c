"""A grant by approvers outside the groups the tenant's settings require authorizes nothing.

The approval service is misconfigured (its groups file lets `support` approve money, as a compromised or
careless insider would set it) and a support approver grants a refund over plain HTTP. The approval
service signs that grant, genuinely; the policy service still refuses it, because the tenant's
settings (the default pack: `approver_groups.financial: [finance, finance-leads]`) count only finance
approvers toward a refund's quorum. A finance approver's grant of the same kind of call runs.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
from approval_harness import ApprovalHarness, StartApproval, read_topic

from schemas import ActionProposed, ActionProposedData, ProposalCost
from services.policy.app import build as build_policy

LAX_GROUPS = """
default:
  risk_groups: {financial: [finance, support], unknown: [security]}
"""


async def propose_refund(h: ApprovalHarness) -> str:
    action_id = f"a-{uuid.uuid4().hex[:10]}"
    proposal = ActionProposedData(
        action_id=action_id,
        task_id=f"t-{uuid.uuid4().hex[:10]}",
        tenant_id="acme",
        step=1,
        tool="issue_refund",
        args={"payee_id": "cus_1001", "amount_usd": 900.0, "order_id": "O-1001"},
        rationale="duplicate charge",
        proposer="tests/security",
        cost=ProposalCost(usd=0.0),
        mode="autonomous",
        requested_by="alice@acme.example",
    )
    await h.publish("actions.proposed", ActionProposed.build(proposal, source="tests/security"))
    return action_id


async def test_a_grant_by_approvers_of_the_wrong_group_is_refused_by_the_policy_service(
    start_approval: StartApproval, http: httpx.AsyncClient, wait_for: Any, tmp_path: Path
) -> None:
    groups = tmp_path / "groups.yaml"
    groups.write_text(LAX_GROUPS)
    h = await start_approval(groups_file=groups)
    h.tenant = "acme"  # the default pack's acme: refunds over 500 USD escalate; finance approves money
    policy = build_policy(h.kit)
    await policy.start()
    try:
        sam = await h.token("sam@acme.example", ["support"], tenant="acme")
        bob = await h.token("bob@acme.example", ["finance"], tenant="acme")

        async def decisions(action_id: str) -> list[Any]:
            events = await read_topic(h.kit.kafka_bootstrap, h.bus.topic("actions.decided"), "actions.decided")
            return [e for e in events if e.data.action_id == action_id and e.data.via == "approval"]

        async def authorized(action_id: str) -> list[Any]:
            events = await read_topic(h.kit.kafka_bootstrap, h.bus.topic("actions.authorized"), "actions.authorized")
            return [e for e in events if e.data.action_id == action_id]

        outcomes = {}
        for token, name in ((sam, "support"), (bob, "finance")):
            action_id = await propose_refund(h)
            record = await h.request_for(action_id, wait_for)
            answer = await http.post(
                f"{h.url}/api/v1/approvals/{record.approval_id}/approve",
                json={"action_digest": record.action_digest},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert answer.status_code == 200, answer.text  # the misconfigured approval service accepts both
            (decided,) = await wait_for(lambda a=action_id: decisions(a), timeout=30, what=f"the decision on the {name} grant")
            outcomes[name] = (decided.data.outcome, [r.code for r in decided.data.reasons], action_id)

        assert outcomes["support"][:2] == ("deny", ["approval_quorum_not_met"])
        assert outcomes["finance"][0] == "allow"
        await wait_for(lambda: authorized(outcomes["finance"][2]), timeout=30, what="the finance grant's authorization")
        assert await authorized(outcomes["support"][2]) == []  # nothing the executor could run
    finally:
        await policy.stop()
