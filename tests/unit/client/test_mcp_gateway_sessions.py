"""Each MCP session proposes under a task of its own, and a call repeated while it waits for a human is followed, not proposed again.

Driven by the `mcp` package's own client (in memory, and over streamable HTTP in both protocol eras), over scripted
governance on a memory bus: the task each proposal carries is what the policy keys its task state on (what the task
read, how its calls ended, its retries), so two sessions with one task share that state.
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
import pytest
import uvicorn
from mcp.client.streamable_http import streamable_http_client

from tests.unit.client.test_mcp_gateway import CATALOG, approve_when_pending, rule, text_of
from tidegate.client import ClientSettings, MemoryTransport, Tidegate
from tidegate.client.scripted import ScriptedTidegate
from tidegate.mcp_gateway import SESSION_META, STATUS_TOOL, GatewaySettings, build_server
from tidegate.mcp_gateway.bearer import http_auth
from tidegate.mcp_gateway.run import gateway

TOKEN = "a-test-token-of-the-gateway-0123456789"
TOOLS = {"issue_refund": lambda args: {"refunded": args["amount_usd"]}, "tag_ticket": lambda args: {"tagged": args["ticket_id"]}}
REFUND = {"amount_usd": 903.0}


@pytest.fixture
async def governance() -> AsyncIterator[tuple[ScriptedTidegate, Tidegate]]:
    bus = MemoryTransport()
    async with ScriptedTidegate(bus, rule, tools=TOOLS) as scripted, Tidegate(transport=bus) as client:
        yield scripted, client


async def serve_http(server: Any) -> tuple[str, uvicorn.Server, asyncio.Task[None]]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = GatewaySettings(http_port=port)
    app = server.streamable_http_app(host=settings.http_host, **http_auth(settings, TOKEN))
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(uv.serve())
    while not uv.started:
        await asyncio.sleep(0.01)
    return f"http://127.0.0.1:{port}/mcp", uv, serving


@asynccontextmanager
async def agent_over_http(url: str, mode: str) -> AsyncIterator[mcp.Client]:
    """One MCP client over streamable HTTP: one session (`Mcp-Session-Id`) in `legacy` mode, none in `auto` (2026-07-28)."""
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}) as http,
        mcp.Client(streamable_http_client(url, http_client=http), mode=mode) as agent,  # type: ignore[arg-type]
    ):
        yield agent


async def tags_over_http(url: str, mode: str, tickets: list[str], meta: dict[str, Any] | None = None) -> None:
    """One MCP client (one session, where the protocol era has them) tagging `tickets`."""
    async with agent_over_http(url, mode) as agent:
        for ticket in tickets:
            answer = await agent.call_tool("tag_ticket", {"ticket_id": ticket}, meta=meta)
            assert answer.structured_content == {"tagged": ticket}, answer.content


def tasks_of(scripted: ScriptedTidegate) -> dict[str, str]:
    return {str(p.args.get("ticket_id")): p.task_id for p in scripted.proposals}


async def test_each_streamable_http_session_proposes_under_a_task_of_its_own(governance: tuple[ScriptedTidegate, Tidegate]) -> None:
    """Two MCP sessions (2025-11-25, `Mcp-Session-Id`): each one task for all its calls, neither the other's nor the gateway's."""
    scripted, client = governance
    url, uv, serving = await serve_http(build_server(client, CATALOG, GatewaySettings()))
    try:
        await tags_over_http(url, "legacy", ["A-1", "A-2"])
        await tags_over_http(url, "legacy", ["B-1", "B-2"])
    finally:
        uv.should_exit = True
        await serving
    task = tasks_of(scripted)
    assert task["A-1"] == task["A-2"]
    assert task["B-1"] == task["B-2"]
    assert len({task["A-1"], task["B-1"], client.task_id}) == 3


async def test_without_protocol_sessions_a_client_names_its_session_in_meta(governance: tuple[ScriptedTidegate, Tidegate]) -> None:
    """2026-07-28 (what the SDK's client speaks by default) has no sessions: the `_meta` handle keeps a client's calls in one task."""
    scripted, client = governance
    url, uv, serving = await serve_http(build_server(client, CATALOG, GatewaySettings()))
    try:
        await tags_over_http(url, "auto", ["A-1", "A-2"], meta={SESSION_META: "conversation-a"})
        await tags_over_http(url, "auto", ["B-1"], meta={SESSION_META: "conversation-b"})
        await tags_over_http(url, "auto", ["N-1", "N-2"])  # names no session: the gateway's own task
    finally:
        uv.should_exit = True
        await serving
    task = tasks_of(scripted)
    assert task["A-1"] == task["A-2"] != task["B-1"]
    assert task["N-1"] == task["N-2"] == client.task_id
    assert client.task_id not in (task["A-1"], task["B-1"])


async def test_a_named_session_is_the_same_task_after_a_restart_and_a_bad_name_is_refused(tmp_path: Path) -> None:
    """A restarted gateway (a new client, a new task of its own) proposes a named session's calls under the same task."""
    bus = MemoryTransport()
    settings = ClientSettings(state_dir=tmp_path / "state", decision_timeout_s=5)
    async with ScriptedTidegate(bus, rule, tools=TOOLS) as scripted:
        for ticket in ("R-1", "R-2"):
            async with gateway(GatewaySettings(), settings, CATALOG, transport=bus) as server:
                url, uv, serving = await serve_http(server)
                try:
                    await tags_over_http(url, "auto", [ticket], meta={SESSION_META: "conversation-r"})
                    async with agent_over_http(url, "auto") as agent:
                        refused = await agent.call_tool("tag_ticket", {"ticket_id": "X"}, meta={SESSION_META: "  "})
                finally:
                    uv.should_exit = True
                    await serving
                assert refused.is_error
                assert refused.structured_content["field"] == f"_meta {SESSION_META}"
    task = tasks_of(scripted)
    assert task["R-1"] == task["R-2"]
    assert "X" not in task


async def test_a_meta_session_inside_an_mcp_session_is_refused_and_the_session_stays_one_task(
    governance: tuple[ScriptedTidegate, Tidegate],
) -> None:
    """Finding F5: a client left its Mcp-Session-Id session's task (what it read: its taint) by naming a fresh `_meta` session."""
    scripted, client = governance
    url, uv, serving = await serve_http(build_server(client, CATALOG, GatewaySettings()))
    try:
        async with agent_over_http(url, "legacy") as agent:
            await agent.call_tool("tag_ticket", {"ticket_id": "S-1"})
            escape = await agent.call_tool("tag_ticket", {"ticket_id": "S-escape"}, meta={SESSION_META: "a-fresh-one"})
            await agent.call_tool("tag_ticket", {"ticket_id": "S-2"})
    finally:
        uv.should_exit = True
        await serving
    assert escape.is_error
    assert escape.structured_content == {"outcome": "invalid_request", "field": f"_meta {SESSION_META}", "reason": "session_in_session"}
    assert "Mcp-Session-Id" in text_of(escape)
    assert "nothing was proposed" in text_of(escape)
    task = tasks_of(scripted)
    assert "S-escape" not in task
    assert task["S-1"] == task["S-2"] != client.task_id


async def test_a_meta_session_on_a_stdio_connection_is_refused_and_the_connection_stays_one_task(
    governance: tuple[ScriptedTidegate, Tidegate],
) -> None:
    """A connection (stdio; the SDK's in-memory one alike) is the gateway's one task: a `_meta` session does not leave it."""
    scripted, client = governance
    async with mcp.Client(build_server(client, CATALOG, GatewaySettings())) as agent:  # 2026-07-28 on a connection
        await agent.call_tool("tag_ticket", {"ticket_id": "C-1"})
        escape = await agent.call_tool("tag_ticket", {"ticket_id": "C-escape"}, meta={SESSION_META: "a-fresh-one"})
        await agent.call_tool("tag_ticket", {"ticket_id": "C-2"})
    assert escape.is_error
    assert (escape.structured_content["field"], escape.structured_content["reason"]) == (f"_meta {SESSION_META}", "session_in_session")
    assert "this stdio connection is one task" in text_of(escape)
    task = tasks_of(scripted)
    assert "C-escape" not in task
    assert task["C-1"] == task["C-2"] == client.task_id


async def test_a_call_repeated_while_a_human_decides_follows_the_first_in_its_session_only(
    governance: tuple[ScriptedTidegate, Tidegate],
) -> None:
    """The model repeats a pending refund: the same action and approval, one proposal; another session's same call is its own."""
    scripted, client = governance
    url, uv, serving = await serve_http(build_server(client, CATALOG, GatewaySettings(on_escalation="pending")))
    try:
        async with agent_over_http(url, "legacy") as agent:
            first = await agent.call_tool("issue_refund", REFUND)
            polled = await agent.call_tool(STATUS_TOOL, {"action_id": first.structured_content["action_id"]})
            again = await agent.call_tool("issue_refund", REFUND)  # no _meta: a model that repeats itself
        async with agent_over_http(url, "legacy") as another:  # another MCP session of the same gateway
            other = await another.call_tool("issue_refund", REFUND)
    finally:
        uv.should_exit = True
        await serving
    assert first.structured_content["outcome"] == again.structured_content["outcome"] == "pending"
    for answer in (polled, again):
        assert answer.structured_content["action_id"] == first.structured_content["action_id"]
        assert answer.structured_content["approval_id"] == first.structured_content["approval_id"]
        assert answer.structured_content["reasons"] == ["needs_human_approval"]
        assert first.structured_content["approval_id"] in text_of(answer)
    assert other.structured_content["action_id"] != first.structured_content["action_id"]
    assert len(scripted.proposals) == 2
    assert len(scripted.pending()) == 2  # one approval per session, never two for one


async def test_once_its_session_learned_how_it_ended_the_same_call_is_a_call_of_its_own(
    governance: tuple[ScriptedTidegate, Tidegate],
) -> None:
    scripted, client = governance
    async with mcp.Client(build_server(client, CATALOG, GatewaySettings(on_escalation="pending"))) as agent:
        first = await agent.call_tool("issue_refund", REFUND)
        await approve_when_pending(scripted)
        repeated = await agent.call_tool("issue_refund", REFUND)  # after the approval, before any poll: the first's outcome
        assert (repeated.is_error, repeated.structured_content) == (False, {"refunded": 903.0})
        fresh = await agent.call_tool("issue_refund", REFUND)  # the session knows the first ended: a new refund, a new approval
    assert fresh.structured_content["outcome"] == "pending"
    assert fresh.structured_content["action_id"] != first.structured_content["action_id"]
    assert len(scripted.proposals) == 2
    assert scripted.calls == {"issue_refund": [REFUND]}


async def test_a_poll_that_tells_how_it_ended_ends_the_follow(governance: tuple[ScriptedTidegate, Tidegate]) -> None:
    scripted, client = governance
    async with mcp.Client(build_server(client, CATALOG, GatewaySettings(on_escalation="pending"))) as agent:
        first = await agent.call_tool("issue_refund", REFUND)
        await approve_when_pending(scripted)
        ask = {"action_id": first.structured_content["action_id"]}
        done = await agent.call_tool(STATUS_TOOL, ask)
        assert done.structured_content == {"refunded": 903.0}
        fresh = await agent.call_tool("issue_refund", REFUND)
    assert fresh.structured_content["action_id"] != first.structured_content["action_id"]
    assert len(scripted.proposals) == 2


async def test_in_wait_mode_a_call_repeated_while_the_first_waits_shares_its_approval(
    governance: tuple[ScriptedTidegate, Tidegate],
) -> None:
    """A host that stops waiting without cancelling, then calls again: one approval, both calls answered with the one outcome."""
    scripted, client = governance
    heard: list[str | None] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        heard.append(message)

    async with mcp.Client(build_server(client, CATALOG, GatewaySettings(progress_every_s=0.05))) as agent:
        first = asyncio.create_task(agent.call_tool("issue_refund", REFUND))
        while not scripted.pending():
            await asyncio.sleep(0.01)
        [approval] = scripted.pending()
        second = asyncio.create_task(agent.call_tool("issue_refund", REFUND, progress_callback=on_progress))
        while not heard:  # the second call waits for a human too: on the first's approval, not on one of its own
            await asyncio.sleep(0.01)
        assert f"approval {approval.approval_id}" in str(heard[0])
        assert len(scripted.proposals) == 1
        await scripted.approve(approval.approval_id)
        answers = await asyncio.gather(first, second)
    assert [a.structured_content for a in answers] == [{"refunded": 903.0}] * 2
    assert scripted.calls == {"issue_refund": [REFUND]}


async def test_a_poll_while_a_human_decides_keeps_the_approval_id(governance: tuple[ScriptedTidegate, Tidegate]) -> None:
    scripted, client = governance
    async with mcp.Client(build_server(client, CATALOG, GatewaySettings(on_escalation="pending"))) as agent:
        first = await agent.call_tool("issue_refund", REFUND)
        for ask in (
            {"action_id": first.structured_content["action_id"]},
            {k: first.structured_content[k] for k in ("action_id", "position")},
        ):
            polled = await agent.call_tool(STATUS_TOOL, ask)
            assert polled.structured_content["outcome"] == "pending"
            assert polled.structured_content["approval_id"] == first.structured_content["approval_id"]
            assert polled.structured_content["reasons"] == ["needs_human_approval"]
            assert f"approval {first.structured_content['approval_id']}" in text_of(polled)
    assert scripted.calls == {}
