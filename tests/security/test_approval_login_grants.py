"""The approval service's database login tries to turn a pending approval into a grant the executor runs (bindattack).

The attacker holds only `tidegate_approval`'s login (no key, no Kafka principal). Against the real approval and policy
services, the real broker and database, it edits the pending request's row before a genuine approver acts (or acts with no
approver at all): another call under a digest it recomputed, a requester who then approves their own call, a risk class
whose group the approver holds, an outbox entry of its own that the service publishes as stored. The approval service
refuses an approve of a row whose call or requesters are not the policy's signed escalation (`request_unproven`,
attacker3 F1); what it still signs as its row says (the risk class, the outbox) the policy checks against the escalation
it made and signed itself, so each ends with nothing authorized: refused (dead-lettered with its reason) or denied with
its reason, never silently run.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import pytest
from approval_harness import ApprovalHarness, StartApproval, bearer, read_topic

from schemas import ActionProposed, ActionProposedData, ApprovalData, ApprovalGranted, ProposalCost
from schemas.signed import action_digest
from servicekit import KitSettings
from services.policy.app import build as build_policy

pytestmark = pytest.mark.integration

WaitFor = Callable[..., Awaitable[Any]]
ARGS = {"payee_id": "cus_1001", "amount_usd": 900.0, "order_id": "O-1001"}
ALICE = "alice@acme.example"


@pytest.fixture
async def policy(kit: KitSettings) -> AsyncIterator[Any]:
    service = build_policy(kit)
    await service.start()
    yield service
    await service.stop()


async def escalated(h: ApprovalHarness, wait_for: WaitFor) -> Any:
    """Alice's agent proposes a 900 USD refund; the policy escalates it; the approval service opens the request."""
    action_id, task_id = f"a-{uuid.uuid4().hex[:10]}", f"t-{uuid.uuid4().hex[:10]}"
    proposal = ActionProposedData(
        action_id=action_id, task_id=task_id, tenant_id="acme", step=1, tool="issue_refund", args=ARGS, rationale="duplicate charge",
        proposer="tests/security", cost=ProposalCost(usd=0.0), mode="autonomous", requested_by=ALICE,
    )  # fmt: skip
    await h.publish("actions.proposed", ActionProposed.build(proposal, source="tests/security"))
    return await h.request_for(action_id, wait_for)


async def rewrite(db: asyncpg.Connection, approval_id: str, **fields: Any) -> None:
    """What the login does: set fields of the request's stored record."""
    row = json.loads(await db.fetchval("SELECT record FROM approval.approvals WHERE approval_id = $1", approval_id))
    await db.execute("UPDATE approval.approvals SET record = $2::jsonb WHERE approval_id = $1", approval_id, json.dumps(row | fields))


async def outcome(h: ApprovalHarness, action_id: str, wait_for: WaitFor) -> tuple[list[Any], list[Any], list[Any]]:
    """What became of the action: its authorizations, the policy's decisions after the grant, the policy's dead letters of it."""

    async def settled() -> tuple[list[Any], list[Any], list[Any]] | None:
        authorized = [e for e in await read_topic(h.kit.kafka_bootstrap, h.bus.topic("actions.authorized"), "actions.authorized")]
        decided = [e for e in await read_topic(h.kit.kafka_bootstrap, h.bus.topic("actions.decided"), "actions.decided")]
        dead = [e for e in await read_topic(h.kit.kafka_bootstrap, h.bus.topic("deadletter"), "deadletter")]
        mine = (
            [e for e in authorized if e.data.action_id == action_id],
            [e for e in decided if e.data.action_id == action_id and e.data.outcome != "escalate"],
            [e for e in dead if e.data.service == "policy" and action_id in e.data.error + str(e.data.model_dump())],
        )
        return mine if mine[0] or mine[1] or mine[2] else None

    return await wait_for(settled, timeout=30, what=f"the policy's answer to the grant of {action_id}")


async def nothing_granted(h: ApprovalHarness, record: Any) -> None:
    """No grant of `record` was published, and so nothing authorized its action."""
    granted = [e for e in await h.approvals() if e.data.approval_id == record.approval_id and e.type == "tidegate.approval.granted"]
    assert granted == []
    authorized = await read_topic(h.kit.kafka_bootstrap, h.bus.topic("actions.authorized"), "actions.authorized")
    assert [e for e in authorized if e.data.action_id == record.action_id] == []


async def test_another_call_under_a_digest_the_login_recomputed_is_never_granted(
    start_approval: StartApproval, policy: Any, http: httpx.AsyncClient, approval_login: asyncpg.Connection, wait_for: WaitFor
) -> None:
    h = await start_approval()
    h.tenant = "acme"
    bob = await h.token("bob@acme.example", ["finance"], tenant="acme")
    record = await escalated(h, wait_for)
    more = ARGS | {"amount_usd": 9000.0, "payee_id": "cus_mallory"}
    await rewrite(approval_login, record.approval_id, args=more, action_digest=action_digest("acme", "issue_refund", more))
    answer = await http.post(
        f"{h.url}/api/v1/approvals/{record.approval_id}/approve",
        json={"action_digest": action_digest("acme", "issue_refund", more)},
        headers=bearer(bob),
    )
    # Its row is not the policy's signed escalation (attacker3 F1): refused here, before the policy's own digest check
    # (which dead-lettered such a grant `digest_mismatch` when the approval service still signed what its row said).
    assert (answer.status_code, answer.json()["detail"]["code"]) == (409, "request_unproven"), answer.text
    await nothing_granted(h, record)


async def test_a_requester_the_login_unnames_is_still_not_an_approver(
    start_approval: StartApproval, policy: Any, http: httpx.AsyncClient, approval_login: asyncpg.Connection, wait_for: WaitFor
) -> None:
    h = await start_approval()
    h.tenant = "acme"
    alice = await h.token(ALICE, ["finance"], tenant="acme")
    record = await escalated(h, wait_for)
    await rewrite(approval_login, record.approval_id, requested_by="nobody@acme.example", task_requested_by=None)
    answer = await http.post(
        f"{h.url}/api/v1/approvals/{record.approval_id}/approve", json={"action_digest": record.action_digest}, headers=bearer(alice)
    )
    # The requesters are the policy's signed escalation's (attacker3 F1): refused here, before the policy's own count
    # (which denied such a grant `approval_quorum_not_met` when four eyes was read from the row alone).
    assert (answer.status_code, answer.json()["detail"]["code"]) == (409, "request_unproven"), answer.text
    await nothing_granted(h, record)


async def test_a_risk_class_the_login_lowers_lets_the_wrong_group_approve_and_the_policy_denies_it(
    start_approval: StartApproval, policy: Any, http: httpx.AsyncClient, approval_login: asyncpg.Connection, wait_for: WaitFor
) -> None:
    h = await start_approval()
    h.tenant = "acme"
    sam = await h.token("sam@acme.example", ["support"], tenant="acme")  # not in finance: may not approve a refund
    record = await escalated(h, wait_for)
    await rewrite(approval_login, record.approval_id, risk="write_low")
    answer = await http.post(
        f"{h.url}/api/v1/approvals/{record.approval_id}/approve", json={"action_digest": record.action_digest}, headers=bearer(sam)
    )
    assert (answer.status_code, answer.json()["status"]) == (200, "granted"), answer.text
    authorized, decided, dead = await outcome(h, record.action_id, wait_for)
    assert authorized == []
    assert dead == []
    assert [(d.data.outcome, [r.code for r in d.data.reasons]) for d in decided] == [("deny", ["approval_quorum_not_met"])]


async def test_a_grant_the_login_writes_into_the_outbox_is_published_as_stored_and_dead_lettered(
    start_approval: StartApproval, policy: Any, approval_login: asyncpg.Connection, wait_for: WaitFor
) -> None:
    h = await start_approval()
    h.tenant = "acme"
    record = await escalated(h, wait_for)
    data = ApprovalData(
        approval_id=record.approval_id, action_id=record.action_id, task_id=record.task_id, tenant_id="acme", tool="issue_refund",
        args=ARGS, action_digest=record.action_digest, approver="bob@acme.example", approvers=["bob@acme.example"],
        approver_groups={"bob@acme.example": ["finance"]}, expires_at=record.expires_at, decided_at=record.expires_at,
    )  # fmt: skip
    forged = ApprovalGranted.build(data, source="tidegate/approval")
    await approval_login.execute(
        "INSERT INTO approval.outbox (event_id, approval_id, topic, payload, created_at) "
        "VALUES ($1, $2, 'approvals', $3, now() - interval '1 hour')",
        forged.id, record.approval_id, forged.model_dump_json(),
    )  # fmt: skip
    await wait_for(h.all_published, what="the outbox entry published")
    authorized, decided, dead = await outcome(h, record.action_id, wait_for)
    assert authorized == []
    assert decided == []
    assert dead
    assert {d.data.code for d in dead} <= {"signature_missing", "signature_invalid", "approval_unauthenticated"}
