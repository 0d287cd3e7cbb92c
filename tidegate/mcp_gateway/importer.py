"""`tidegate mcp import`: an upstream MCP server's tools as catalog YAML (kind `mcp`), one file per tool.

Every imported tool is written with risk `destructive` (human-only under the default pack) and a
comment asking for the real class: an import nobody reviewed can never act on its own.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import mcp
import yaml
from mcp import types

from schemas import McpUpstream, ToolSpec
from servicekit.catalog_checks import address_kinds

__all__ = ["PLACEHOLDER_RISK", "catalog_entry", "import_upstream", "list_upstream", "write_entries"]

PLACEHOLDER_RISK = "destructive"


async def list_upstream(upstream: McpUpstream) -> list[types.Tool]:
    """Every tool the upstream server lists (following pagination)."""
    server: Any = upstream.url or mcp.StdioServerParameters(command=upstream.command[0], args=upstream.command[1:])  # type: ignore[index]
    tools: list[types.Tool] = []
    async with mcp.Client(server) as client:
        cursor: str | None = None
        while True:
            page = await client.list_tools(cursor=cursor)
            tools.extend(page.tools)
            cursor = page.next_cursor
            if not cursor:
                return tools


def catalog_entry(tool: types.Tool, upstream: McpUpstream, prefix: str = "") -> tuple[str, str]:
    """(file name, YAML text) of one upstream tool; the entry is validated as a `ToolSpec` before it is written."""
    name = prefix + re.sub(r"[^a-z0-9_]+", "_", tool.name.lower()).strip("_")
    if not re.match(r"^[a-z]", name):
        name = f"mcp_{name}"
    entry: dict[str, Any] = {
        "name": name,
        "description": tool.description or f"{tool.name} (upstream MCP tool)",
        "risk": PLACEHOLDER_RISK,
        "kind": "mcp",
        "mcp": upstream.model_copy(update={"tool": tool.name}).model_dump(exclude_none=True),
        "args_schema": dict(tool.input_schema) or {"type": "object"},
        "untrusted_output": True,  # an outside server's output, until someone says otherwise (fail closed)
    }
    if counterparties := address_kinds(entry["args_schema"]):  # the loader refuses a write with an undeclared address
        entry["facts"] = {"counterparties": counterparties}
    ToolSpec.model_validate(entry)
    header = (
        f"# Imported from an upstream MCP server ({tool.name}).\n"
        f"# FILL IN `risk` (read, draft, write_low, financial, destructive, code_change): until then it is `{PLACEHOLDER_RISK}`,\n"
        "# which the default policy pack leaves to humans. Add `facts`, `idempotent`, `cost_usd` as they apply: a `financial`\n"
        "# tool needs `facts: {amount: <its USD amount arg>, payee: <who is paid>}`, or every call of it escalates\n"
        "# `amount_unknown` (thresholds and the per-payee bound read them). Check the counterparty kinds guessed for\n"
        "# address-like args, and set `untrusted_output: false` only for a system of record.\n"
    )
    return f"{name}.yaml", header + yaml.safe_dump(entry, sort_keys=False, allow_unicode=True)


async def import_upstream(upstream: McpUpstream, out_dir: Path, *, prefix: str = "", overwrite: bool = False) -> list[Path]:
    """Write one catalog file per upstream tool; existing files are kept unless `overwrite`."""
    entries = [catalog_entry(tool, upstream, prefix) for tool in await list_upstream(upstream)]
    return write_entries(entries, out_dir, overwrite=overwrite)


def write_entries(entries: list[tuple[str, str]], out_dir: Path, *, overwrite: bool) -> list[Path]:
    """Write (file name, text) pairs into the catalog directory; returns the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for file_name, text in entries:
        path = out_dir / file_name
        if path.exists() and not overwrite:
            continue
        path.write_text(text)
        written.append(path)
    return written
