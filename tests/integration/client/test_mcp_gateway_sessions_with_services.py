"""MCP sessions and repeated calls through the gateway, against the real policy, approval and executor services.

The `mcp` package's own client: over streamable HTTP (one gateway, several sessions), and over stdio as a desktop
host starts `tidegate mcp serve`. The tool is the example upstream MCP server's (`notes_add_note`), whose tool
error for a blank note is a failed call the policy counts against the task (`tool_error_limit`, 2 for acme).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import mcp
import uvicorn
from conftest import Stack
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from test_mcp_gateway_with_services import _gateway_process, notes

from servicekit import ToolCatalog
from tidegate.client import ClientSettings, Tidegate
from tidegate.mcp_gateway import SESSION_META, STATUS_TOOL, GatewaySettings, build_server
from tidegate.mcp_gateway.bearer import http_auth

TOKEN = "a-test-token-of-the-gateway-0123456789"


@asynccontextmanager
async def http_gateway(stack: Stack, client_settings: ClientSettings, **more: Any) -> AsyncIterator[str]:
    """One gateway over streamable HTTP on a free loopback port (pending mode, or `more`), as `tidegate mcp serve --http` serves it."""
    catalog = ToolCatalog.load(stack.kit.tools_dir).tools.values()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = GatewaySettings(http_port=port, **({"on_escalation": "pending", "tools": ["notes_add_note"]} | more))
    async with Tidegate(client_settings) as client:
        app = build_server(client, catalog, settings).streamable_http_app(host=settings.http_host, **http_auth(settings, TOKEN))
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        serving = asyncio.create_task(server.serve())
        try:
            while not server.started:
                await asyncio.sleep(0.01)
            yield f"http://127.0.0.1:{port}/mcp"
        finally:
            server.should_exit = True
            await serving


@asynccontextmanager
async def session(url: str, mode: str = "legacy") -> AsyncIterator[mcp.Client]:
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120) as http,
        mcp.Client(streamable_http_client(url, http_client=http), mode=mode) as agent,  # type: ignore[arg-type]
    ):
        yield agent


async def test_one_sessions_failed_calls_do_not_escalate_another_sessions_writes(
    stack: Stack, client_settings: ClientSettings, tmp_path: Path, wait_for: Any
) -> None:
    """Finding: session 1's failures made session 2's low-risk write escalate `repeated_tool_errors` (one task per gateway)."""
    async with http_gateway(stack, client_settings) as url:
        async with session(url) as first:
            for _ in range(2):  # the upstream refuses a blank note: two failed calls of this session's task
                failed = await first.call_tool("notes_add_note", {"customer": "cus_1001", "text": " "})
                assert (failed.is_error, failed.structured_content["outcome"]) == (True, "failed"), failed.content
            tries = iter(range(1000))

            async def escalated() -> dict[str, Any] | None:  # once the policy has learned both failures
                answer = await first.call_tool("notes_add_note", {"customer": "cus_1001", "text": f"after failures {next(tries)}"})
                return answer.structured_content if answer.structured_content.get("outcome") == "pending" else None

            held = await wait_for(escalated, timeout=60, interval=0.2, what="session 1's write to escalate")
            assert held["reasons"] == ["repeated_tool_errors"]
            # Finding F5: naming a fresh `_meta` session inside the Mcp-Session-Id session left its task (what it read, how
            # its calls ended) and the write ran. A transport session is one task: refused, nothing proposed.
            escape = await first.call_tool(
                "notes_add_note", {"customer": "cus_1009", "text": "escape"}, meta={SESSION_META: "a-fresh-session"}
            )
            assert escape.is_error, escape.content
            assert (escape.structured_content["outcome"], escape.structured_content["reason"]) == ("invalid_request", "session_in_session")
            still = await first.call_tool("notes_add_note", {"customer": "cus_1009", "text": "still held"})
            assert (still.structured_content["outcome"], still.structured_content["reasons"]) == ("pending", ["repeated_tool_errors"])

        async with session(url) as second:  # another MCP session (its own Mcp-Session-Id) of the same gateway
            added = await second.call_tool("notes_add_note", {"customer": "cus_1002", "text": "another session"})
        async with session(url, mode="auto") as third:  # MCP 2026-07-28, no protocol session: it names its own
            named = await third.call_tool("notes_add_note", {"customer": "cus_1003", "text": "named"}, meta={SESSION_META: "conv-3"})
    assert not added.is_error, added.content
    assert added.structured_content["customer"] == "cus_1002"
    assert not named.is_error, named.content
    assert {"cus_1002", "cus_1003"} <= {n["customer"] for n in notes(tmp_path)}
    assert "cus_1009" not in {n["customer"] for n in notes(tmp_path)}


async def test_a_pending_call_repeated_over_stdio_follows_the_first_and_runs_once(
    stack: Stack, client_settings: ClientSettings, tmp_path: Path, wait_for: Any
) -> None:
    """`tidegate mcp serve` on stdio, pending mode, draft: the model repeats the call; one approval, one note, a quiet stderr."""
    pending_mode = {"TIDEGATE_CLIENT_MODE": "draft", "TIDEGATE_MCP_ON_ESCALATION": "pending", "TIDEGATE_MCP_TOOLS": '["notes_add_note"]'}
    call = {"customer": "cus_1005", "text": "refund promised"}
    token = await stack.approver_token("bob@acme.example", ["support", "finance", "ops"])
    stderr = tmp_path / "gateway.stderr"
    with stderr.open("w") as errlog:
        async with mcp.Client(stdio_client(_gateway_process(stack, client_settings, **pending_mode), errlog=errlog)) as agent:
            first = await agent.call_tool("notes_add_note", call)
            assert first.structured_content["outcome"] == "pending", first.content
            ask = {"action_id": first.structured_content["action_id"]}
            polled = await agent.call_tool(STATUS_TOOL, ask)
            again = await agent.call_tool("notes_add_note", call)  # no _meta: the model repeats itself
            elsewhere = await agent.call_tool("notes_add_note", call, meta={SESSION_META: "another-task"})  # the connection is one
            assert elsewhere.is_error, elsewhere.content
            assert elsewhere.structured_content["reason"] == "session_in_session"
            assert "this stdio connection is one task" in elsewhere.content[0].text  # type: ignore[union-attr]
            for answer in (polled, again):
                assert answer.structured_content["outcome"] == "pending", answer.content
                assert answer.structured_content["action_id"] == ask["action_id"]
                assert answer.structured_content["approval_id"] == first.structured_content["approval_id"]
            listing = await stack.http.get(f"{stack.approval.http_url}/api/v1/approvals", headers={"Authorization": f"Bearer {token}"})
            waiting = [a for a in listing.json() if a["status"] == "pending" and a["args"] == call]  # the tenant's other tests' aside
            assert [a["approval_id"] for a in waiting] == [first.structured_content["approval_id"]]
            await stack.decide(first.structured_content["approval_id"], "approve", token)

            async def settled() -> Any:
                answer = await agent.call_tool(STATUS_TOOL, ask)
                return answer if answer.structured_content.get("outcome") != "pending" else None

            done = await wait_for(settled, timeout=60, interval=0.2, what="the approved call's result")
    assert done.structured_content["customer"] == "cus_1005", done.content
    assert [n["customer"] for n in notes(tmp_path)] == ["cus_1005"]
    said = stderr.read_text()
    assert "never retrieved" not in said, said
    assert "Traceback" not in said, said
