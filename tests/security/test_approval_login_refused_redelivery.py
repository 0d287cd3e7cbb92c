"""A redelivered escalation of a request whose row the approval service's login broke is dead-lettered in its own words.

The attacker holds only `tidegate_approval`'s login and writes a waiting refund's row in the wrong shape (`"required_approvals":
"many"`): refused alone since release 26. The policy's escalation of it comes again (a redelivery, a restart): it was
dead-lettered `action_id_reused` "action id … already has a request of another tenant", sending the on-call engineer to
look for a tenant that does not exist. It now names the tenant's own request, says its row is refused, and what to do.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from approval_harness import StartApproval, read_topic

pytestmark = pytest.mark.integration

WaitFor = Callable[..., Awaitable[Any]]


async def test_a_redelivered_escalation_of_a_refused_row_names_the_tenants_own_request(
    start_approval: StartApproval, approval_login: asyncpg.Connection, wait_for: WaitFor
) -> None:
    h = await start_approval()
    await h.escalate(d := h.decided(args={"payee_id": "cus_mallory", "amount_usd": 90.0, "order_id": "O-1001"}))
    record = await h.request_for(d.action_id, wait_for)
    row = json.loads(await approval_login.fetchval("SELECT record FROM approval.approvals WHERE approval_id = $1", record.approval_id))
    broken = json.dumps(row | {"required_approvals": "many"})
    await approval_login.execute("UPDATE approval.approvals SET record = $2::jsonb WHERE approval_id = $1", record.approval_id, broken)

    try:
        await h.escalate(d)  # the same escalation again

        async def dead_letter() -> Any:
            dead = await read_topic(h.kit.kafka_bootstrap, h.bus.topic("deadletter"), "deadletter")
            return [e.data for e in dead if e.data.service == "approval" and d.action_id in e.data.error]

        [letter] = await wait_for(dead_letter, what="the approval service's dead letter of the redelivered escalation")
        assert letter.code == "action_id_reused"
        assert "another tenant" not in letter.error, f"a refused row of this tenant was said to be another tenant's: {letter.error}"
        assert record.approval_id in letter.error
        assert "row is refused" in letter.error
    finally:  # the broken row is deleted: another test's sweep would read and refuse it every round
        await approval_login.execute("DELETE FROM approval.outbox WHERE approval_id = $1", record.approval_id)
        await approval_login.execute("DELETE FROM approval.approvals WHERE approval_id = $1", record.approval_id)
