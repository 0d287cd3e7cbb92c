"""The demo systems of record on the real database: seeding is idempotent, refunds happen once per key."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from servicekit.toolcontract import ToolContext, ToolError
from systems.payments import issue_refund, lookup_order
from systems.seed import TICKETS, seed_demo


async def test_seeding_twice_inserts_nothing_the_second_time(pool: asyncpg.Pool) -> None:
    tenant = f"seed-{uuid.uuid4().hex[:8]}"
    first = await seed_demo(pool, [tenant])
    again = await seed_demo(pool, [tenant])
    assert first["tickets"] == len(TICKETS)
    assert first["customers"] >= 200
    assert set(again.values()) == {0}
    subject = await pool.fetchval("SELECT subject FROM helpdesk.tickets WHERE tenant_id = $1 AND ticket_id = 'T-1001'", tenant)
    assert subject == "Charged twice for my renewal"


async def test_a_refund_key_pays_once_even_when_called_concurrently(pool: asyncpg.Pool, tenant: str) -> None:
    ctx = ToolContext(pool=pool, tenant_id=tenant, action_id="a-1", idempotency_key="a-1")
    args = {"payee_id": "cus_1002", "amount_usd": 899.0, "order_id": "O-5002"}  # the whole order: a second payment could not fit
    answers = await asyncio.gather(*(issue_refund(ctx, args) for _ in range(5)))
    assert len({a["refund_id"] for a in answers}) == 1
    assert await pool.fetchval("SELECT count(*) FROM payments.refunds WHERE tenant_id = $1", tenant) == 1
    with pytest.raises(ToolError) as reused:
        await issue_refund(ctx, {**args, "amount_usd": 1.0})
    assert reused.value.type == "idempotency_key_reused"
    order = await lookup_order(ctx, {"order_id": "O-5002"})
    assert (order["refunded_usd"], order["status"]) == (899.0, "refunded")


async def test_refunds_never_exceed_the_order_nor_go_to_a_payee_not_on_file(pool: asyncpg.Pool, tenant: str) -> None:
    def ctx(key: str) -> ToolContext:
        return ToolContext(pool=pool, tenant_id=tenant, action_id=key, idempotency_key=key)

    await issue_refund(ctx("k1"), {"payee_id": "cus_1001", "amount_usd": 40.0, "order_id": "O-5001"})
    with pytest.raises(ToolError) as over:
        await issue_refund(ctx("k2"), {"payee_id": "cus_1001", "amount_usd": 2.51, "order_id": "O-5001"})
    with pytest.raises(ToolError) as stranger:
        await issue_refund(ctx("k3"), {"payee_id": "attacker_payout_99", "amount_usd": 1.0, "order_id": "O-5005"})
    assert (over.value.type, stranger.value.type) == ("refund_exceeds_order", "unknown_payee")
    assert await pool.fetchval("SELECT count(*) FROM payments.refunds WHERE tenant_id = $1", tenant) == 1
