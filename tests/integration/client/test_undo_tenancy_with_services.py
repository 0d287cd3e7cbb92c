"""Attacker test against the real broker and services: a write's `before` read never runs for a tenant it is not granted to.

As an outside review found (security4 F3): acme's write `acme_note` declares an undo whose `before` read is
`globex_crm`, a tool the catalog grants globex alone (`tenants: [globex]`). The policy checked `tenants` for the proposed
tool only and allowed acme's write; the executor then called `globex_crm` for acme (no policy of its own) and put its
answer in acme's undo plan. The policy now denies the write `tool_not_granted`, naming the read: neither runs.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import yaml
from conftest import Stack

from servicekit import KitSettings
from tidegate.client import ClientSettings, Denied, Tidegate

ARGS = {"type": "object", "additionalProperties": False, "required": ["customer"], "properties": {"customer": {"type": "string"}}}


class ToolServer:
    """The tools' REST API on a local port: records each request's path, tenant header and body, answers 200."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in head[1:] if ":" in line)}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            path = head[0].split(" ")[1]
            self.requests.append({"path": path, "tenant": headers.get("x-tidegate-tenant"), "json": json.loads(body or b"null")})
            answer = json.dumps({"record": "globex-secret-record"} if path == "/crm" else {"note_id": "n-1"}).encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(answer)
            )
            writer.write(answer)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def tool_server() -> AsyncIterator[ToolServer]:
    tools = ToolServer()
    tools.server = await asyncio.start_server(tools.serve, "127.0.0.1", 0)
    try:
        yield tools
    finally:
        tools.server.close()


def _http_tool(name: str, risk: str, tenants: list[str], url: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "description": name, "risk": risk, "kind": "http", "url": url, "accepts_idempotency_key": True,
            "timeout_s": 5, "tenants": tenants, "args_schema": ARGS, **extra}  # fmt: skip


@pytest.fixture
def kit(kit: KitSettings, tool_server: ToolServer) -> KitSettings:
    """The client stack's kit with these tools in its catalog (written before the services load it)."""
    before = {"tool": "globex_crm", "args": {"customer": "args.customer"}}
    tools = [
        _http_tool("globex_crm", "read", ["globex"], f"{tool_server.url}/crm", untrusted_output=False),  # globex's records alone
        _http_tool("acme_unnote", "write_low", ["acme"], f"{tool_server.url}/unnote", undo={"irreversible": "a person restores it"}),
        _http_tool(
            "acme_note", "write_low", ["acme"], f"{tool_server.url}/note",
            undo={"tool": "acme_unnote", "args": {"customer": "args.customer"}, "before": before},
        ),
    ]  # fmt: skip
    for spec in tools:
        (kit.tools_dir / f"{spec['name']}.yaml").write_text(yaml.safe_dump(spec))
    return kit


async def test_acmes_write_whose_before_read_is_globexs_is_denied_and_the_read_never_runs(
    stack: Stack, client_settings: ClientSettings, tool_server: ToolServer
) -> None:
    async with Tidegate(client_settings) as acme:
        outcome = await acme.propose("acme_note", {"customer": "globex-vip-42"})
    # Before: the policy allowed the write, and the executor read globex's CRM for acme, then wrote the note.
    assert tool_server.requests == []
    assert isinstance(outcome, Denied), outcome
    assert outcome.codes == ["tool_not_granted"]
    [reason] = outcome.reasons
    assert reason.policy_id == "builtin:tool-tenants:before"
    assert "'acme_note' reads the state its undo restores with 'globex_crm'" in reason.message
    assert "globex'" not in reason.message.replace("'globex_crm'", "")  # acme learns no other tenant's id
