"""The demo CRM (schema `crm`): customer notes, deletion of a customer's data, user permissions."""

from __future__ import annotations

from typing import Any

import asyncpg

from servicekit.toolcontract import ToolContext, ToolError
from systems._db import Connection, delete_child, insert_once

__all__ = ["add_crm_note", "change_permissions", "delete_crm_note", "delete_customer_data"]


async def _customer(conn: Connection, tenant_id: str, customer_id: str) -> asyncpg.Record:
    row = await conn.fetchrow("SELECT * FROM crm.customers WHERE tenant_id = $1 AND customer_id = $2 FOR UPDATE", tenant_id, customer_id)
    if row is None:
        raise ToolError("unknown_customer", f"customer {customer_id} does not exist")
    return row


async def add_crm_note(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    """Add a note to a customer record; one note per idempotency key."""
    async with ctx.pool.acquire() as conn, conn.transaction():
        c = await _customer(conn, ctx.tenant_id, args["customer_id"])
        note_id, created = await insert_once(
            conn, "crm.notes", "note_id", {"customer_id": c["customer_id"], "note": args["note"]}, ctx.idempotency_key, ctx.tenant_id
        )
    return {"customer_id": c["customer_id"], "note_id": note_id, "created": created}


async def delete_crm_note(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    """Delete one note of a customer record (the undo of `add_crm_note`); returns its text; a note already gone is not an error."""
    async with ctx.pool.acquire() as conn, conn.transaction():
        c = await _customer(conn, ctx.tenant_id, args["customer_id"])
        deleted = await delete_child(  # the note's text, kept in the result: the undo adds it again
            conn, "crm.notes", "note_id", args["note_id"], ctx.tenant_id, ("customer_id", c["customer_id"]), returning="note"
        )
    return {"customer_id": c["customer_id"], "note_id": args["note_id"], "deleted": deleted is not None, "note": deleted}


async def delete_customer_data(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    """Erase a customer's personal data (name and email are overwritten) and record the request."""
    async with ctx.pool.acquire() as conn, conn.transaction():
        c = await _customer(conn, ctx.tenant_id, args["customer_id"])
        request_id, created = await insert_once(
            conn,
            "crm.deletion_requests",
            "request_id",
            {"customer_id": c["customer_id"], "reason": args.get("reason", "")},
            ctx.idempotency_key,
            ctx.tenant_id,
        )
        await conn.execute(
            "UPDATE crm.customers SET name = '(deleted)', email = 'deleted+' || customer_id || '@invalid', "
            "deleted_at = coalesce(deleted_at, now()) WHERE tenant_id = $1 AND customer_id = $2",
            ctx.tenant_id,
            c["customer_id"],
        )
    return {"customer_id": c["customer_id"], "request_id": request_id, "status": "completed", "created": created}


async def change_permissions(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    """Grant or revoke a role for a user; the change is logged once per idempotency key."""
    async with ctx.pool.acquire() as conn, conn.transaction():
        change_id, created = await insert_once(
            conn,
            "crm.permission_changes",
            "change_id",
            {"user_id": args["user_id"], "role": args["role"], "grant_role": args["grant"]},
            ctx.idempotency_key,
            ctx.tenant_id,
        )
        if created and args["grant"]:
            await conn.execute(
                "INSERT INTO crm.permissions (tenant_id, user_id, role) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                ctx.tenant_id,
                args["user_id"],
                args["role"],
            )
        elif created:
            await conn.execute(
                "DELETE FROM crm.permissions WHERE tenant_id = $1 AND user_id = $2 AND role = $3",
                ctx.tenant_id,
                args["user_id"],
                args["role"],
            )
        roles = await conn.fetch(
            "SELECT role FROM crm.permissions WHERE tenant_id = $1 AND user_id = $2 ORDER BY role", ctx.tenant_id, args["user_id"]
        )
    return {"user_id": args["user_id"], "roles": [r["role"] for r in roles], "change_id": change_id, "created": created}
