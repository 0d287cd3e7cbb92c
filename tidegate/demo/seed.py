"""`tidegate demo --seed-only`: the demo's systems of record seeded for a developer's own agent, nothing started."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from servicekit import KitSettings, create_pool
from tidegate.demo.run import fresh_orders


async def seed_systems(kit: KitSettings, *, tenant: str, console: Console) -> int:
    """`tidegate demo --seed-only`: seed the systems of record and say which refunds can run; nothing else starts.

    A developer governing their own agent against the catalog's `issue_refund` needs the payments tables the demo seeds
    (unseeded, an approved refund fails `unknown_payee`), and an order with something left to refund (each approved
    refund of O-5002 uses it up: the next fails `refund_exceeds_order`). Before, only the whole demo seeded them: it
    started the services and stand-ins, submitted its tickets and waited for decisions (the integrator2 probe). Each
    call adds a fresh copy of the refund tickets' orders, as a demo run does, so there is always one to refund.
    """
    from systems.seed import ORDERS, seed_demo

    pool = await create_pool(kit.operator_database_url, max_size=2)
    try:
        inserted = await seed_demo(pool)
        fresh = await fresh_orders(pool, tenant)
        rows = await pool.fetch(
            "SELECT o.order_id, o.payee_id, o.amount_usd, o.amount_usd - coalesce(sum(r.amount_usd), 0) AS left_usd "
            "FROM payments.orders o LEFT JOIN payments.refunds r ON r.tenant_id = o.tenant_id AND r.order_id = o.order_id "
            "WHERE o.tenant_id = $1 AND o.order_id = ANY($2::text[]) GROUP BY o.order_id, o.payee_id, o.amount_usd ORDER BY o.order_id",
            tenant,
            [o.order_id for o in ORDERS] + list(fresh.values()),
        )
    finally:
        await pool.close()
    console.print(f"systems of record seeded ({sum(inserted.values())} new rows; helpdesk, payments, mail, crm in PostgreSQL)")
    table = Table(title=f"{tenant}'s orders issue_refund can refund (payee_id, order_id, at most what is left)")
    for column in ("order_id", "payee_id", "paid USD", "left USD"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["order_id"], row["payee_id"], f"{row['amount_usd']:.2f}", f"{row['left_usd']:.2f}")
    console.print(table)
    console.print(
        f"a refund over {tenant}'s threshold (`tidegate tenant show {tenant}`) escalates to a human; a payee the tenant has "
        "never paid is denied new_payee_blocked. Run this again for fresh copies of the orders."
    )
    return 0
