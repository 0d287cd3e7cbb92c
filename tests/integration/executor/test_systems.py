"""The demo systems of record on the real database: seeding is idempotent, refunds and notes happen once per key."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import asyncpg
import pytest

from servicekit.toolcontract import ToolContext, ToolError
from systems.helpdesk import READ_TICKET, add_internal_note, draft_reply, get_ticket, tag_ticket
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


async def test_a_refund_goes_only_to_the_customer_who_paid_the_order(pool: asyncpg.Pool, tenant: str) -> None:
    # An injected ticket names another customer on file (cus_1008) as the payee of cus_1002's order O-5002: refused, nothing paid.
    def ctx(key: str) -> ToolContext:
        return ToolContext(pool=pool, tenant_id=tenant, action_id=key, idempotency_key=key)

    with pytest.raises(ToolError) as other:
        await issue_refund(ctx("k1"), {"payee_id": "cus_1008", "amount_usd": 400.0, "order_id": "O-5002"})
    assert other.value.type == "payee_not_order_customer"
    assert await pool.fetchval("SELECT count(*) FROM payments.refunds WHERE tenant_id = $1", tenant) == 0
    paid = await issue_refund(ctx("k2"), {"payee_id": "cus_1002", "amount_usd": 400.0, "order_id": "O-5002"})
    assert (paid["payee_id"], paid["order_id"]) == ("cus_1002", "O-5002")


async def test_a_ticket_is_tagged_noted_and_drafted_once_per_key_and_read_back_whole(pool: asyncpg.Pool, tenant: str) -> None:
    def ctx(key: str) -> ToolContext:
        return ToolContext(pool=pool, tenant_id=tenant, action_id=key, idempotency_key=key)

    before = await get_ticket(ctx("r0"), {"ticket_id": "T-1007"})
    assert (before["tags"], before["internal_notes"], before["drafts"], before["replies_sent"]) == ([], [], [], 0)
    assert await tag_ticket(ctx("k1"), {"ticket_id": "T-1007", "tags": ["vip", "account"]}) == {
        "ticket_id": "T-1007",
        "tags": ["account", "vip"],
    }
    # Tags already there stay; the same tag twice in one call is added once.
    tagged = await tag_ticket(ctx("k2"), {"ticket_id": "T-1007", "tags": ["password", "vip", "password"]})
    assert tagged["tags"] == ["account", "password", "vip"]
    note = await add_internal_note(ctx("k3"), {"ticket_id": "T-1007", "note": "first"})
    again = await add_internal_note(ctx("k3"), {"ticket_id": "T-1007", "note": "first"})  # the same action called again
    assert (note["created"], again["created"], again["note_id"]) == (True, False, note["note_id"])
    drafts = [await draft_reply(ctx(key), {"ticket_id": "T-1007", "body": body}) for key, body in (("k4", "Hi"), ("k5", "Hello"))]
    assert [d["created"] for d in drafts] == [True, True]
    after = await get_ticket(ctx("r1"), {"ticket_id": "T-1007"})
    assert (after["tags"], after["internal_notes"], after["drafts"]) == (["account", "password", "vip"], ["first"], ["Hi", "Hello"])
    assert after["subject"] == "How do I reset my password?"


def _index_conditions(plan: dict[str, Any], found: dict[str, str] | None = None) -> dict[str, str]:
    """For each table the plan reads, the conditions it looks up in an index ('' for a scan of the whole table)."""
    found = {} if found is None else found
    if "Relation Name" in plan:
        below = [c.get("Index Cond", "") for c in plan.get("Plans", []) if c["Node Type"] == "Bitmap Index Scan"]
        found[plan["Relation Name"]] = found.get(plan["Relation Name"], "") + plan.get("Index Cond", "") + "".join(below)
    for child in plan.get("Plans", []):
        _index_conditions(child, found)
    return found


async def test_reading_a_ticket_reads_its_own_notes_drafts_and_replies_not_every_one_the_helpdesk_holds(
    pool: asyncpg.Pool, tenant: str
) -> None:
    # A helpdesk that has run for a while: 400 tickets with 3,000 notes, drafts and sent replies each.
    await pool.execute(
        "INSERT INTO helpdesk.tickets (tenant_id, ticket_id, customer_id, requester_email, subject, body) "
        "SELECT $1, 'T-' || (900000 + n), 'cus_1001', 'maria.gonzalez@example.com', 's', 'b' FROM generate_series(0, 399) AS n",
        tenant,
    )
    for table, column in (("internal_notes", "note"), ("reply_drafts", "body")):
        await pool.execute(
            f"INSERT INTO helpdesk.{table} (tenant_id, ticket_id, {column}, idempotency_key) "
            "SELECT $1, 'T-' || (900000 + n % 400), 'x', 'k' || n FROM generate_series(0, 2999) AS n",
            tenant,
        )
    await pool.execute(
        "INSERT INTO helpdesk.sent_replies (tenant_id, ticket_id, to_address, body, idempotency_key) "
        "SELECT $1, 'T-' || (900000 + n % 400), 'a@example.com', 'x', 'k' || n FROM generate_series(0, 2999) AS n",
        tenant,
    )
    await pool.execute("ANALYZE helpdesk.tickets, helpdesk.internal_notes, helpdesk.reply_drafts, helpdesk.sent_replies")

    [explained] = json.loads(await pool.fetchval("EXPLAIN (FORMAT JSON) " + READ_TICKET, tenant, "T-900007"))
    looked_up = _index_conditions(explained["Plan"])

    for table in ("internal_notes", "reply_drafts", "sent_replies"):  # found by their ticket, not by all of the tenant's rows
        assert "ticket_id" in looked_up[table], looked_up
    read = await get_ticket(ToolContext(pool=pool, tenant_id=tenant, action_id="r", idempotency_key="r"), {"ticket_id": "T-900007"})
    assert (len(read["internal_notes"]), len(read["drafts"]), read["replies_sent"]) == (8, 8, 8)  # 3,000 spread over 400


@pytest.mark.parametrize("tool", [get_ticket, tag_ticket, add_internal_note, draft_reply])
async def test_a_ticket_of_another_tenant_or_none_is_unknown_and_nothing_is_written(pool: asyncpg.Pool, tenant: str, tool: object) -> None:
    stranger = ToolContext(pool=pool, tenant_id=f"other-{uuid.uuid4().hex[:8]}", action_id="k9", idempotency_key="k9")
    args = {"ticket_id": "T-1007", "tags": ["x"], "note": "n", "body": "b"}
    with pytest.raises(ToolError) as unknown:
        await tool(stranger, args)  # type: ignore[operator]
    assert unknown.value.type == "unknown_ticket"
    written = await pool.fetchval(
        "SELECT (SELECT count(*) FROM helpdesk.ticket_tags WHERE tenant_id = $1) + (SELECT count(*) FROM helpdesk.internal_notes"
        " WHERE tenant_id = $1) + (SELECT count(*) FROM helpdesk.reply_drafts WHERE tenant_id = $1)",
        stranger.tenant_id,
    )
    assert written == 0
