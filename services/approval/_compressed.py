"""Reads sent gzipped to a client that asks for it: the approver page (~60 KB) and the API's GETs, never an answer to a POST.

On a phone's slow network the page alone took over a second uncompressed (approverlink). Only reads are compressed: a
POST's answer can hold a secret made for the caller (a new token, an endpoint's signing secret) beside text the caller
sent, the mix a compression side channel (BREACH) needs; a read holds no secret.
"""

from __future__ import annotations

from starlette.middleware.gzip import GZipMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["CompressedReads"]

MINIMUM_SIZE = 1000  # smaller answers fit a packet or two as they are: gzip would only cost the phone time


class CompressedReads:
    """ASGI middleware: Starlette's `GZipMiddleware` for GET and HEAD requests, the app as it is for any other method."""

    def __init__(self, app: ASGIApp, minimum_size: int = MINIMUM_SIZE) -> None:
        self.app = app
        self.gzipped = GZipMiddleware(app, minimum_size=minimum_size)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD"):
            await self.gzipped(scope, receive, send)
        else:
            await self.app(scope, receive, send)
