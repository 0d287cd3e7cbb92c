"""Upstream MCP servers behind Tidegate: the executor's `mcp` invoker and `tidegate mcp import`, against the example server.

Over stdio (the executor starts the server per call) and over streamable HTTP (the server runs on a free local port).
"""

from __future__ import annotations

import asyncio
import importlib.util
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import uvicorn
import yaml

import schemas as s
from servicekit import REPO_ROOT, ToolCatalog
from servicekit.toolcontract import ToolContext, ToolError
from services.executor.tools import McpTools
from tidegate.mcp_gateway import PLACEHOLDER_RISK, import_upstream

SERVER = REPO_ROOT / "examples" / "mcp_upstream" / "notes_server.py"


def spec(db: Path, tool: str = "add-note", command: list[str] | None = None, url: str | None = None) -> s.ToolSpec:
    upstream = {"url": url} if url else {"command": command or [sys.executable, str(SERVER), "--db", str(db)]}
    return s.ToolSpec.model_validate(
        {
            "name": "add_note",
            "description": "d",
            "risk": "write_low",
            "kind": "mcp",
            "timeout_s": 20,
            "mcp": upstream | {"tool": tool},
            "args_schema": {"type": "object"},
        }
    )


@pytest.fixture
async def notes_over_http(tmp_path: Path, wait_for: Callable[..., Awaitable[Any]]) -> AsyncIterator[tuple[str, Path]]:
    """The example server (the official `mcp` SDK's streamable HTTP app) on a free local port: its URL and its notes file."""
    loaded = importlib.util.spec_from_file_location("notes_server", SERVER)
    assert loaded is not None
    assert loaded.loader is not None
    notes = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(notes)
    db = tmp_path / "http-notes.json"
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # handed to uvicorn bound: no other process can take the port in between
    server = uvicorn.Server(uvicorn.Config(notes.build(db).streamable_http_app(), log_level="warning"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await wait_for(lambda: server.started, timeout=10, what="the upstream MCP server to listen")
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/mcp", db
    finally:
        server.should_exit = True
        await serving
        sock.close()


def ctx(key: str, tenant: str = "acme") -> ToolContext:
    return ToolContext(pool=None, tenant_id=tenant, action_id=key, idempotency_key=key, task_id="t-1")  # type: ignore[arg-type]


async def test_the_executor_calls_an_upstream_tool_once_per_idempotency_key(tmp_path: Path) -> None:
    db = tmp_path / "notes.json"
    tools = McpTools()
    first = await tools.invoke(spec(db), ctx("a-1"), {"customer": "cus_1", "text": "called back"})
    again = await tools.invoke(spec(db), ctx("a-1"), {"customer": "cus_1", "text": "called back"})  # a retry of the same action
    assert first.result == again.result == {"id": 1, "customer": "cus_1", "text": "called back"}
    assert len(yaml.safe_load(db.read_text())["notes"]) == 1


async def test_the_executor_calls_an_upstream_tool_over_streamable_http_once_per_idempotency_key(
    notes_over_http: tuple[str, Path],
) -> None:
    url, db = notes_over_http
    tools = McpTools()
    first = await tools.invoke(spec(db, url=url), ctx("h-1"), {"customer": "cus_1", "text": "over http"})
    again = await tools.invoke(spec(db, url=url), ctx("h-1"), {"customer": "cus_1", "text": "over http"})  # a retry of the action
    other = await tools.invoke(spec(db, url=url), ctx("h-2"), {"customer": "cus_1", "text": "another"})
    assert first.result == again.result == {"id": 1, "customer": "cus_1", "text": "over http"}
    assert other.result["id"] == 2
    assert len(yaml.safe_load(db.read_text())["notes"]) == 2
    with pytest.raises(ToolError) as refused:
        await tools.invoke(spec(db, url=url), ctx("h-3"), {"customer": "cus_1", "text": " "})
    assert (refused.value.type, refused.value.retryable) == ("mcp_tool_error", False)


async def test_the_executor_names_the_calls_tenant_so_an_upstream_serving_one_tenant_refuses_another(tmp_path: Path) -> None:
    """`_meta["io.tidegate/tenant"]` beside the idempotency key: the example server started `--tenant acme` serves acme only."""
    db = tmp_path / "acme-notes.json"
    acme_only = spec(db, command=[sys.executable, str(SERVER), "--db", str(db), "--tenant", "acme"])
    tools = McpTools()
    with pytest.raises(ToolError) as refused:
        await tools.invoke(acme_only, ctx("t-1", tenant="initech"), {"customer": "cus_1", "text": "from initech"})
    assert (refused.value.type, refused.value.retryable) == ("mcp_tool_error", False)
    assert "serves tenant acme only, not initech" in refused.value.message
    assert not db.exists()  # nothing was written for initech
    served = await tools.invoke(acme_only, ctx("t-2"), {"customer": "cus_1", "text": "from acme"})
    assert served.result == {"id": 1, "customer": "cus_1", "text": "from acme"}


async def test_an_http_upstream_that_is_not_listening_is_unreachable_and_retryable(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port bound but never listened on: connections are refused
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/mcp"
        with pytest.raises(ToolError) as unreachable:
            await McpTools().invoke(spec(tmp_path / "n.json", url=url), ctx("h-4"), {"customer": "cus_1", "text": "x"})
    assert (unreachable.value.type, unreachable.value.retryable, unreachable.value.maybe_applied) == ("unreachable", True, False)


async def test_import_reads_an_upstream_over_streamable_http(notes_over_http: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = notes_over_http
    written = await import_upstream(s.McpUpstream(url=url, tool="*"), tmp_path / "tools", prefix="notes_")
    assert sorted(p.name for p in written) == ["notes_add_note.yaml", "notes_list_notes.yaml"]
    add = ToolCatalog.load(tmp_path / "tools")["notes_add_note"]
    assert add.mcp is not None
    assert (add.mcp.url, add.mcp.command, add.mcp.tool) == (url, None, "add-note")


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


def test_the_import_command_names_the_tenants_that_may_call_what_it_wrote(tmp_path: Path) -> None:
    """`tidegate mcp import --tenant acme`: each file names acme, so the policy grants acme alone (a process: a stdio upstream)."""
    import subprocess

    server = f"{sys.executable} {SERVER} --db {tmp_path / 'n.json'}"
    cli = [sys.executable, "-c", "from tidegate.cli import app; app()", "mcp", "import", "--command", server, "--prefix", "notes_"]
    done = subprocess.run([*cli, "--tenant", "acme", "--out", str(tmp_path / "tools")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "(tenants: acme)" in done.stdout
    catalog = ToolCatalog.load(tmp_path / "tools")
    assert {name: (spec.tenants, spec.granted_to("acme"), spec.granted_to("initech")) for name, spec in catalog.items()} == {
        "notes_add_note": (["acme"], True, False),
        "notes_list_notes": (["acme"], True, False),
    }
    assert "FILL IN `risk`" in (tmp_path / "tools" / "notes_add_note.yaml").read_text()


def test_an_mcp_tool_needs_exactly_one_transport() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        s.McpUpstream(tool="x")
    with pytest.raises(ValueError, match="exactly one"):
        s.McpUpstream(tool="x", url="http://127.0.0.1:1/mcp", command=["x"])


DYING_SERVER = """
import os, sys
import uvicorn
from mcp import types
from mcp.server.lowlevel import Server

async def list_tools(ctx, params):
    return types.ListToolsResult(tools=[types.Tool(name="add-note", description="d", input_schema={"type": "object"})])

async def call_tool(ctx, params):
    with open(sys.argv[2], "a") as calls:
        calls.write("called\\n")  # the note is added, then the server dies before it answers
    os._exit(1)

server = Server("dying", version="1", on_list_tools=list_tools, on_call_tool=call_tool)
uvicorn.run(server.streamable_http_app(), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


async def test_an_upstream_that_dies_after_taking_the_call_may_have_applied_it_and_says_what_broke(
    tmp_path: Path, wait_for: Callable[..., Awaitable[Any]]
) -> None:
    """The client's task group raised what broke as it closed, outside the call: the error was `tool_crashed`, not retried,
    its message "ExceptionGroup: unhandled errors in a TaskGroup"."""
    script, calls = tmp_path / "dying.py", tmp_path / "calls.txt"
    script.write_text(DYING_SERVER)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = await asyncio.create_subprocess_exec(sys.executable, str(script), str(port), str(calls))
    try:
        await wait_for(lambda: _listening(port), timeout=20, what="the dying MCP server to listen")
        with pytest.raises(ToolError) as broke:
            await McpTools().invoke(spec(tmp_path / "unused.json", url=f"http://127.0.0.1:{port}/mcp"), ctx("a-9"), {"customer": "c"})
    finally:
        if server.returncode is None:
            server.kill()
        await server.wait()
    assert calls.read_text() == "called\n"
    assert (broke.value.type, broke.value.retryable, broke.value.maybe_applied) == ("mcp_call_failed", True, True)
    assert "TaskGroup" not in broke.value.message
    assert f"127.0.0.1:{port}" in broke.value.message


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
