"""The demo helpdesk (schema `helpdesk`): read tickets, tag them, note, draft and send replies."""

from __future__ import annotations

from typing import Any

import asyncpg

from servicekit.toolcontract import ToolContext, ToolError
from systems._db import Connection, delete_child, insert_child_once, insert_once

__all__ = [
    "READ_TICKET",
    "add_internal_note",
    "delete_internal_note",
    "draft_reply",
    "get_ticket",
    "send_reply",
    "set_ticket_status",
    "tag_ticket",
    "untag_ticket",
]


_TICKETS = ("helpdesk.tickets", "ticket_id")  # the parent of a ticket's notes, drafts and tags


def _unknown_ticket(ticket_id: str) -> ToolError:
    return ToolError("unknown_ticket", f"ticket {ticket_id} does not exist")


async def _ticket(conn: Connection, tenant_id: str, ticket_id: str, *, lock: bool = False) -> asyncpg.Record:
    row = await conn.fetchrow(
        "SELECT * FROM helpdesk.tickets WHERE tenant_id = $1 AND ticket_id = $2" + (" FOR UPDATE" if lock else ""), tenant_id, ticket_id
    )
    if row is None:
        raise _unknown_ticket(ticket_id)
    return row


# One statement (one round trip, one snapshot) for a ticket ($1, $2) and what hangs off it, each part read through the
# index by its ticket (migration 002), never by scanning every note, draft and reply the helpdesk holds.
READ_TICKET = (
    "SELECT t.*,"
    " ARRAY(SELECT tag FROM helpdesk.ticket_tags g WHERE g.tenant_id = t.tenant_id AND g.ticket_id = t.ticket_id ORDER BY tag) AS tags,"
    " ARRAY(SELECT note FROM helpdesk.internal_notes n WHERE n.tenant_id = t.tenant_id AND n.ticket_id = t.ticket_id"
    " ORDER BY note_id) AS notes,"
    " ARRAY(SELECT body FROM helpdesk.reply_drafts d WHERE d.tenant_id = t.tenant_id AND d.ticket_id = t.ticket_id"
    " ORDER BY draft_id) AS drafts,"
    " (SELECT count(*) FROM helpdesk.sent_replies r WHERE r.tenant_id = t.tenant_id AND r.ticket_id = t.ticket_id) AS sent "
    "FROM helpdesk.tickets t WHERE t.tenant_id = $1 AND t.ticket_id = $2"
)


async def get_ticket(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    """The ticket with its tags, internal notes, drafts and sent replies (the body is untrusted content)."""
    t = await ctx.pool.fetchrow(READ_TICKET, ctx.tenant_id, args["ticket_id"])
    if t is None:
        raise _unknown_ticket(args["ticket_id"])
    return {
        "ticket_id": t["ticket_id"],
        "customer_id": t["customer_id"],
        "requester_email": t["requester_email"],
        "subject": t["subject"],
        "body": t["body"],
        "status": t["status"],
        "priority": t["priority"],
        "order_id": t["order_id"],
        "tags": list(t["tags"]),
        "internal_notes": list(t["notes"]),
        "drafts": list(t["drafts"]),
        "replies_sent": t["sent"],
    }


async def tag_ticket(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    """Add tags to a ticket; tags already there stay, so calling twice changes nothing."""
    # One statement: the ticket read, the tags inserted, and the ticket's tags after it (those it had and those asked for).
    tags = await ctx.pool.fetchval(
        "WITH t AS (SELECT tenant_id, ticket_id FROM helpdesk.tickets WHERE tenant_id = $1 AND ticket_id = $2), "
        "added AS (INSERT INTO helpdesk.ticket_tags (tenant_id, ticket_id, tag, added_by_action)"
        " SELECT t.tenant_id, t.ticket_id, asked.tag, $4 FROM t, (SELECT DISTINCT unnest($3::text[]) AS tag) AS asked"
        " ON CONFLICT DO NOTHING) "
        "SELECT ARRAY(SELECT tag FROM helpdesk.ticket_tags g WHERE g.tenant_id = t.tenant_id AND g.ticket_id = t.ticket_id"
        " UNION SELECT unnest($3::text[]) ORDER BY 1) FROM t",
        ctx.tenant_id,
        args["ticket_id"],
        list(args["tags"]),
        ctx.action_id,
    )
    if tags is None:
        raise _unknown_ticket(args["ticket_id"])
    return {"ticket_id": args["ticket_id"], "tags": list(tags)}


async def untag_ticket(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    """Remove tags from a ticket (the undo of `tag_ticket`); a tag that is not there is left alone, so calling twice changes nothing."""
    async with ctx.pool.acquire() as conn, conn.transaction():
        t = await _ticket(conn, ctx.tenant_id, args["ticket_id"])
        await conn.execute(
            "DELETE FROM helpdesk.ticket_tags WHERE tenant_id = $1 AND ticket_id = $2 AND tag = ANY($3::text[])",
            ctx.tenant_id,
            t["ticket_id"],
            list(args["tags"]),
        )
        tags = await conn.fetch(
            "SELECT tag FROM helpdesk.ticket_tags WHERE tenant_id = $1 AND ticket_id = $2 ORDER BY tag", ctx.tenant_id, t["ticket_id"]
        )
    return {"ticket_id": t["ticket_id"], "tags": [r["tag"] for r in tags]}


async def set_ticket_status(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    """Set a ticket's status; setting the status it has changes nothing."""
    async with ctx.pool.acquire() as conn, conn.transaction():
        t = await _ticket(conn, ctx.tenant_id, args["ticket_id"], lock=True)
        await conn.execute(
            "UPDATE helpdesk.tickets SET status = $3, updated_at = now() WHERE tenant_id = $1 AND ticket_id = $2 AND status <> $3",
            ctx.tenant_id,
            t["ticket_id"],
            args["status"],
        )
    return {"ticket_id": t["ticket_id"], "status": args["status"], "previous_status": t["status"]}


async def delete_internal_note(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    """Delete one internal note of a ticket (the undo of `add_internal_note`); returns its text; a note already gone is not an error."""
    async with ctx.pool.acquire() as conn, conn.transaction():
        t = await _ticket(conn, ctx.tenant_id, args["ticket_id"])
        deleted = await delete_child(  # the note's text, kept in the result: the undo adds it again
            conn, "helpdesk.internal_notes", "note_id", args["note_id"], ctx.tenant_id, ("ticket_id", t["ticket_id"]), returning="note"
        )
    return {"ticket_id": t["ticket_id"], "note_id": args["note_id"], "deleted": deleted is not None, "note": deleted}


async def add_internal_note(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    """Add a note only agents see; one note per idempotency key."""
    note_id, created = await _add_to_ticket(ctx, args["ticket_id"], "helpdesk.internal_notes", "note_id", {"note": args["note"]})
    return {"ticket_id": args["ticket_id"], "note_id": note_id, "created": created}


async def draft_reply(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    """Save a reply draft on the ticket for a person to review; nothing is sent."""
    draft_id, created = await _add_to_ticket(ctx, args["ticket_id"], "helpdesk.reply_drafts", "draft_id", {"body": args["body"]})
    return {"ticket_id": args["ticket_id"], "draft_id": draft_id, "created": created}


async def _add_to_ticket(ctx: ToolContext, ticket_id: str, table: str, id_col: str, cols: dict[str, Any]) -> tuple[int, bool]:
    """Insert a row of the ticket once per idempotency key (one statement when new): its id, and whether it was made now."""
    async with ctx.pool.acquire() as conn:
        added = await insert_child_once(conn, table, id_col, {"ticket_id": ticket_id, **cols}, ctx.idempotency_key, ctx.tenant_id, _TICKETS)
    if added is None:
        raise _unknown_ticket(ticket_id)
    return added


async def send_reply(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    """Send a reply to the requester and mark the ticket answered; one send per idempotency key."""
    async with ctx.pool.acquire() as conn, conn.transaction():
        t = await _ticket(conn, ctx.tenant_id, args["ticket_id"], lock=True)
        reply_id, created = await insert_once(
            conn,
            "helpdesk.sent_replies",
            "reply_id",
            {"ticket_id": t["ticket_id"], "to_address": args["to"], "body": args["body"]},
            ctx.idempotency_key,
            ctx.tenant_id,
        )
        if created:
            await conn.execute(
                "UPDATE helpdesk.tickets SET status = 'answered', updated_at = now() WHERE tenant_id = $1 AND ticket_id = $2",
                ctx.tenant_id,
                t["ticket_id"],
            )
    return {"ticket_id": t["ticket_id"], "reply_id": reply_id, "to": args["to"], "created": created}
