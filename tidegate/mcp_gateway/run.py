"""Serve the gateway over stdio or streamable HTTP: one client, the catalog, one MCP server."""

from __future__ import annotations

import uvicorn
from mcp.server.stdio import stdio_server

from servicekit import ToolCatalog
from tidegate.client import ClientSettings, Tidegate
from tidegate.mcp_gateway.server import build_server
from tidegate.mcp_gateway.settings import GatewaySettings

__all__ = ["serve_http", "serve_stdio"]


async def serve_stdio(settings: GatewaySettings, client_settings: ClientSettings) -> None:
    """Serve one MCP client on this process's stdin/stdout until it disconnects."""
    catalog = ToolCatalog.load(settings.tools_dir)
    async with Tidegate(client_settings) as client:
        server = build_server(client, catalog.tools.values(), settings)
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())


async def serve_http(settings: GatewaySettings, client_settings: ClientSettings) -> None:
    """Serve streamable HTTP at `http://<host>:<port>/mcp` until stopped."""
    catalog = ToolCatalog.load(settings.tools_dir)
    async with Tidegate(client_settings) as client:
        server = build_server(client, catalog.tools.values(), settings)
        app = server.streamable_http_app(host=settings.http_host)
        await uvicorn.Server(uvicorn.Config(app, host=settings.http_host, port=settings.http_port, log_level="warning")).serve()
