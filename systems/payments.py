"""The demo payments system (schema `payments`): look up orders, refund them once per idempotency key."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import asyncpg

from servicekit.toolcontract import ToolContext, ToolError

__all__ = ["issue_refund", "lookup_order"]


def _refund(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "refund_id": row["refund_id"],
        "order_id": row["order_id"],
        "payee_id": row["payee_id"],
        "amount_usd": float(row["amount_usd"]),
        "status": "issued",
        "created_at": row["created_at"].isoformat(),
    }


async def lookup_order(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    """The order with what was paid and what has been refunded so far."""
    async with ctx.pool.acquire() as conn:
        order = await conn.fetchrow("SELECT * FROM payments.orders WHERE tenant_id = $1 AND order_id = $2", ctx.tenant_id, args["order_id"])
        if order is None:
            raise ToolError("unknown_order", f"order {args['order_id']} does not exist")
        refunded = await conn.fetchval(
            "SELECT coalesce(sum(amount_usd), 0) FROM payments.refunds WHERE tenant_id = $1 AND order_id = $2",
            ctx.tenant_id,
            order["order_id"],
        )
    return {
        "order_id": order["order_id"],
        "customer_id": order["customer_id"],
        "payee_id": order["payee_id"],
        "description": order["description"],
        "amount_usd": float(order["amount_usd"]),
        "refunded_usd": float(refunded),
        "status": order["status"],
        "created_at": order["created_at"].isoformat(),
    }


async def issue_refund(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    """Refund `amount_usd` of an order to the payee who paid it (its customer), at most once per idempotency key.

    A second call with the same key returns the first refund; the same key with other args is an
    error (`idempotency_key_reused`), as in real payment APIs.
    """
    amount = Decimal(str(args["amount_usd"])).quantize(Decimal("0.01"))
    async with ctx.pool.acquire() as conn, conn.transaction():
        existing = await conn.fetchrow(
            "SELECT * FROM payments.refunds WHERE tenant_id = $1 AND idempotency_key = $2", ctx.tenant_id, ctx.idempotency_key
        )
        if existing is not None:
            return _check_same(existing, args, amount)
        payee = await conn.fetchval(
            "SELECT payee_id FROM payments.payees WHERE tenant_id = $1 AND payee_id = $2", ctx.tenant_id, args["payee_id"]
        )
        if payee is None:
            raise ToolError("unknown_payee", f"payee {args['payee_id']} is not on file")
        # The order row is locked so that concurrent refunds of one order cannot exceed what was paid.
        order = await conn.fetchrow(
            "SELECT * FROM payments.orders WHERE tenant_id = $1 AND order_id = $2 FOR UPDATE", ctx.tenant_id, args["order_id"]
        )
        if order is None:
            raise ToolError("unknown_order", f"order {args['order_id']} does not exist")
        if order["payee_id"] != payee:  # a refund goes back to who paid the order, never to another payee on file
            raise ToolError(
                "payee_not_order_customer", f"payee {payee} did not pay order {order['order_id']}: its refunds go to its customer"
            )
        # A concurrent call with the same key may have refunded while we waited for the lock.
        existing = await conn.fetchrow(
            "SELECT * FROM payments.refunds WHERE tenant_id = $1 AND idempotency_key = $2", ctx.tenant_id, ctx.idempotency_key
        )
        if existing is not None:
            return _check_same(existing, args, amount)
        refunded = await conn.fetchval(
            "SELECT coalesce(sum(amount_usd), 0) FROM payments.refunds WHERE tenant_id = $1 AND order_id = $2",
            ctx.tenant_id,
            order["order_id"],
        )
        if refunded + amount > order["amount_usd"]:
            raise ToolError(
                "refund_exceeds_order",
                f"refund of {amount} USD would bring refunds of {order['order_id']} to {refunded + amount} USD, "
                f"over the {order['amount_usd']} USD paid",
            )
        row = await conn.fetchrow(
            "INSERT INTO payments.refunds (refund_id, tenant_id, order_id, payee_id, amount_usd, reason, idempotency_key) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (tenant_id, idempotency_key) DO NOTHING RETURNING *",
            f"re_{uuid.uuid4().hex[:16]}",
            ctx.tenant_id,
            order["order_id"],
            payee,
            amount,
            args.get("reason", ""),
            ctx.idempotency_key,
        )
        if row is None:  # a concurrent call with the same key won the race: answer with its refund
            row = await conn.fetchrow(
                "SELECT * FROM payments.refunds WHERE tenant_id = $1 AND idempotency_key = $2", ctx.tenant_id, ctx.idempotency_key
            )
            assert row is not None
            return _check_same(row, args, amount)
        status = "refunded" if refunded + amount == order["amount_usd"] else "partially_refunded"
        await conn.execute(
            "UPDATE payments.orders SET status = $3 WHERE tenant_id = $1 AND order_id = $2", ctx.tenant_id, order["order_id"], status
        )
    return _refund(row)


def _check_same(row: asyncpg.Record, args: dict[str, Any], amount: Decimal) -> dict[str, Any]:
    if (row["order_id"], row["payee_id"], row["amount_usd"]) != (args["order_id"], args["payee_id"], amount):
        raise ToolError(
            "idempotency_key_reused", f"idempotency key {row['idempotency_key']} was used for another refund ({row['refund_id']})"
        )
    return _refund(row)
