"""An upstream MCP server to put behind Tidegate: a team's notes, with one write tool and one read tool.

It knows nothing of Tidegate. It honours an idempotency key when the caller sends one in `_meta`
(`io.tidegate/idempotency_key`, which Tidegate's executor sends), so a retried call adds no second note.
With `--tenant`, it serves that one tenant: a call whose `_meta["io.tidegate/tenant"]` (which the executor
sends) names another tenant, or none, is refused as a tool error, and nothing is read or written.

    python examples/mcp_upstream/notes_server.py --db notes.json            # stdio
    python examples/mcp_upstream/notes_server.py --db notes.json --http 9000 # streamable HTTP at /mcp
    python examples/mcp_upstream/notes_server.py --db notes.json --tenant acme
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import anyio
import uvicorn
from mcp import types
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

KEY = "io.tidegate/idempotency_key"
TENANT = "io.tidegate/tenant"
TOOLS = [
    types.Tool(
        name="add-note",
        description="Add a note to a customer's file.",
        input_schema={
            "type": "object",
            "additionalProperties": False,
            "required": ["customer", "text"],
            "properties": {"customer": {"type": "string"}, "text": {"type": "string", "minLength": 1}},
        },
    ),
    types.Tool(
        name="list-notes",
        description="List a customer's notes.",
        input_schema={"type": "object", "required": ["customer"], "properties": {"customer": {"type": "string"}}},
    ),
]


def build(db: Path, tenant: str | None = None) -> Server[Any]:
    def load() -> dict[str, Any]:
        return json.loads(db.read_text()) if db.exists() else {"notes": [], "keys": {}}

    def save(state: dict[str, Any]) -> None:
        db.write_text(json.dumps(state))

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=TOOLS)

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        caller = dict(ctx.meta or {}).get(TENANT)
        if tenant is not None and caller != tenant:
            refusal = f"this server serves tenant {tenant} only, not {caller or 'a caller that names no tenant'}"
            return types.CallToolResult(content=[types.TextContent(type="text", text=refusal)], is_error=True)
        state, args = load(), params.arguments or {}
        if params.name == "list-notes":
            notes = [n for n in state["notes"] if n["customer"] == args["customer"]]
            return types.CallToolResult(
                content=[types.TextContent(type="text", text=json.dumps(notes))], structured_content={"notes": notes}
            )
        if params.name != "add-note" or not str(args.get("text", "")).strip():
            return types.CallToolResult(content=[types.TextContent(type="text", text="a note needs text")], is_error=True)
        key = dict(ctx.meta or {}).get(KEY)
        if key and key in state["keys"]:
            note = state["keys"][key]
        else:
            note = {"id": len(state["notes"]) + 1, "customer": args["customer"], "text": args["text"]}
            state["notes"].append(note)
            if key:
                state["keys"][key] = note
            save(state)
        return types.CallToolResult(content=[types.TextContent(type="text", text=f"note {note['id']} added")], structured_content=note)

    return Server("notes", version="1", on_list_tools=list_tools, on_call_tool=call_tool)


async def main_stdio(server: Server[Any]) -> None:
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--http", type=int, default=None, help="Serve streamable HTTP on this port instead of stdio.")
    parser.add_argument("--tenant", default=None, help="Serve this tenant only (the executor's `_meta` names each call's tenant).")
    args = parser.parse_args()
    server = build(args.db, args.tenant)
    if args.http is None:
        anyio.run(main_stdio, server)
    else:
        uvicorn.run(server.streamable_http_app(), host="127.0.0.1", port=args.http, log_level="warning")


if __name__ == "__main__":
    main()
