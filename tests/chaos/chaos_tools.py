"""The chaos suite's misbehaving in-process tools (catalog entries in tests/chaos/tools/).

`chaos_flaky_note` fails its first attempt of every action with a retryable error, then adds the
note once (the helpdesk's own `add_internal_note`, one row per idempotency key): a transient tool
failure the executor must retry without a second side effect. `chaos_slow_lookup` never answers
within its timeout: the executor must give up and report it, and the task must still close.
"""

from __future__ import annotations

import asyncio
from typing import Any

from servicekit.toolcontract import ToolContext, ToolError
from systems.helpdesk import add_internal_note
from systems.payments import lookup_order


async def chaos_flaky_note(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    """Refuse the first attempt (retryable), then add the note."""
    if ctx.attempt == 1:
        raise ToolError("chaos_transient", "the helpdesk is briefly unavailable (scripted)", retryable=True)
    return await add_internal_note(ctx, args)


async def chaos_slow_lookup(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    """Take far longer than the catalog's timeout, then look the order up."""
    await asyncio.sleep(3600)
    return await lookup_order(ctx, args)
