"""Serving an ASGI stand-in on a free loopback port inside the running event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import uvicorn

__all__ = ["serve_app"]


@asynccontextmanager
async def serve_app(app: Any, host: str = "127.0.0.1", port: int = 0, tls: tuple[Path, Path] | None = None) -> AsyncIterator[str]:
    """Run `app` with uvicorn until the block ends; yields its base URL (port 0 picks a free one; `tls` = (cert, key) for HTTPS)."""
    extra: dict[str, Any] = {"ssl_certfile": str(tls[0]), "ssl_keyfile": str(tls[1])} if tls else {}
    server = uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off", timeout_graceful_shutdown=1, **extra)
    )
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()  # raises what stopped it
                raise RuntimeError("stand-in server stopped before it started")
            await asyncio.sleep(0.01)
        bound = server.servers[0].sockets[0].getsockname()
        yield f"{'https' if tls else 'http'}://{host}:{bound[1]}"
    finally:
        server.should_exit = True
        await task
