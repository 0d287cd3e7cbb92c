"""What a request may make the approval service read: a body up to a bound, and a callback's body only once it claims a signature.

Every body is refused past `MAX_BODY_BYTES` (`413 too_large`) by the declared `Content-Length` before a byte is read,
and while it streams (a chunked body declares none), so no caller, signed in or not, makes the service hold more.
"""

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from datetime import datetime

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from servicekit.intake import Bounds
from services.approval import webhooks

__all__ = [
    "MAX_BODY_BYTES",
    "NEXT_CURSOR",
    "BodyLimit",
    "BodyTooLarge",
    "listing",
    "next_cursor",
    "read_cursor",
    "refuse_unsigned",
]

# The largest legitimate body is an approve with edited args. Those args travel in one `approval.granted` record, which no
# consumer reads past the kit's bound on a record (1 MiB): a larger body could never be published anyway.
MAX_BODY_BYTES = Bounds().max_bytes


CURSOR_MAX_CHARS = 1024  # a cursor this service gives is ~150 characters (an order, a time, an id of at most 256)
NEXT_CURSOR = "X-Next-Cursor"  # the response header of a full page: send it back as `cursor` for the next one


class BodyTooLarge(HTTPException):
    """A request body over the bound: answered `413 too_large` (raised from the body's stream, so the route reads no more)."""

    def __init__(self, max_bytes: int) -> None:
        message = f"the request body is over {max_bytes} bytes, the most this API reads (edited args must fit in one event)"
        super().__init__(413, detail={"code": "too_large", "message": message})


class BodyLimit:
    """ASGI middleware: refuse a body over `max_bytes`, by its `Content-Length` at once, and while it streams."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            refused = BodyTooLarge(self.max_bytes)
            await JSONResponse({"detail": refused.detail}, status_code=refused.status_code)(scope, receive, send)
            return
        await self.app(scope, self._bounded(receive), send)

    def _bounded(self, receive: Receive) -> Receive:
        """`receive`, raising `BodyTooLarge` in whoever reads the body once more than `max_bytes` came."""
        received = 0

        async def bounded() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        return bounded


def refuse_unsigned(headers: Mapping[str, str]) -> None:
    """`401 missing_headers` for a callback without the three Standard Webhooks headers, before its body is read.

    Without them no signature can be checked, so nobody gets the service to read a body it will refuse anyway.
    """
    if not all(headers.get(name) for name in webhooks.HEADERS):
        raise HTTPException(401, detail={"code": "missing_headers", "message": webhooks.MISSING_HEADERS})


def listing(order: str, **filters: object) -> str:
    """The identity of a listing a cursor belongs to: its order and its filters (a cursor of `tool=a` is not one of `tool=b`)."""
    said = json.dumps(filters, sort_keys=True, default=str)
    return f"{order}:{hashlib.sha256(said.encode()).hexdigest()[:16]}"


def next_cursor(order: str, at: datetime, item_id: str) -> str:
    """An opaque cursor past the item with sort key `at` and id `item_id`, in the listing `order` (`listing(...)`)."""
    return base64.urlsafe_b64encode(json.dumps([order, at.isoformat(), item_id]).encode()).decode()


def read_cursor(token: str, order: str) -> tuple[datetime, str]:
    """The sort key and id a `cursor` of the listing `order` resumes after; `422 invalid_param` for any other string.

    Bounded before it is parsed (a cursor is ~150 characters; a deep JSON array made the parser recurse until it failed).
    """
    if len(token) <= CURSOR_MAX_CHARS:
        try:
            kind, at, item_id = json.loads(base64.urlsafe_b64decode(token.encode()))
            key = datetime.fromisoformat(at)
            if kind == order and isinstance(item_id, str) and key.tzinfo is not None:
                return key, item_id
        except (ValueError, TypeError, binascii.Error, RecursionError):
            pass
    message = f"cursor {token[:40]!r} is not one this listing gave (send back its {NEXT_CURSOR} header, with the same filters)"
    raise HTTPException(422, detail={"code": "invalid_param", "message": message})
