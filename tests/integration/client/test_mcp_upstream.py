"""Upstream MCP servers behind Tidegate: the executor's `mcp` invoker and `tidegate mcp import`, against the example server (stdio)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

import schemas as s
from servicekit import REPO_ROOT, ToolCatalog
from servicekit.toolcontract import ToolContext, ToolError
from services.executor.tools import McpTools
from tidegate.mcp_gateway import PLACEHOLDER_RISK, import_upstream

SERVER = REPO_ROOT / "examples" / "mcp_upstream" / "notes_server.py"


def spec(db: Path, tool: str = "add-note", command: list[str] | None = None) -> s.ToolSpec:
    return s.ToolSpec.model_validate(
        {
            "name": "add_note",
            "description": "d",
            "risk": "write_low",
            "kind": "mcp",
            "timeout_s": 20,
            "mcp": {"command": command or [sys.executable, str(SERVER), "--db", str(db)], "tool": tool},
            "args_schema": {"type": "object"},
        }
    )


def ctx(key: str) -> ToolContext:
    return ToolContext(pool=None, tenant_id="acme", action_id=key, idempotency_key=key, task_id="t-1")  # type: ignore[arg-type]


async def test_the_executor_calls_an_upstream_tool_once_per_idempotency_key(tmp_path: Path) -> None:
    db = tmp_path / "notes.json"
    tools = McpTools()
    first = await tools.invoke(spec(db), ctx("a-1"), {"customer": "cus_1", "text": "called back"})
    again = await tools.invoke(spec(db), ctx("a-1"), {"customer": "cus_1", "text": "called back"})  # a retry of the same action
    assert first.result == again.result == {"id": 1, "customer": "cus_1", "text": "called back"}
    assert len(yaml.safe_load(db.read_text())["notes"]) == 1


async def test_an_upstream_tool_error_is_final_and_an_unreachable_server_is_retryable(tmp_path: Path) -> None:
    tools = McpTools()
    with pytest.raises(ToolError) as refused:
        await tools.invoke(spec(tmp_path / "n.json"), ctx("a-2"), {"customer": "cus_1", "text": " "})
    assert (refused.value.type, refused.value.retryable) == ("mcp_tool_error", False)
    with pytest.raises(ToolError) as unreachable:
        await tools.invoke(spec(tmp_path / "n.json", command=[str(tmp_path / "no-such-server")]), ctx("a-3"), {})
    assert (unreachable.value.type, unreachable.value.retryable, unreachable.value.maybe_applied) == ("unreachable", True, False)


async def test_import_writes_catalog_files_that_load_and_cannot_act_until_reviewed(tmp_path: Path) -> None:
    upstream = s.McpUpstream(command=[sys.executable, str(SERVER), "--db", str(tmp_path / "n.json")], tool="*")
    written = await import_upstream(upstream, tmp_path / "tools", prefix="notes_")
    assert sorted(p.name for p in written) == ["notes_add_note.yaml", "notes_list_notes.yaml"]
    catalog = ToolCatalog.load(tmp_path / "tools")
    add = catalog["notes_add_note"]
    assert (add.kind, add.risk, add.mcp and add.mcp.tool) == ("mcp", PLACEHOLDER_RISK, "add-note")
    assert add.args_schema["required"] == ["customer", "text"]
    assert "FILL IN `risk`" in (tmp_path / "tools" / "notes_add_note.yaml").read_text()
    assert await import_upstream(upstream, tmp_path / "tools", prefix="notes_") == []  # reviewed files are never overwritten


def test_an_mcp_tool_needs_exactly_one_transport() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        s.McpUpstream(tool="x")
    with pytest.raises(ValueError, match="exactly one"):
        s.McpUpstream(tool="x", url="http://127.0.0.1:1/mcp", command=["x"])
