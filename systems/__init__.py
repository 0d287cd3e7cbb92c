"""Tidegate's built-in demo systems of record, each in its own PostgreSQL schema.

`helpdesk`, `payments`, `mail`, `crm` and `code` are real tables a user can inspect with psql. Each
tool is `async def tool(ctx: ToolContext, args: dict) -> dict` (the kit's tool contract), named by a catalog `entrypoint`
such as `systems.payments:issue_refund`. This package imports the kit, never a service.
"""

from servicekit.toolcontract import Tool, ToolContext, ToolError
from systems._install import MIGRATIONS, SYSTEMS, connect

__all__ = ["MIGRATIONS", "SYSTEMS", "Tool", "ToolContext", "ToolError", "connect"]
