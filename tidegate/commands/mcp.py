"""`tidegate mcp serve|import|rotate-token`: the catalog as a governed MCP server; upstream MCP servers into the catalog; its token."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import typer
from pydantic import ValidationError

from schemas.tools import EVERY_TENANT
from servicekit import REPO_ROOT, configure_logging, settings_problems
from servicekit.catalog import CatalogError
from tidegate.commands._common import console, fail, run, settings

__all__ = ["app"]

T = TypeVar("T")

app = typer.Typer(help="MCP: serve the catalog's tools, governed; import an upstream MCP server's tools.", no_args_is_help=True)


# The gateway reads its own settings for its catalog, not the services' TIDEGATE_TOOLS_DIR (which the CLI's generic line names).
_GATEWAY_CATALOG = (
    "the gateway serves TIDEGATE_MCP_TOOLS_DIR, default the checkout's catalog/tools, then the folders of "
    "TIDEGATE_MCP_EXTRA_TOOLS_DIRS, a JSON list: folders that exist; Tidegate installed as a package has no checkout's "
    "catalog, so set TIDEGATE_MCP_TOOLS_DIR to the deployment's catalog folder, absolute; docs/integrations.md"
)


def _innermost(exc: BaseException) -> BaseException:
    """The first leaf of a (nested) exception group: what went wrong, under anyio's task-group wrapping."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _one_line(exc: BaseException, upstream: str) -> str | None:
    """What a person needs to read about an ordinary failure of the gateway or an import; None for a bug."""
    from mcp import MCPError

    from tidegate.client import SigningNotWired, TrustNotWired
    from tidegate.client.transport import TopicsMissing
    from tidegate.mcp_gateway.bearer import UnprotectedHost
    from tidegate.mcp_gateway.tasks import StateOfAnotherTenant

    if isinstance(exc, CatalogError):
        return f"the gateway's tool catalog: {exc} ({_GATEWAY_CATALOG})"
    if isinstance(exc, ValidationError):
        problems = settings_problems(exc) or [f"{'.'.join(map(str, e['loc'])) or exc.title}: {e['msg']}" for e in exc.errors()]
        return "; ".join(problems)
    if isinstance(exc, TrustNotWired | SigningNotWired | TopicsMissing | UnprotectedHost | StateOfAnotherTenant):
        return str(exc)
    if isinstance(exc, MCPError):
        if exc.error.message == "Connection closed":
            return f"{upstream} closed the connection (does it serve MCP? a stdio server's own output, if any, is above)"
        return f"{upstream}: {exc.error.message}"
    return None


def _run(make: Callable[[], Coroutine[Any, Any, T]], upstream: str = "the MCP client") -> T:
    """Build settings and run; settings, keys, a bus or an upstream that is not right end as one line and a non-zero exit."""
    try:
        return run(make())  # the bus, a file, a connection: `run`'s one line
    except BaseException as exc:
        if isinstance(exc, typer.Exit | KeyboardInterrupt | SystemExit):
            raise
        inner = _innermost(exc)
        said = _one_line(inner, upstream)
        if said is not None:
            fail(said, code=2 if isinstance(inner, ValidationError | CatalogError) else 1)  # settings or files: as the CLI's
        if inner is not exc:  # a task group's wrapping (an upstream not reached, say): its cause, not 300 lines of it
            fail(f"{upstream}: {type(inner).__name__}: {inner}")
        raise


@app.command("serve")
def serve(
    http: bool = typer.Option(False, "--http", help="Streamable HTTP (default: stdio)."),
    port: int = typer.Option(None, "--port", help="HTTP port (default TIDEGATE_MCP_HTTP_PORT or 8765)."),
    on_escalation: str = typer.Option(None, "--on-escalation", help="`wait` (progress notifications) or `pending` (poll)."),
) -> None:
    """Serve the catalog as an MCP server; every call is proposed, decided, approved if needed, executed once.

    The deployment's public keys are read where the services keep them (TIDEGATE_KEYS_DIR) unless
    TIDEGATE_CLIENT_SERVICE_KEYS_DIR says otherwise. Over HTTP every client sends a bearer token:
    TIDEGATE_MCP_HTTP_TOKEN, or the one made on first run (where it is kept is printed at start).
    """
    from tidegate.client import ClientSettings
    from tidegate.mcp_gateway import GatewaySettings
    from tidegate.mcp_gateway.bearer import gateway_url, http_token
    from tidegate.mcp_gateway.run import serve_http, serve_stdio

    overrides: dict[str, object] = {}
    if port is not None:
        if not 0 <= port <= 65535:
            fail(f"--port is 0 to 65535, not {port}")
        overrides["http_port"] = port
    if on_escalation is not None:
        if on_escalation not in ("wait", "pending"):
            fail("--on-escalation is wait or pending")
        overrides["on_escalation"] = on_escalation

    # Logged as a service logs (TIDEGATE_LOG_LEVEL, TIDEGATE_LOG_FORMAT, on stderr: stdio's stdout is the protocol's): the
    # broker ending the gateway's Kafka login every TIDEGATE_KAFKA_SESSION_MAX_S is one INFO line, not aiokafka's raw
    # ERRORs about closed connections (`servicekit.session_ends`), and a broker away is counted, not a line per retry.
    kit = settings()
    configure_logging(kit.log_level, kit.log_format)

    async def go() -> None:
        gateway = GatewaySettings(**overrides)  # type: ignore[arg-type]
        client = ClientSettings()
        # The services' keys, wherever this is run from; installed as a package there is no checkout's folder to take (its
        # `.tidegate` would be site-packages'): the client's own default holds, TIDEGATE_KEYS_DIR, TIDEGATE_RUN_DIR or the
        # working directory's.
        if "service_keys_dir" not in client.model_fields_set and (REPO_ROOT / "pyproject.toml").is_file():
            client = client.model_copy(update={"service_keys_dir": settings().keys_dir})
        if not http:
            await serve_stdio(gateway, client)
            return
        token, source = http_token(gateway, client)
        console.print(
            f"MCP gateway at {gateway_url(gateway)}/mcp: clients send `Authorization: Bearer <token>`, the token in {source}",
            markup=False,
            soft_wrap=True,
        )
        path = None if source == "TIDEGATE_MCP_HTTP_TOKEN" else Path(source)  # the file: read at each request (a rotation)
        await serve_http(gateway, client, token=token, token_path=path)

    _run(go)


@app.command("rotate-token")
def rotate_token_command(
    finish: bool = typer.Option(False, "--finish", help="Stop accepting the former token, once every client has the new one."),
    leaked: bool = typer.Option(False, "--leaked", help="The token may have leaked: the new one alone from now on, no overlap."),
) -> None:
    """Give the HTTP gateway's bearer token (the one made on first run) a new value, with no restart and no client refused.

    The new token is written where the old one was; the former is kept beside it (`.former`) and the running gateway
    accepts both (it reads them at each request) until --finish. --leaked: the new one alone from the next request on.
    A token you set in TIDEGATE_MCP_HTTP_TOKEN is yours to change (then restart the gateway).
    """
    from tidegate.client import ClientSettings
    from tidegate.mcp_gateway import GatewaySettings
    from tidegate.mcp_gateway.bearer import former_token_file, rotate_token, token_file

    if finish and leaked:
        fail("--finish or --leaked, not both", code=2)
    if GatewaySettings().http_token is not None:
        fail("the gateway's token is TIDEGATE_MCP_HTTP_TOKEN, which you set: set a new one and restart the gateway", code=2)
    path = token_file(ClientSettings())
    try:
        token = rotate_token(path, finish=finish, leaked=leaked)
    except ValueError as exc:
        fail(str(exc))
    if token is None:
        console.print(f"done: the gateway accepts only the token in {path}", markup=False, soft_wrap=True)
    elif leaked:
        console.print(f"done: the gateway accepts only the new token in {path}, from its next request", markup=False, soft_wrap=True)
    else:
        console.print(
            f"new token in {path}: give it to every client (they send `Authorization: Bearer <token>`); the former one, in "
            f"{former_token_file(path)}, is accepted too until `tidegate mcp rotate-token --finish`",
            markup=False,
            soft_wrap=True,
        )


def _grant(path: Path, tenants: list[str]) -> None:
    """Name in an imported catalog file the tenants that may call its tool: without them, no tenant may (an outside tool)."""
    import yaml

    from schemas import ToolSpec

    text = path.read_text().rstrip("\n") + "\n" + yaml.safe_dump({"tenants": tenants}, default_flow_style=None)
    ToolSpec.model_validate(yaml.safe_load(text))
    path.write_text(text)


@app.command("import")
def import_tools(
    url: str = typer.Option(None, "--url", help="Streamable HTTP endpoint of the upstream server."),
    command: str = typer.Option(None, "--command", help="Command line that starts a stdio upstream server."),
    out: Path = typer.Option(
        None, "--out", help="Catalog directory to write into (default: the one `mcp serve` serves, TIDEGATE_MCP_TOOLS_DIR)."
    ),
    prefix: str = typer.Option("", "--prefix", help="Prefix for the imported tools' names (e.g. `github_`)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace files that exist."),
    tenants: list[str] = typer.Option(
        ..., "--tenant", help="A tenant whose agents may call the imported tools (repeat for more; `*`: every tenant). Required."
    ),
) -> None:
    """Write one catalog YAML per upstream tool (kind `mcp`, `tenants` as given, risk `destructive` until you fill it in)."""
    import shlex

    from schemas import McpUpstream
    from tidegate.mcp_gateway import GatewaySettings
    from tidegate.mcp_gateway.importer import import_upstream

    if (url is None) == (command is None):
        fail("give exactly one of --url and --command")
    try:
        argv = shlex.split(command) if command is not None else None
    except ValueError as exc:
        fail(f"--command is not a command line: {exc}")
    if argv == []:
        fail("--command is empty")
    if EVERY_TENANT in tenants and len(tenants) > 1:
        fail('--tenant "*" grants every tenant: give it alone, or name the tenants')
    if any(not 1 <= len(tenant) <= 100 for tenant in tenants):
        fail("--tenant is a tenant id of 1 to 100 characters")
    upstream_name = f"the upstream at {url}" if url else f"the upstream `{command}`"

    async def go() -> list[Path]:
        upstream = McpUpstream(url=url, command=argv, tool="*")
        return await import_upstream(upstream, out or GatewaySettings().tools_dir, prefix=prefix, overwrite=overwrite)

    written = _run(go, upstream_name)
    for path in written:
        _grant(path, tenants)
        console.print(f"wrote {path} (tenants: {', '.join(tenants)})")
    console.print(f"{len(written)} tool(s) imported; fill in each file's `risk` before the agent relies on them")
