"""An imported MCP tool's catalog entry loads as written: its output untrusted, its address-like args declared."""

from __future__ import annotations

from pathlib import Path

from mcp import types

from schemas import McpUpstream
from servicekit import ToolCatalog
from tidegate.mcp_gateway.importer import catalog_entry


def test_an_imported_tool_with_addresses_loads_and_fails_closed(tmp_path: Path) -> None:
    schema = {
        "type": "object",
        "properties": {"to": {"type": "array", "items": {"type": "string"}}, "link": {"type": "string", "format": "uri"}},
    }
    name, text = catalog_entry(types.Tool(name="send", inputSchema=schema), McpUpstream(url="http://127.0.0.1:9/mcp", tool="send"))
    (tmp_path / name).write_text(text)
    spec = ToolCatalog.load(tmp_path)["send"]
    assert spec.untrusted_output
    assert spec.facts.counterparties == {"to": "email", "link": "url"}
