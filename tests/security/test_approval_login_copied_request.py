"""The approval service's database login copies a decided request under a new id, and a second approver grants the copy.

The attacker holds only `tidegate_approval`'s login (attacker7 F2, run live): bob rejects a 900 USD refund; the login
inserts a copy of its row (a new `approval_id`, the action id column changed to pass `UNIQUE (action_id, kind)`, pending,
the policy's genuine signed escalation kept). The copy is shown proven and approvable (nothing binds an escalation to
one request id), cy approves it, and the approval service signs that grant. Before, the policy then authorized the refund
bob had rejected. The policy now records the first answer to each escalation (`policy.answers`) and refuses any other:
the grant is dead-lettered `approval_unauthenticated` naming bob's request, and nothing is authorized.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import pytest
from approval_harness import StartApproval, bearer
from test_approval_login_grants import escalated, outcome, policy  # noqa: F401 (the policy service, as a fixture)

pytestmark = pytest.mark.integration

WaitFor = Callable[..., Awaitable[Any]]
UNDECIDED = {"status": "pending", "decided_by": None, "decided_at": None, "approvers": [], "votes": [], "ballots": {}}
COPY = UNDECIDED | {"approved_via": {}, "approver_groups": {}, "settled_event": None, "comment": None}


async def copy_of(login: asyncpg.Connection, approval_id: str) -> str:
    """What the login does: insert the request's row again under a new id, pending, its kept escalation unchanged."""
    row = json.loads(await login.fetchval("SELECT record FROM approval.approvals WHERE approval_id = $1", approval_id))
    copy_id = f"{approval_id}c"
    await login.execute(
        "INSERT INTO approval.approvals (approval_id, kind, action_id, task_id, tenant_id, tool, status, version, created_at,"
        " expires_at, record) SELECT $2, kind, action_id || 'x', task_id, tenant_id, tool, 'pending', ($3::jsonb->>'version')::int,"
        " created_at, expires_at, $3::jsonb FROM approval.approvals WHERE approval_id = $1",
        approval_id,
        copy_id,
        json.dumps(row | COPY | {"approval_id": copy_id}),
    )
    return copy_id


async def forget(login: asyncpg.Connection, approval_id: str) -> None:
    for table in ("outbox", "webhook_deliveries", "approvals"):
        await login.execute(f"DELETE FROM approval.{table} WHERE approval_id = $1", approval_id)


async def test_a_copy_of_a_rejected_request_granted_by_another_approver_authorizes_nothing(
    start_approval: StartApproval,
    policy: Any,  # noqa: F811
    http: httpx.AsyncClient,
    approval_login: asyncpg.Connection,
    wait_for: WaitFor,
) -> None:
    h = await start_approval()
    h.tenant = "acme"
    bob = await h.token("bob@acme.example", ["finance"], tenant="acme")
    cy = await h.token("cy@acme.example", ["finance"], tenant="acme")
    record = await escalated(h, wait_for)
    no = await http.post(
        f"{h.url}/api/v1/approvals/{record.approval_id}/reject",
        json={"action_digest": record.action_digest, "comment": "wrong payee"},
        headers=bearer(bob),
    )
    assert no.json()["status"] == "rejected", no.text
    assert await h.all_published()

    async def rejection_taken() -> bool:  # the policy took bob's answer (the copy's grant may go to another partition)
        answers = "SELECT answer FROM policy.answers WHERE action_id = $1"
        return await policy.policy.repo._pool.fetchval(answers, record.action_id) == "rejected"

    await wait_for(rejection_taken, what="the policy's record of bob's rejection")
    copy_id = await copy_of(approval_login, record.approval_id)
    try:
        url = f"{h.url}/api/v1/approvals/{copy_id}"
        yes = await http.post(f"{url}/approve", json={"action_digest": record.action_digest}, headers=bearer(cy))
        # The approval service signs the copy's grant (it cannot tell the copy from the request): the policy must refuse it.
        assert yes.json()["status"] == "granted", yes.text
        authorized, decided, dead = await outcome(h, record.action_id, wait_for)
        assert authorized == [], "the refund bob rejected was authorized through a copy of his request"
        assert decided == []
        [refused] = dead
        assert refused.data.code == "approval_unauthenticated"
        assert f"already rejected by request {record.approval_id}" in refused.data.error
    finally:
        await forget(approval_login, copy_id)
