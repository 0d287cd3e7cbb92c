"""On the real broker and database: a refund of a charge whose read failed (Stripe down) escalates `record_read_failed` with the error."""

from __future__ import annotations

import uuid

import asyncpg

from schemas import ActionFailed, ActionResultData, ErrorInfo


async def test_a_refund_after_its_charge_read_failed_says_the_read_failed_and_why(
    policy, collector, producer, kit, wait_for, one, make_proposal
) -> None:
    task_id = f"t-{uuid.uuid4().hex[:8]}"
    read = make_proposal("stripe_get_charge", {"charge_id": "ch_500"}, task_id=task_id)
    await producer.send("actions.proposed", read)
    assert (await wait_for(lambda: one(collector.decided(read.data.action_id)), what="read decision")).data.outcome == "allow"
    error = ErrorInfo(type="http_500", message="Stripe: Invalid response body from API: Internal Server Error", retryable=True)
    result = ActionResultData(
        action_id=read.data.action_id, task_id=task_id, tenant_id="acme", tool="stripe_get_charge", status="failed", error=error,
        attempts=3, duration_ms=2.0,
    )  # fmt: skip
    await producer.send("actions.results", ActionFailed.build(result, source="tidegate/executor"))

    async def stored() -> str | None:
        conn = await asyncpg.connect(kit.database_url)
        try:
            return await conn.fetchval("SELECT error FROM policy.call_outcomes WHERE action_id = $1", read.data.action_id)
        finally:
            await conn.close()

    why = await wait_for(stored, what="the failed read's error stored")
    assert why == "http_500: Stripe: Invalid response body from API: Internal Server Error after 3 attempts"

    refund = make_proposal("stripe_refund", {"charge_id": "ch_500", "amount_usd": 42.5, "payee_id": "cus_1001"}, task_id=task_id)
    await producer.send("actions.proposed", refund)
    decided = (await wait_for(lambda: one(collector.decided(refund.data.action_id)), what="refund decision")).data
    assert (decided.outcome, [r.code.value for r in decided.reasons]) == ("escalate", ["record_read_failed"])
    assert f"the task's read of ch_500 failed ({why})" in decided.reasons[0].message
    assert decided.facts["record_read_failed"]["error"] == why
