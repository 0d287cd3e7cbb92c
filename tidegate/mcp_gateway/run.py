"""Serve the gateway over stdio or streamable HTTP: one client, the catalog, one MCP server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import uvicorn
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

from schemas import ToolSpec
from servicekit import ToolCatalog
from tidegate.client import ClientSettings, SqliteProposals, Tidegate, Transport
from tidegate.mcp_gateway.bearer import http_auth
from tidegate.mcp_gateway.server import build_server
from tidegate.mcp_gateway.settings import GatewaySettings
from tidegate.mcp_gateway.tasks import SqliteActionTasks

__all__ = ["gateway", "serve_http", "serve_stdio", "state_file"]


def state_file(client_settings: ClientSettings) -> Path:
    """Where the gateway keeps what it proposed: in the client's state dir, one file per deployment (topic prefix)."""
    return client_settings.state_dir / f"mcp-gateway.{client_settings.topic_prefix}sqlite3"


@asynccontextmanager
async def gateway(
    settings: GatewaySettings, client_settings: ClientSettings, catalog: Iterable[ToolSpec], *, transport: Transport | None = None
) -> AsyncIterator[Server[Any]]:
    """The gateway's MCP server over a started client, what it proposed kept in `state_file`.

    Kept on disk, a gateway restarted (or another one sharing the state dir) still knows each action it
    proposed, its task, and where its answers start: a `tidegate_action_status` poll without a position
    answers, and a call retried under its action id follows the first proposal (or sends it, if it never went out).
    """
    proposals, tasks = SqliteProposals(state_file(client_settings)), SqliteActionTasks(state_file(client_settings))
    try:
        async with Tidegate(client_settings, transport=transport, proposals=proposals) as client:
            yield build_server(client, catalog, settings, tasks)
    finally:
        tasks.close()
        proposals.close()


async def serve_stdio(settings: GatewaySettings, client_settings: ClientSettings) -> None:
    """Serve one MCP client on this process's stdin/stdout until it disconnects."""
    catalog = ToolCatalog.load(settings.tools_dir)
    async with gateway(settings, client_settings, catalog.tools.values()) as server, stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


async def serve_http(settings: GatewaySettings, client_settings: ClientSettings, *, token: str) -> None:
    """Serve streamable HTTP at `http://<host>:<port>/mcp` until stopped, to clients that send `token` (`bearer.http_token`)."""
    catalog = ToolCatalog.load(settings.tools_dir)
    async with gateway(settings, client_settings, catalog.tools.values()) as server:
        app = server.streamable_http_app(host=settings.http_host, **http_auth(settings, token))
        await uvicorn.Server(uvicorn.Config(app, host=settings.http_host, port=settings.http_port, log_level="warning")).serve()
