"""The MCP gateway shows a client only the tools its tenant may call, and answers a call of another tenant's as an unknown tool's.

`tenants` grants an outside tool to the tenants it names (the policy denies any other `tool_not_granted`). Before,
`tools/list` gave every client every catalog tool: a gateway of initech listed acme's own system, its description and
schema, and proposed initech's calls of it for the policy to deny. Driven by the `mcp` package's own client, as initech
acting as the attacker: acme's tool is not listed, and calling it by name gets the protocol's unknown-tool error (-32602),
word for word the one a tool that does not exist gets, nothing proposed, and the gateway logs it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import mcp
import pytest
from mcp import MCPError
from mcp import types as mcp_types

from schemas import ActionProposedData, ToolSpec
from tidegate.client import ClientSettings, MemoryTransport, Tidegate
from tidegate.client.scripted import LocalTool, ScriptedTidegate
from tidegate.mcp_gateway import STATUS_TOOL, GatewaySettings, build_server

ACME_ONLY = "Syncs a ticket into ACME-LEDGER-7, acme's own accounting system"
SCHEMA = {"type": "object", "properties": {"ticket_id": {"type": "string"}, "ledger_code": {"type": "string"}}}
CATALOG = [
    ToolSpec.model_validate(
        {
            "name": "tag_ticket",
            "description": "tag a ticket",
            "risk": "write_low",
            "kind": "python",
            "entrypoint": "x:y",
            "args_schema": SCHEMA,
        }
    ),
    ToolSpec.model_validate(
        {
            "name": "acme_ledger_sync",
            "description": ACME_ONLY,
            "risk": "write_low",
            "kind": "http",
            "url": "https://ledger.acme.example/sync",
            "tenants": ["acme"],
            "args_schema": SCHEMA,
        }
    ),
]


def allow(p: ActionProposedData) -> tuple[str, str]:
    return "allow", "low_risk_write_allowed"


@asynccontextmanager
async def gateway_of(tenant: str) -> AsyncIterator[tuple[mcp.Client, ScriptedTidegate]]:
    """An `mcp` client of a gateway whose client proposes for `tenant`, and the governance behind it (which allows all)."""
    bus = MemoryTransport()
    tools: dict[str, LocalTool] = {
        "tag_ticket": lambda args: {"tagged": True},
        "acme_ledger_sync": lambda args: {"synced": True},
    }
    async with (
        ScriptedTidegate(bus, allow, tools=tools) as scripted,
        Tidegate(ClientSettings(tenant=tenant), transport=bus) as client,
        mcp.Client(build_server(client, CATALOG, GatewaySettings())) as mcp_client,
    ):
        yield mcp_client, scripted


async def test_acme_s_gateway_lists_and_calls_its_granted_tool() -> None:
    async with gateway_of("acme") as (client, scripted):
        listed = (await client.list_tools()).tools
        assert [t.name for t in listed] == ["tag_ticket", "acme_ledger_sync", STATUS_TOOL]
        assert listed[1].description == ACME_ONLY
        called = await client.call_tool("acme_ledger_sync", {"ticket_id": "T-1"})
    assert (called.is_error, called.structured_content) == (False, {"synced": True})
    assert [(p.tenant_id, p.tool) for p in scripted.proposals] == [("acme", "acme_ledger_sync")]


async def test_initech_s_gateway_does_not_list_acme_s_tool_and_a_call_of_it_is_an_unknown_tool(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="tidegate.mcp_gateway.server")
    async with gateway_of("initech") as (client, scripted):
        listed = await client.list_tools()
        assert [t.name for t in listed.tools] == ["tag_ticket", STATUS_TOOL]
        shown = listed.model_dump_json()
        assert "acme_ledger_sync" not in shown
        assert ACME_ONLY not in shown
        with pytest.raises(MCPError) as refused:
            await client.call_tool("acme_ledger_sync", {"ticket_id": "T-1"})
        with pytest.raises(MCPError) as unknown:
            await client.call_tool("acme_ledger_synk", {"ticket_id": "T-1"})
        assert (await client.call_tool("tag_ticket", {"ticket_id": "T-1"})).structured_content == {"tagged": True}  # still served
    assert refused.value.code == unknown.value.code == mcp_types.INVALID_PARAMS
    # Answered as a tool that does not exist is: the answer does not tell initech the name is another tenant's tool.
    assert refused.value.message == unknown.value.message.replace("acme_ledger_synk", "acme_ledger_sync")
    assert 'unknown tool "acme_ledger_sync"' in refused.value.message
    assert [(p.tenant_id, p.tool) for p in scripted.proposals] == [("initech", "tag_ticket")]  # acme's tool was never proposed
    [logged] = [r for r in caplog.records if r.name == "tidegate.mcp_gateway.server"]  # the ungranted call; a made-up name is not
    assert logged.levelno == logging.WARNING
    assert '"acme_ledger_sync", which tenant initech may not call' in logged.getMessage()
