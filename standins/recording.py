"""A pass-through HTTP proxy that records every request a client sent (method, path, headers, body)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

__all__ = ["RecordedRequest", "RecordingProxy"]

_HOP = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the client sent it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class RecordingProxy:
    """An ASGI app forwarding to `target`; `requests` holds what came through, in order."""

    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.url = ""  # set by whoever serves it
        self.requests: list[RecordedRequest] = []
        self._injected: list[tuple[str, int, dict[str, Any], dict[str, str]]] = []
        # GET path -> fields laid over the upstream's answer (stripe-mock answers every charge alike; a demo needs its own)
        self.fixtures: dict[str, dict[str, Any]] = {}
        self.app = Starlette(routes=[Route("/{path:path}", self._forward, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])])

    def inject(self, status: int, body: dict[str, Any], *, method: str = "POST", headers: dict[str, str] | None = None) -> None:
        """Answer the next `method` request with this response instead of forwarding it (a 429 or a 500, say)."""
        self._injected.append((method, status, body, headers or {}))

    def sent(self, method: str, path: str) -> list[RecordedRequest]:
        """The requests with this method and path, in order."""
        return [r for r in self.requests if r.method == method and r.path == path]

    async def _forward(self, request: Request) -> Response:
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.requests.append(RecordedRequest(request.method, request.url.path, headers, body))
        for i, (method, status, payload, extra) in enumerate(self._injected):
            if method == request.method:
                del self._injected[i]
                return JSONResponse(payload, status_code=status, headers=extra)
        async with httpx.AsyncClient() as client:
            upstream = await client.request(
                request.method,
                f"{self.target}{request.url.path}",
                params=request.query_params,
                content=body,
                headers={k: v for k, v in headers.items() if k not in _HOP},
            )
        out = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP | {"content-encoding"}}
        overlay = self.fixtures.get(request.url.path) if request.method == "GET" and upstream.status_code == 200 else None
        if overlay is not None:
            return JSONResponse({**upstream.json(), **overlay}, headers={k: v for k, v in out.items() if k.lower() != "content-type"})
        return Response(upstream.content, status_code=upstream.status_code, headers=out)
