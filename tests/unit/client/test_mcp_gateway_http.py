"""The gateway over streamable HTTP: every request carries the bearer token, or it is refused 401 before anything is proposed.

Served as `tidegate mcp serve --http` serves it (the SDK's bearer check, `bearer.http_auth`), over scripted
governance on a memory bus, and called by the `mcp` package's own client.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import httpx2
import mcp
import pytest
import uvicorn
from mcp.client.streamable_http import streamable_http_client
from pydantic import ValidationError
from typer.testing import CliRunner

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
    bus = MemoryTransport()
    tools = {"tag_ticket": lambda args: {"tagged": True}}
    async with ScriptedTidegate(bus, rule, tools=tools) as scripted, Tidegate(transport=bus) as client:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        settings = GatewaySettings(http_port=port)
        app = build_server(client, CATALOG, settings).streamable_http_app(host=settings.http_host, **http_auth(settings, TOKEN))
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        serving = asyncio.create_task(server.serve())
        try:
            while not server.started:
                await asyncio.sleep(0.01)
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


def test_the_token_is_made_on_first_run_readable_by_its_owner_only_and_kept(tmp_path: Path) -> None:
    client = ClientSettings(state_dir=tmp_path / "state" / "client")
    token, source = http_token(GatewaySettings(), client)
    assert source == str(token_file(client))
    assert len(token) >= 32
    assert stat.S_IMODE(token_file(client).stat().st_mode) == 0o600
    assert stat.S_IMODE(client.state_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(client.state_dir.parent.stat().st_mode) == 0o700
    assert http_token(GatewaySettings(), client) == (token, source)  # a restart: the clients keep their token


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
import asyncio, sys
from pathlib import Path
from tidegate.client import ClientSettings, MemoryTransport
from tidegate.client.scripted import ScriptedTidegate
from tidegate.mcp_gateway import GatewaySettings
from tidegate.mcp_gateway.run import serve_http

async def main() -> None:
    bus = MemoryTransport()
    async with ScriptedTidegate(bus, lambda p: ("escalate", "needs_human_approval")):
        settings = GatewaySettings(http_port=int(sys.argv[1]), tools=["tag_ticket"], progress_every_s=0.05)
        await serve_http(settings, ClientSettings(state_dir=Path(sys.argv[2])), token=sys.argv[3], transport=bus)
    print("stopped cleanly", flush=True)

asyncio.run(main())
"""


async def test_sigterm_answers_a_waiting_call_with_its_pending_result_and_exits_0(tmp_path: Path) -> None:
    """systemd and `docker stop` send SIGTERM: the gateway stops as on SIGINT, the waiting call learns what to poll."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    served = subprocess.Popen(
        [sys.executable, "-c", SERVE_HTTP, str(port), str(tmp_path / "state"), TOKEN],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        async with httpx.AsyncClient() as http:
            while served.poll() is None:  # until it listens (or it died: its exit code and stderr are asserted below)
                with contextlib.suppress(httpx.TransportError):
                    await http.get(f"http://127.0.0.1:{port}/mcp")
                    break
                await asyncio.sleep(0.05)
        assert served.poll() is None, served.communicate()
        progress: list[str] = []

        async def on_progress(done: float, total: float | None, message: str | None) -> None:
            progress.append(message or "")

        answer = None
        try:
            async with (
                httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as http2,
                mcp.Client(streamable_http_client(f"http://127.0.0.1:{port}/mcp", http_client=http2)) as agent,
            ):
                args = {"ticket_id": "T-1", "tags": ["vip"]}
                call = asyncio.create_task(agent.call_tool("tag_ticket", args, progress_callback=on_progress))
                while not progress:
                    await asyncio.sleep(0.01)
                served.send_signal(signal.SIGTERM)
                answer = await call
        except* httpx2.ConnectError:  # the gateway exited once it had answered: the client's goodbye on closing may find no one
            assert answer is not None, "the call itself got no answer"
        out, err = served.communicate()
    finally:
        if served.poll() is None:
            served.kill()
            served.communicate()
    assert (served.returncode, out) == (0, "stopped cleanly\n"), err
    assert (answer.is_error, answer.structured_content["outcome"]) == (False, "pending")
    assert answer.structured_content["action_id"] in progress[0]
    assert "The gateway is stopping before a human decided this call" in answer.structured_content["message"]
