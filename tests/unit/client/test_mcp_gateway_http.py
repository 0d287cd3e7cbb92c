"""The gateway over streamable HTTP: every request carries the bearer token, or it is refused 401 before anything is proposed.

Served as `tidegate mcp serve --http` serves it (the SDK's bearer check, `bearer.http_auth`), over scripted
governance on a memory bus, and called by the `mcp` package's own client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import signal
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import mcp
import pytest
import uvicorn
from mcp.client.streamable_http import streamable_http_client
from pydantic import ValidationError
from typer.testing import CliRunner

from tests.conftest import eventually
from tests.unit.client.test_mcp_gateway import CATALOG, rule
from tidegate.cli import app as cli
from tidegate.client import ClientSettings, MemoryTransport, Tidegate
from tidegate.client.scripted import ScriptedTidegate
from tidegate.mcp_gateway import GatewaySettings, build_server
from tidegate.mcp_gateway.bearer import UnprotectedHost, http_auth, http_token, token_file

TOKEN = "a-test-token-of-the-gateway-0123456789"
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "curl", "version": "1"}},
}


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, ScriptedTidegate]]:
    """The gateway's HTTP app on a free loopback port: (its /mcp URL, the governance behind it)."""
    async with _serving({"tag_ticket": lambda args: {"tagged": True}}) as answer:
        yield answer


@contextlib.asynccontextmanager
async def _serving(tools: dict[str, Any]) -> AsyncIterator[tuple[str, ScriptedTidegate]]:
    bus = MemoryTransport()
    async with ScriptedTidegate(bus, rule, tools=tools) as scripted, Tidegate(transport=bus) as client:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        settings = GatewaySettings(http_port=port)
        app = build_server(client, CATALOG, settings).streamable_http_app(host=settings.http_host, **http_auth(settings, TOKEN))
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        serving = asyncio.create_task(server.serve())
        try:
            await eventually(lambda: server.started, what="uvicorn serving")
            yield f"http://127.0.0.1:{port}/mcp", scripted
        finally:
            server.should_exit = True
            await serving


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer not-the-token"}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": f"Bearer {TOKEN}x"}],
    ids=["none", "wrong", "not-bearer", "longer"],
)
async def test_a_request_without_the_token_is_refused_401_and_proposes_nothing(
    served: tuple[str, ScriptedTidegate], headers: dict[str, str]
) -> None:
    url, scripted = served
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "tag_ticket", "arguments": {"ticket_id": "T-1"}}}
    accept = {"Accept": "application/json, text/event-stream", **headers}
    async with httpx.AsyncClient(timeout=10) as http:
        for body in (INITIALIZE, call):
            answer = await http.post(url, json=body, headers=accept)
            assert answer.status_code == 401, answer.text
            assert answer.headers["www-authenticate"].startswith("Bearer ")
    assert scripted.proposals == []


async def test_the_mcp_client_sending_the_token_lists_and_calls_governed_tools(served: tuple[str, ScriptedTidegate]) -> None:
    url, scripted = served
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as http,
        mcp.Client(streamable_http_client(url, http_client=http)) as agent,
    ):
        assert "tag_ticket" in [t.name for t in (await agent.list_tools()).tools]
        result = await agent.call_tool("tag_ticket", {"ticket_id": "T-2"})
        denied = await agent.call_tool("delete_customer_data", {"customer_id": "c"})
    assert (result.is_error, result.structured_content) == (False, {"tagged": True})
    assert (denied.is_error, denied.structured_content["reasons"]) == (True, ["human_only"])
    assert scripted.calls == {"tag_ticket": [{"ticket_id": "T-2"}]}


async def test_the_docs_client_snippet_waits_for_a_call_that_takes_longer_than_httpx_default_timeout() -> None:
    """The teammate's MCP client, copied from docs/integrations.md, calls a tool whose answer takes 7 s.

    A governed call waits for the policy, a human (progress every 5 s in `wait` mode) and the tool: the snippet's
    httpx2 client once had httpx's default 5 s timeout, and the call died with `ReadTimeout` (integrator probe F2).
    """

    async def slow(args: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(7)
        return {"tagged": True}

    docs = (Path(__file__).parents[3] / "docs" / "integrations.md").read_text()
    snippet = docs.split("**Streamable HTTP needs a bearer token.**")[1].split("```python\n")[1].split("```")[0]
    async with _serving({"tag_ticket": slow}) as (url, scripted):
        body = snippet.replace("http://127.0.0.1:8765/mcp", url).replace("await agent.call_tool", "return await agent.call_tool")
        scope: dict[str, Any] = {}
        exec("async def run(token):\n" + "\n".join("    " + line for line in body.splitlines()), scope)  # as pasted
        result = await scope["run"](TOKEN)
    assert (result.is_error, result.structured_content) == (False, {"tagged": True})
    assert scripted.calls == {"tag_ticket": [{"ticket_id": "T-1", "tags": ["vip"]}]}


def test_the_token_is_made_on_first_run_readable_by_its_owner_only_and_kept(tmp_path: Path) -> None:
    client = ClientSettings(state_dir=tmp_path / "state" / "client")
    token, source = http_token(GatewaySettings(), client)
    assert source == str(token_file(client))
    assert len(token) >= 32
    assert stat.S_IMODE(token_file(client).stat().st_mode) == 0o600
    assert stat.S_IMODE(client.state_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(client.state_dir.parent.stat().st_mode) == 0o700
    assert http_token(GatewaySettings(), client) == (token, source)  # a restart: the clients keep their token


def test_two_gateways_starting_at_once_for_the_first_time_serve_the_token_the_file_holds(tmp_path: Path) -> None:
    """Each first run made a token and wrote it: the gateway whose write came first served a token no file held, and
    every client given the file's was refused 401 by it."""
    for round_ in range(20):
        client = ClientSettings(state_dir=tmp_path / f"state{round_}" / "client")
        gate = threading.Barrier(6)
        tokens: list[str] = []

        def start(client: ClientSettings = client, gate: threading.Barrier = gate, tokens: list[str] = tokens) -> None:
            gate.wait()
            tokens.append(http_token(GatewaySettings(), client)[0])

        starts = [threading.Thread(target=start) for _ in range(6)]
        for thread in starts:
            thread.start()
        for thread in starts:
            thread.join()
        assert set(tokens) == {token_file(client).read_text().strip()}


def test_a_client_reading_the_token_file_while_the_first_run_makes_it_never_reads_it_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first run made the file empty, then wrote the token into it in place: a client (or the gateway's own check of
    each request) reading it in between read nothing, and was refused 401. The token file now appears whole or not at all."""
    client = ClientSettings(state_dir=tmp_path / "state" / "client")
    seen: list[str | None] = []
    made = secrets.token_urlsafe

    def making(nbytes: int) -> str:  # the moment between deciding to make a token and having written it
        path = token_file(client)
        seen.append(path.read_text() if path.exists() else None)
        return made(nbytes)

    monkeypatch.setattr("tidegate.mcp_gateway.bearer.secrets.token_urlsafe", making)
    token, _ = http_token(GatewaySettings(), client)
    assert seen == [None]  # no empty file for a reader to take for the token
    assert token_file(client).read_text() == f"{token}\n"


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.2"])
def test_a_loopback_host_may_use_the_token_made_on_first_run(tmp_path: Path, host: str) -> None:
    _, source = http_token(GatewaySettings(http_host=host), ClientSettings(state_dir=tmp_path))
    assert source == str(tmp_path / "mcp-gateway.token")


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::", "gateway.example"])
def test_listening_beyond_loopback_needs_a_token_chosen_for_it(tmp_path: Path, host: str) -> None:
    client = ClientSettings(state_dir=tmp_path)
    with pytest.raises(UnprotectedHost, match="set TIDEGATE_MCP_HTTP_TOKEN"):
        http_token(GatewaySettings(http_host=host), client)
    assert not token_file(client).exists()
    assert http_token(GatewaySettings(http_host=host, http_token=TOKEN), client) == (TOKEN, "TIDEGATE_MCP_HTTP_TOKEN")  # type: ignore[arg-type]


@pytest.mark.parametrize("token", ["short", "   ", " 123456789012345 "])
def test_a_token_too_short_to_resist_guessing_is_refused(token: str) -> None:
    with pytest.raises(ValidationError, match="shorter than 16 characters"):
        GatewaySettings(http_token=token)  # type: ignore[arg-type]


def test_serving_http_beyond_loopback_without_a_token_is_one_line_before_anything_starts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("COLUMNS", "400")
    monkeypatch.setenv("TIDEGATE_MCP_HTTP_HOST", "0.0.0.0")
    monkeypatch.setenv("TIDEGATE_CLIENT_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("TIDEGATE_MCP_HTTP_TOKEN", raising=False)
    result = CliRunner().invoke(cli, ["mcp", "serve", "--http"])
    assert result.exit_code != 0
    assert result.output.count("\n") == 1, result.output
    assert "TIDEGATE_MCP_HTTP_HOST is 0.0.0.0, beyond this machine: set TIDEGATE_MCP_HTTP_TOKEN" in result.output


SERVE_HTTP = """
import asyncio, signal, sys
from pathlib import Path
from sse_starlette import sse
from tidegate.client import ClientSettings, MemoryTransport
from tidegate.client.scripted import ScriptedTidegate
from tidegate.mcp_gateway import GatewaySettings, server
from tidegate.mcp_gateway.run import serve_http

port, state, token, held = int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4:] == ["held"]
looks: list[asyncio.Event] = []
find_server = sse._get_uvicorn_server  # sse-starlette's watcher calls it each time it looks (every 0.5 s) whether the server stops

def looking():
    for look in looks:
        look.set()
    looks.clear()
    return find_server()

sse._get_uvicorn_server = looking

async def look() -> None:
    looks.append(looked := asyncio.Event())
    await looked.wait()

async def past_the_watcher() -> None:
    '''Once the server stops, until sse-starlette's watcher looked twice more: had it seen the stop, it ended every SSE stream.'''
    stopped = signal.getsignal(signal.SIGTERM).__self__
    while not stopped.should_exit:
        await look()
    await look()
    await look()

async def running(args):  # tag_ticket T-2 is allowed: it runs until the server stopped, then past the watcher
    (state.parent / "running").touch()
    await past_the_watcher()
    return {"tagged": True}

if held:  # and a call waiting for a human is answered pending once the server stops, then held past the watcher
    waited = server._wait_for_human

    async def _wait_for_human(*args):
        answer = await waited(*args)
        await past_the_watcher()
        return answer

    server._wait_for_human = _wait_for_human

def rule(p):
    return ("allow", "low_risk_write_allowed") if p.args["ticket_id"] == "T-2" else ("escalate", "needs_human_approval")

async def main() -> None:
    bus = MemoryTransport()
    async with ScriptedTidegate(bus, rule, tools={"tag_ticket": running}):
        # stop_grace_s: no test waits for it; only a call cut off would
        settings = GatewaySettings(http_port=port, tools=["tag_ticket"], progress_every_s=0.05, stop_grace_s=60)
        await serve_http(settings, ClientSettings(state_dir=state), token=token, transport=bus)
    print("stopped cleanly", flush=True)

asyncio.run(main())
"""


@contextlib.asynccontextmanager
async def _gateway_process(tmp_path: Path, *hooks: str) -> AsyncIterator[tuple[subprocess.Popen[str], str]]:
    """`SERVE_HTTP` in a process of its own, listening: (the process, its /mcp URL); killed afterwards if it still runs.

    `hooks`: `held` holds the answer of a call waiting for a human past sse-starlette's watcher once the server stops.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/mcp"
    served = subprocess.Popen(
        [sys.executable, "-c", SERVE_HTTP, str(port), str(tmp_path / "state"), TOKEN, *hooks],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        async with httpx.AsyncClient() as http:

            async def listening() -> httpx.Response | None:
                assert served.poll() is None, served.communicate()  # it died: its exit code and stderr
                with contextlib.suppress(httpx.TransportError):
                    return await http.get(url)
                return None

            await eventually(listening, timeout=60, what="the gateway listening")
        yield served, url
    finally:
        if served.poll() is None:
            served.kill()
            served.communicate()


async def test_sigterm_answers_a_waiting_call_with_its_pending_result_and_exits_0(tmp_path: Path) -> None:
    """systemd and `docker stop` send SIGTERM: the gateway stops as on SIGINT, the waiting call learns what to poll.

    The tools are listed first, as a host lists them for its model: the SDK's client checks a result against the tool's
    listed output schema, and asks `tools/list` after the answer for a tool it never listed, which a stopped gateway refuses.
    """
    progress: list[str] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append(message or "")

    async with (
        _gateway_process(tmp_path) as (served, url),
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as http,
        mcp.Client(streamable_http_client(url, http_client=http)) as agent,
    ):
        await agent.list_tools()
        call = asyncio.create_task(agent.call_tool("tag_ticket", {"ticket_id": "T-1", "tags": ["vip"]}, progress_callback=on_progress))
        await eventually(lambda: progress, what="the call waiting for a human")
        served.send_signal(signal.SIGTERM)
        answer = await call
        out, err = await asyncio.to_thread(served.communicate, timeout=60)
    assert (served.returncode, out) == (0, "stopped cleanly\n"), err
    assert (answer.is_error, answer.structured_content["outcome"]) == (False, "pending")
    assert answer.structured_content["action_id"] in progress[0]
    assert "The gateway is stopping before a human decided this call" in answer.structured_content["message"]


async def test_the_pending_answer_is_sent_before_the_gateway_exits(tmp_path: Path) -> None:
    """However slow its caller, the stopping gateway has sent the waiting call's answer once it has exited: read only then."""
    accept = {"Authorization": f"Bearer {TOKEN}", "Accept": "application/json, text/event-stream"}
    call = {
        "jsonrpc": "2.0",
        "id": 2,
        "method": "tools/call",
        "params": {"name": "tag_ticket", "arguments": {"ticket_id": "T-1", "tags": ["vip"]}, "_meta": {"progressToken": "p"}},
    }
    async with _gateway_process(tmp_path) as (served, url), httpx.AsyncClient(headers=accept, timeout=30) as http:
        opened = await http.post(url, json=INITIALIZE)
        session = {"Mcp-Session-Id": opened.headers["mcp-session-id"], "Mcp-Protocol-Version": "2025-06-18"}
        await http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=session)
        async with http.stream("POST", url, json=call, headers=session) as answer:
            events = (json.loads(line.removeprefix("data:")) async for line in answer.aiter_lines() if line.startswith("data:"))
            assert (await anext(events))["method"] == "notifications/progress"  # the call waits for a human
            served.send_signal(signal.SIGTERM)
            await eventually(lambda: served.poll() is not None, timeout=60, what="the gateway exited")
            sent = [event async for event in events]
    assert served.returncode == 0, served.communicate()
    assert [event["id"] for event in sent if "id" in event] == [2]
    assert sent[-1]["result"]["structuredContent"]["outcome"] == "pending"


async def test_sigterm_cuts_no_answer_held_past_the_sse_watcher(tmp_path: Path) -> None:
    """A session's answers go over sse-starlette's SSE streams, which it ends once it sees the server stop: told only once no
    call is open, it cuts neither the pending answer of a call waiting for a human nor a running call, both answered only
    after its watcher looked twice since SIGTERM (without the fix: `MCPError: SSE stream ended without a response`).
    """
    progress: list[str] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append(message or "")

    async with (
        _gateway_process(tmp_path, "held") as (served, url),
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as http,
        mcp.Client(streamable_http_client(url, http_client=http), mode="legacy") as agent,
    ):
        await agent.list_tools()
        waits = asyncio.create_task(agent.call_tool("tag_ticket", {"ticket_id": "T-1", "tags": ["vip"]}, progress_callback=on_progress))
        runs = asyncio.create_task(agent.call_tool("tag_ticket", {"ticket_id": "T-2", "tags": ["vip"]}))
        await eventually(lambda: progress and (tmp_path / "running").exists(), what="one call waiting for a human, one running")
        served.send_signal(signal.SIGTERM)
        waited, ran = await waits, await runs
        out, err = await asyncio.to_thread(served.communicate, timeout=90)
    assert (served.returncode, out) == (0, "stopped cleanly\n"), err
    assert "timeout graceful shutdown exceeded" not in err  # its session's GET stream too ended once both were answered
    assert (waited.is_error, waited.structured_content["outcome"]) == (False, "pending")
    assert (ran.is_error, ran.structured_content) == (False, {"tagged": True})
