"""Serve the gateway over stdio or streamable HTTP: one client, the catalog, one MCP server."""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server
from sse_starlette.sse import AppStatus
from starlette.types import ASGIApp, Receive, Scope, Send

from schemas import ToolSpec
from servicekit import ToolCatalog
from tidegate.client import ClientSettings, SigningNotWired, SqliteProposals, Tidegate, Transport
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
    settings: GatewaySettings,
    client_settings: ClientSettings,
    catalog: Iterable[ToolSpec],
    *,
    transport: Transport | None = None,
    stopping: asyncio.Event | None = None,
) -> AsyncIterator[Server[Any]]:
    """The gateway's MCP server over a started client, what it proposed kept in `state_file`.

    Kept on disk, a gateway restarted (or another one sharing the state dir) still knows each action it
    proposed, its task, and where its answers start: a `tidegate_action_status` poll without a position
    answers, and a call retried under its action id follows the first proposal (or sends it, if it never went out);
    so does the same call made again without one when its caller was cut off unanswered. `stopping`: see `build_server`.
    """
    tasks = SqliteActionTasks(state_file(client_settings), tenant=client_settings.tenant)  # first: refuses another tenant's file
    proposals = SqliteProposals(state_file(client_settings))
    try:
        client = Tidegate(client_settings, transport=transport, proposals=proposals)
        client.trust.require()  # what it believes, then how it signs: both said before the bus is reached
        if client.unsigned:  # every call would be refused where the gateway cannot read why, and stay pending for ever
            raise SigningNotWired(
                "no TIDEGATE_CLIENT_SIGNING_KEY_PATH: the gateway's proposals would go out unsigned and the policy refuses every "
                "one (where the gateway cannot read why), so each call would stay pending. Register a client key "
                "(`tidegate clients add TENANT PRINCIPAL`) and set TIDEGATE_CLIENT_SIGNING_KEY_PATH, TIDEGATE_CLIENT_TENANT and "
                "TIDEGATE_CLIENT_PRINCIPAL as it prints (docs/integrations.md)"
            )
        async with client:
            yield build_server(client, catalog, settings, tasks, stopping)
    finally:
        tasks.close()
        proposals.close()


async def serve_stdio(settings: GatewaySettings, client_settings: ClientSettings) -> None:
    """Serve one MCP client on this process's stdin/stdout until it disconnects."""
    catalog = ToolCatalog.load(*settings.tool_dirs)
    async with gateway(settings, client_settings, catalog.tools.values()) as server, stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


async def serve_http(
    settings: GatewaySettings,
    client_settings: ClientSettings,
    *,
    token: str,
    transport: Transport | None = None,
    token_path: Path | None = None,
) -> None:
    """Serve streamable HTTP at `http://<host>:<port>/mcp` to clients that send `token` (`bearer.http_token`), until SIGTERM or SIGINT.

    `token_path`: the file the token came from, read again at each request with a rotation's former token (`bearer.rotate_token`).

    Stopped, it answers the calls waiting for a human with their pending result, lets open calls finish for up to
    `stop_grace_s`, sends each answer, and returns (the process exits 0).
    """
    catalog = ToolCatalog.load(*settings.tool_dirs)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    async with gateway(settings, client_settings, catalog.tools.values(), transport=transport, stopping=stopping) as server:
        app = _Answering(server.streamable_http_app(host=settings.http_host, **http_auth(settings, token, token_path)))
        config = uvicorn.Config(
            app,
            host=settings.http_host,
            port=settings.http_port,
            log_level="warning",
            timeout_graceful_shutdown=settings.stop_grace_s,
            proxy_headers=False,  # the peer is who connected, never what an `X-Forwarded-For` says
        )
        await _StoppableServer(config, on_stop=lambda: loop.call_soon_threadsafe(stopping.set), answering=app).serve()


class _Answering:
    """The gateway's app, knowing when it answers no request: none but the clients' GET streams, open until they are ended."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app
        self._open = 0
        self.idle = asyncio.Event()
        self.idle.set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "GET":
            await self._app(scope, receive, send)
            return
        self._open += 1
        self.idle.clear()
        try:
            await self._app(scope, receive, send)  # a POSTed call: its SSE stream ends once its answer is sent
        finally:
            self._open -= 1
            if not self._open:
                self.idle.set()


class _StoppableServer(uvicorn.Server):
    """uvicorn's server, whose SIGTERM is a clean stop as its SIGINT is, and that cuts no answer of an open call.

    uvicorn shuts down gracefully on either, then raises the signal again for the process's own handler: SIGTERM's
    default then kills the process (exit -15), the way systemd and `docker stop` stop it. Here it returns instead.
    The `mcp` SDK answers the calls of a session (protocols before 2026-07-28) over SSE with sse-starlette, which ends
    every SSE stream within 0.5 s of seeing the server stop, answered or not: here it learns of the stop once no call is open.
    """

    def __init__(self, config: uvicorn.Config, *, on_stop: Callable[[], object], answering: _Answering) -> None:
        super().__init__(config)
        self._on_stop = on_stop
        self._answering = answering

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        """Serve until stopped; sse-starlette's process-wide switches are as they were afterwards (a later server is not cut)."""
        drains, ended = AppStatus.enable_automatic_graceful_drain, AppStatus.should_exit
        AppStatus.enable_automatic_graceful_drain = False  # its switch (`disable_automatic_graceful_drain`): `shutdown` ends them
        try:
            await super().serve(sockets)
        finally:
            AppStatus.enable_automatic_graceful_drain, AppStatus.should_exit = drains, ended

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Shut down as uvicorn does (open calls have `timeout_graceful_shutdown`); once none is open, the SSE streams end too."""
        ending = asyncio.create_task(self._end_streams_once_answered())
        try:
            await super().shutdown(sockets)
        finally:
            ending.cancel()

    async def _end_streams_once_answered(self) -> None:
        await self._answering.idle.wait()  # or uvicorn cancels what is still open at `timeout_graceful_shutdown`
        AppStatus.should_exit = True  # sse-starlette ends every SSE stream within 0.5 s: the clients' GET streams are left

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        """SIGINT and SIGTERM stop the server (`handle_exit`) while it serves; the earlier handlers are back afterwards."""
        if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
            yield
            return
        earlier = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in earlier.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Stop serving, and tell the calls waiting for a human to return."""
        super().handle_exit(sig, frame)
        self._on_stop()
