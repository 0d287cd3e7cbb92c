"""`tidegate mcp serve|import`: the catalog as a governed MCP server; upstream MCP servers into the catalog."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer

from tidegate.commands._common import console, fail

__all__ = ["app"]

app = typer.Typer(help="MCP: serve the catalog's tools, governed; import an upstream MCP server's tools.", no_args_is_help=True)


@app.command("serve")
def serve(
    http: bool = typer.Option(False, "--http", help="Streamable HTTP (default: stdio)."),
    port: int = typer.Option(None, "--port", help="HTTP port (default TIDEGATE_MCP_HTTP_PORT or 8765)."),
    on_escalation: str = typer.Option(None, "--on-escalation", help="`wait` (progress notifications) or `pending` (poll)."),
) -> None:
    """Serve the catalog as an MCP server; every call is proposed, decided, approved if needed, executed once."""
    from tidegate.client import ClientSettings
    from tidegate.mcp_gateway import GatewaySettings
    from tidegate.mcp_gateway.run import serve_http, serve_stdio

    overrides: dict[str, object] = {}
    if port is not None:
        overrides["http_port"] = port
    if on_escalation is not None:
        if on_escalation not in ("wait", "pending"):
            fail("--on-escalation is wait or pending")
        overrides["on_escalation"] = on_escalation
    settings = GatewaySettings(**overrides)  # type: ignore[arg-type]
    asyncio.run((serve_http if http else serve_stdio)(settings, ClientSettings()))


@app.command("import")
def import_tools(
    url: str = typer.Option(None, "--url", help="Streamable HTTP endpoint of the upstream server."),
    command: str = typer.Option(None, "--command", help="Command line that starts a stdio upstream server."),
    out: Path = typer.Option(Path("catalog/tools"), "--out", help="Catalog directory to write into."),
    prefix: str = typer.Option("", "--prefix", help="Prefix for the imported tools' names (e.g. `github_`)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace files that exist."),
) -> None:
    """Write one catalog YAML per upstream tool (kind `mcp`, risk `destructive` until you fill it in)."""
    import shlex

    from schemas import McpUpstream
    from tidegate.mcp_gateway.importer import import_upstream

    if (url is None) == (command is None):
        fail("give exactly one of --url and --command")
    upstream = McpUpstream(url=url, command=shlex.split(command) if command else None, tool="*")
    written = asyncio.run(import_upstream(upstream, out, prefix=prefix, overwrite=overwrite))
    for path in written:
        console.print(f"wrote {path}")
    console.print(f"{len(written)} tool(s) imported; fill in each file's `risk` before the agent relies on them")
