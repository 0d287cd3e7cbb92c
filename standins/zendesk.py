"""The project's own stand-in for Zendesk Support's REST API v2, for the calls the Zendesk connector makes.

It speaks Zendesk's wire format: `{"ticket": {...}}` documents, `PUT .../tags.json` adding tags,
`DELETE .../tags.json` removing the tags its body lists (204),
comments added through `PUT /api/v2/tickets/{id}.json`, cursor pagination of comments
(`page[size]`, `page[after]`, `meta.has_more`, `links.next`), and Zendesk's error shapes (401
`{"error": "Couldn't authenticate you"}`, 404 `RecordNotFound`, 422 `RecordInvalid` with `details`,
429 with `Retry-After`). State lives in memory; `inject` scripts failures. Run it by hand with
`python -m standins zendesk --port 8091` (see `standins/__main__.py`).
"""

from __future__ import annotations

import base64
import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

__all__ = ["ZendeskStandIn"]

STATUSES = {"new", "open", "pending", "hold", "solved", "closed"}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class ZendeskStandIn:
    """One Zendesk account: tickets, comments, tags; accepts `email/token:<token>` basic auth or a bearer token."""

    email: str = "agent@example.com"
    token: str = "zd-token"
    url: str = ""  # set by whoever serves it
    tickets: dict[int, dict[str, Any]] = field(default_factory=dict)
    comments: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(90001))
    _injected: list[tuple[str, int, dict[str, Any], dict[str, str], bool]] = field(default_factory=list)

    def __post_init__(self) -> None:
        routes = [
            Route("/api/v2/tickets/{ticket_id:int}.json", self._ticket, methods=["GET", "PUT"]),
            Route("/api/v2/tickets/{ticket_id:int}/comments.json", self._comments, methods=["GET"]),
            Route("/api/v2/tickets/{ticket_id:int}/tags.json", self._tags, methods=["GET", "PUT", "POST", "DELETE"]),
        ]
        self.app = Starlette(routes=routes)
        self.app.add_middleware(_Gate, standin=self)  # type: ignore[arg-type]

    # --- what tests and the demo set up ----------------------------------------------------------

    def add_ticket(self, ticket_id: int, subject: str, description: str, *, requester_id: int = 1, tags: list[str] | None = None) -> None:
        """A ticket whose first comment is its description, as in Zendesk."""
        now = _now()
        self.tickets[ticket_id] = {
            "id": ticket_id, "url": f"/api/v2/tickets/{ticket_id}.json", "subject": subject, "raw_subject": subject,
            "description": description, "status": "open", "priority": "normal", "type": "question",
            "requester_id": requester_id, "submitter_id": requester_id, "assignee_id": None, "tags": list(tags or []),
            "via": {"channel": "email"}, "created_at": now, "updated_at": now,
        }  # fmt: skip
        self.comments[ticket_id] = []
        self._add_comment(ticket_id, description, public=True, author_id=requester_id)

    def inject(
        self, status: int, body: dict[str, Any], *, method: str = "PUT", headers: dict[str, str] | None = None, applied: bool = False
    ) -> None:
        """Answer the next `method` request with this response (after authentication), without touching state.

        `applied`: the request is carried out first, then this answer replaces Zendesk's (a gateway's 503 after the work).
        """
        self._injected.append((method, status, body, headers or {}, applied))

    def _add_comment(self, ticket_id: int, body: str, *, public: bool, author_id: int) -> dict[str, Any]:
        comment = {
            "id": next(self._ids), "type": "Comment", "author_id": author_id, "body": body, "html_body": f"<p>{body}</p>",
            "plain_body": body, "public": public, "attachments": [], "created_at": _now(),
        }  # fmt: skip
        self.comments[ticket_id].append(comment)
        return comment

    # --- the API ---------------------------------------------------------------------------------

    def _find(self, request: Request) -> dict[str, Any] | None:
        return self.tickets.get(int(request.path_params["ticket_id"]))

    async def _ticket(self, request: Request) -> Response:
        ticket = self._find(request)
        if ticket is None:
            return _not_found()
        if request.method == "GET":
            return JSONResponse({"ticket": ticket})
        doc = await request.json()
        update = doc.get("ticket") if isinstance(doc, dict) else None
        if not isinstance(update, dict):
            return _invalid("ticket", "Ticket is required")
        status = update.get("status")
        if status is not None and status not in STATUSES - {"closed"}:
            return _invalid("status", f"Status: {status} is not a valid status")
        events: list[dict[str, Any]] = []
        comment = update.get("comment")
        if comment is not None:
            if not isinstance(comment, dict) or not str(comment.get("body", "")).strip():
                return _invalid("comment", "Comment: cannot be blank")
            made = self._add_comment(ticket["id"], str(comment["body"]), public=bool(comment.get("public", True)), author_id=2)
            events.append({"id": made["id"], "type": "Comment", "public": made["public"], "body": made["body"]})
        if status is not None:
            events.append({"type": "Change", "field_name": "status", "previous_value": ticket["status"], "value": status})
            ticket["status"] = status
        for tag in update.get("additional_tags", []):
            if tag not in ticket["tags"]:
                ticket["tags"].append(tag)
        ticket["updated_at"] = _now()
        return JSONResponse({"ticket": ticket, "audit": {"id": next(self._ids), "ticket_id": ticket["id"], "events": events}})

    async def _comments(self, request: Request) -> Response:
        ticket = self._find(request)
        if ticket is None:
            return _not_found()
        everything = self.comments[ticket["id"]]
        size = min(int(request.query_params.get("page[size]", "100")), 100)
        after = request.query_params.get("page[after]")
        start = int(base64.urlsafe_b64decode(after).decode()) if after else 0
        page = everything[start : start + size]
        has_more = start + size < len(everything)
        cursor = base64.urlsafe_b64encode(str(start + size).encode()).decode()
        next_url = str(request.url.include_query_params(**{"page[after]": cursor})) if has_more else None
        return JSONResponse(
            {
                "comments": page,
                "meta": {"has_more": has_more, "after_cursor": cursor if has_more else None, "before_cursor": None},
                "links": {"next": next_url, "prev": None},
            }
        )

    async def _tags(self, request: Request) -> Response:
        ticket = self._find(request)
        if ticket is None:
            return _not_found()
        if request.method != "GET":
            doc = await request.json()
            tags = doc.get("tags") if isinstance(doc, dict) else None
            if not isinstance(tags, list):
                return _invalid("tags", "Tags: is required")
            if request.method == "DELETE":  # DELETE removes the listed tags and answers 204 No Content
                ticket["tags"] = [t for t in ticket["tags"] if t not in tags]
                ticket["updated_at"] = _now()
                return Response(status_code=204)
            if request.method == "POST":  # POST replaces, PUT adds
                ticket["tags"] = []
            ticket["tags"] += [t for t in tags if t not in ticket["tags"]]
        return JSONResponse({"tags": ticket["tags"]})


class _Gate:
    """Authentication, request log and scripted failures, in front of every route (ASGI middleware)."""

    def __init__(self, app: Any, standin: ZendeskStandIn) -> None:
        self.app = app
        self.standin = standin

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        self.standin.requests.append((request.method, request.url.path))
        if not self._authenticated(request.headers.get("authorization", "")):
            await JSONResponse({"error": "Couldn't authenticate you"}, status_code=401)(scope, receive, send)
            return
        for i, (method, status, body, headers, applied) in enumerate(self.standin._injected):
            if method == request.method:
                del self.standin._injected[i]
                if applied:  # done, its answer thrown away
                    await self.app(scope, receive, _discard)
                await JSONResponse(body, status_code=status, headers=headers)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _authenticated(self, header: str) -> bool:
        kind, _, value = header.partition(" ")
        if kind.lower() == "bearer":
            return value == self.standin.token
        if kind.lower() == "basic":
            try:
                user, _, secret = base64.b64decode(value).decode().partition(":")
            except ValueError:
                return False
            return user == f"{self.standin.email}/token" and secret == self.standin.token
        return False


def _not_found() -> Response:
    return JSONResponse({"error": "RecordNotFound", "description": "Not found"}, status_code=404)


def _invalid(field_name: str, message: str) -> Response:
    body = {"error": "RecordInvalid", "description": "Record validation errors", "details": {field_name: [{"description": message}]}}
    return JSONResponse(body, status_code=422)


async def _discard(message: Any) -> None:
    """An ASGI `send` that drops what it is given."""


if __name__ == "__main__":  # python -m standins.zendesk: the same as python -m standins zendesk
    from standins.__main__ import main

    main(only="zendesk")
