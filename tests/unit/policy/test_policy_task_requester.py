"""Four eyes binds the task's requester, not only the proposal's: the policy names both and counts neither as an approver.

As an outside review found (security5 F3): Bob submitted a task (signed by his client key), an outside agent with its own
client key proposed a 650 USD refund in it, and the escalation named the agent as its requester (a proposal names its
signer); Bob approved his own task's refund, and the policy authorized it. The policy now names the requester it learned
from the task's signed request beside the proposal's, and leaves both out of a grant's approvers when it decides again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from test_policy_service import Published, approval, proposed, published, refund, service  # noqa: F401  (the fixtures)

from schemas import ApprovalGranted, TaskSubmitted, TaskSubmittedData
from servicekit import SigningKey
from services.policy.service import PolicyService

BOB, AGENT = "Bob@Acme.example", "agent@acme.example"


async def _submit(svc: PolicyService, requested_by: str = BOB, task_id: str = "t-1") -> None:
    request = TaskSubmittedData(
        task_id=task_id, tenant_id="acme", workflow="support_triage", input={"ticket_id": "T-1002"}, requested_by=requested_by,
        mode="autonomous", planner="external:bobs-agent",
    )  # fmt: skip
    await svc.on_tasks([TaskSubmitted.build(request, source="tidegate/cli")])


async def _escalated(svc: PolicyService, out: Published, action_id: str = "a-1") -> Any:
    """The outside agent's 650 USD refund in task t-1, as its own key signs it: `requested_by` is the agent."""
    await svc.on_proposed(proposed("issue_refund", refund(650.0, "cus_1002"), action_id=action_id, requested_by=AGENT))
    escalated = out.on("actions.decided")[-1]
    assert escalated.data.outcome == "escalate", escalated.data.reasons
    return escalated


async def _granted_by(svc: PolicyService, out: Published, escalated: Any, tmp_path: Path, approver: str) -> Any:
    key = SigningKey.load_or_create(tmp_path, "approval")
    grant = approval(ApprovalGranted, escalated, key, approver=approver, approvers=[approver], approver_groups={approver: ["finance"]})
    await svc.on_approval(grant)
    return out.on("actions.decided")[-1].data


async def test_the_escalation_names_the_tasks_signed_requester_beside_the_agent(
    service: PolicyService,  # noqa: F811
    published: Published,  # noqa: F811
) -> None:
    await _submit(service)
    escalated = await _escalated(service, published)
    assert (escalated.data.requested_by, escalated.data.task_requested_by) == (AGENT, BOB)


async def test_bob_granting_his_own_tasks_refund_is_not_counted_and_nothing_runs(
    service: PolicyService,  # noqa: F811
    published: Published,  # noqa: F811
    tmp_path: Path,
) -> None:
    await _submit(service)
    escalated = await _escalated(service, published)
    after = await _granted_by(service, published, escalated, tmp_path, "bob@acme.EXAMPLE")  # Bob, in another spelling
    assert (after.outcome, after.via) == ("deny", "approval")
    assert "approval_quorum_not_met" in [r.code for r in after.reasons]
    assert after.task_requested_by == BOB
    assert published.on("actions.authorized") == []


async def test_another_finance_approver_still_grants_it(
    service: PolicyService,  # noqa: F811
    published: Published,  # noqa: F811
    tmp_path: Path,
) -> None:
    await _submit(service)
    escalated = await _escalated(service, published)
    after = await _granted_by(service, published, escalated, tmp_path, "carol@acme.example")
    assert (after.outcome, after.via) == ("allow", "approval")
    assert len(published.on("actions.authorized")) == 1


async def test_a_task_learned_after_its_escalation_still_binds_the_grant(
    service: PolicyService,  # noqa: F811
    published: Published,  # noqa: F811
    tmp_path: Path,
) -> None:
    # The outside agent's proposal does not wait for its task: the escalation names the agent alone, the policy learns
    # Bob's request later, and decides Bob's grant with what it learned by then.
    escalated = await _escalated(service, published)
    assert escalated.data.task_requested_by is None
    await _submit(service)
    after = await _granted_by(service, published, escalated, tmp_path, BOB)
    assert (after.outcome, after.task_requested_by) == ("deny", BOB)
    assert published.on("actions.authorized") == []


async def test_a_task_nobody_submitted_keeps_the_proposals_requester_only(
    service: PolicyService,  # noqa: F811
    published: Published,  # noqa: F811
    tmp_path: Path,
) -> None:
    escalated = await _escalated(service, published)
    assert (escalated.data.requested_by, escalated.data.task_requested_by) == (AGENT, None)
    after = await _granted_by(service, published, escalated, tmp_path, BOB)  # nobody named Bob: his grant counts, as before
    assert after.outcome == "allow"


async def test_a_second_request_of_the_task_names_nobody_new(
    service: PolicyService,  # noqa: F811
    published: Published,  # noqa: F811
) -> None:
    await _submit(service)
    await _submit(service, requested_by="carol@acme.example")  # the task is Bob's, as the planner keeps the first request
    escalated = await _escalated(service, published)
    assert escalated.data.task_requested_by == BOB
