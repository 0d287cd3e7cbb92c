"""The demo mail outbox (schema `mail`): drafts wait for a person; sends go out once per idempotency key."""

from __future__ import annotations

from typing import Any

from servicekit.toolcontract import ToolContext
from systems._db import insert_once

__all__ = ["draft_email", "send_email"]


async def _outbox(ctx: ToolContext, args: dict[str, Any], kind: str) -> dict[str, Any]:
    async with ctx.pool.acquire() as conn:
        message_id, created = await insert_once(
            conn,
            "mail.outbox",
            "message_id",
            {"kind": kind, "to_addresses": list(args["to"]), "subject": args["subject"], "body": args["body"]},
            ctx.idempotency_key,
            ctx.tenant_id,
        )
    return {"message_id": message_id, "kind": kind, "recipients": len(args["to"]), "created": created}


async def draft_email(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    """Save an email as a draft in the outbox; nothing is sent."""
    return await _outbox(ctx, args, "draft")


async def send_email(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    """Send an email (recorded in the outbox as sent), at most once per idempotency key."""
    return await _outbox(ctx, args, "sent")
