"""The HTTP gateway's bearer token rotated with no client refused, and after a leak at once (rotation probe F8).

The token made on first run (`<state>/mcp-gateway.token`) had no rotation: a new one meant deleting the file and
restarting the gateway, every client refused until it had the new one, and it was not among `tidegate credentials`.
`tidegate mcp rotate-token` writes a new token and keeps the former beside it; the running gateway reads both at each
request, so clients switch while both work, until `--finish`; `--leaked` drops the former at once. These tests act as
a client holding the former token and one given the new token, against the gateway as `mcp serve --http` serves it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from typer.testing import CliRunner

from tests.conftest import eventually
from tests.unit.client.test_mcp_gateway import CATALOG, rule
from tests.unit.client.test_mcp_gateway_http import INITIALIZE
from tidegate.cli import app as cli
from tidegate.client import ClientSettings, MemoryTransport, Tidegate
from tidegate.client.scripted import ScriptedTidegate
from tidegate.mcp_gateway import GatewaySettings, build_server
from tidegate.mcp_gateway.bearer import former_token_file, http_auth, http_token, token_file

ACCEPT = {"Accept": "application/json, text/event-stream"}


@contextlib.asynccontextmanager
async def _serving(state: Path) -> AsyncIterator[tuple[str, str]]:
    """The gateway on a free loopback port with the token made on first run in `state`: (its /mcp URL, the token)."""
    client_settings = ClientSettings(state_dir=state)
    settings = GatewaySettings()
    token, source = http_token(settings, client_settings)
    bus = MemoryTransport()
    async with ScriptedTidegate(bus, rule, tools={"tag_ticket": lambda args: {"tagged": True}}), Tidegate(transport=bus) as client:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        served = GatewaySettings(http_port=port)
        app = build_server(client, CATALOG, served).streamable_http_app(host="127.0.0.1", **http_auth(served, token, Path(source)))
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        serving = asyncio.create_task(server.serve())
        try:
            await eventually(lambda: server.started, what="uvicorn serving")
            yield f"http://127.0.0.1:{port}/mcp", token
        finally:
            server.should_exit = True
            await serving


async def _status(url: str, token: str) -> int:
    async with httpx.AsyncClient(timeout=10) as http:
        return (await http.post(url, json=INITIALIZE, headers=ACCEPT | {"Authorization": f"Bearer {token}"})).status_code


def _rotate(state: Path, monkeypatch: pytest.MonkeyPatch, *flags: str) -> str:
    monkeypatch.setenv("TIDEGATE_CLIENT_STATE_DIR", str(state))
    done = CliRunner().invoke(cli, ["mcp", "rotate-token", *flags], env={"COLUMNS": "300"})
    assert done.exit_code == 0, done.output
    return token_file(ClientSettings(state_dir=state)).read_text().strip()


async def test_clients_switch_while_both_tokens_work_then_only_the_new_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "client"
    async with _serving(state) as (url, former):
        assert await _status(url, former) == 200
        new = _rotate(state, monkeypatch)  # no restart of the gateway
        assert new != former
        assert (await _status(url, former), await _status(url, new)) == (200, 200)
        _rotate(state, monkeypatch, "--finish")
        assert (await _status(url, former), await _status(url, new)) == (401, 200)
        assert not former_token_file(token_file(ClientSettings(state_dir=state))).exists()


async def test_the_holder_of_a_leaked_token_is_refused_from_the_next_request(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "client"
    async with _serving(state) as (url, leaked):
        _rotate(state, monkeypatch)  # a routine rotation under way: the leaked token is its former one
        new = _rotate(state, monkeypatch, "--leaked")
        assert (await _status(url, leaked), await _status(url, new)) == (401, 200)


def test_a_token_the_operator_set_is_theirs_to_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDEGATE_CLIENT_STATE_DIR", str(tmp_path / "client"))
    monkeypatch.setenv("TIDEGATE_MCP_HTTP_TOKEN", "a-token-of-the-operators-0123456789")
    done = CliRunner().invoke(cli, ["mcp", "rotate-token"], env={"COLUMNS": "300"})
    assert done.exit_code == 2
    assert "TIDEGATE_MCP_HTTP_TOKEN" in done.output
