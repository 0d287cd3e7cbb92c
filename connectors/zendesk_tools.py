"""Zendesk Support: read a ticket and its comments, tag and untag it, add an internal note, draft a reply, set its status.

Zendesk's REST API v2 is called with httpx rather than `zenpy`: zenpy is synchronous (it would block
the executor's event loop or need a thread per call) and sleeps and retries on 429 by itself, which
would hide attempts from the executor, the one layer that retries. The account is
`connection.base_url` (`https://<subdomain>.zendesk.com`); with `connection.email` the credential is
an API token (`<email>/token:<token>`, basic auth), without it an OAuth access token (bearer).
A ticket's subject, description and comments are the customer's words: untrusted content.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, Field

from connectors._http import parse_answer, raise_for_answer, send
from servicekit.toolcontract import ToolContext, ToolError

__all__ = ["DRAFT_TAG", "add_internal_note", "draft_reply", "get_ticket", "set_status", "tag_ticket", "untag_ticket"]

DRAFT_TAG = "tidegate_draft_reply"
DRAFT_HEADER = "[Draft reply proposed by an agent: review, edit and send it yourself; it was NOT sent to the requester]"
_PAGE_SIZE = 100
_MAX_COMMENTS = 500
_Shape = TypeVar("_Shape", bound=BaseModel)


class _Ticket(BaseModel):
    """The fields of a Zendesk ticket read here (their values pass through as Zendesk sent them)."""

    id: Any
    subject: Any = None
    description: Any = None
    status: Any = None
    priority: Any = None
    requester_id: Any = None
    tags: Any = Field(default_factory=list)


class _TicketAnswer(BaseModel):
    ticket: _Ticket


class _Comment(BaseModel):
    id: Any
    author_id: Any = None
    public: Any = True
    body: Any = ""
    created_at: Any = None


class _Meta(BaseModel):
    has_more: bool = False


class _Links(BaseModel):
    next: str | None = None


class _CommentsPage(BaseModel):
    comments: list[_Comment] = Field(default_factory=list)
    meta: _Meta = Field(default_factory=_Meta)
    links: _Links = Field(default_factory=_Links)


class _TagsAnswer(BaseModel):
    tags: Any = Field(default_factory=list)


class _AuditEvent(BaseModel):
    id: Any = None
    type: Any = None


class _Audit(BaseModel):
    events: list[_AuditEvent] = Field(default_factory=list)


class _UpdateAnswer(BaseModel):
    audit: _Audit | None = None


class _Status(BaseModel):
    status: Any


class _StatusAnswer(BaseModel):
    ticket: _Status


@asynccontextmanager
async def _client(ctx: ToolContext) -> AsyncIterator[httpx.AsyncClient]:
    if not ctx.credential:
        raise ToolError("credential_missing", "no Zendesk credential for this call")
    base_url = ctx.connection.get("base_url")
    if not base_url:
        raise ToolError(
            "connection_incomplete", "the tenant's Zendesk grant has no base_url (`--set base_url=https://<subdomain>.zendesk.com`)"
        )
    email = ctx.connection.get("email")
    auth: httpx.Auth | None = httpx.BasicAuth(f"{email}/token", ctx.credential) if email else None
    headers = {} if email else {"Authorization": f"Bearer {ctx.credential}"}
    async with httpx.AsyncClient(base_url=base_url.rstrip("/"), auth=auth, headers=headers, timeout=30) as client:
        yield client


async def _answer(client: httpx.AsyncClient, method: str, path: str, shape: type[_Shape], **kwargs: Any) -> _Shape:
    """One call, its answer read as `shape`: an error answer, a body that is not JSON or of another shape is a ToolError."""
    response = await send(client, method, path, **kwargs)
    raise_for_answer(response, "Zendesk")
    return parse_answer(response, "Zendesk", shape)


async def _comments(client: httpx.AsyncClient, ticket_id: int) -> list[dict[str, Any]]:
    """Every comment, following Zendesk's cursor pagination (`page[size]`, `meta.has_more`, `links.next`)."""
    out: list[dict[str, Any]] = []
    url: str | None = f"/api/v2/tickets/{ticket_id}/comments.json?page[size]={_PAGE_SIZE}"
    while url and len(out) < _MAX_COMMENTS:
        page = await _answer(client, "GET", url, _CommentsPage)
        out += [
            {"comment_id": c.id, "author_id": c.author_id, "public": c.public, "body": c.body, "created_at": c.created_at}
            for c in page.comments
        ]
        url = page.links.next if page.meta.has_more else None
        if url and httpx.URL(url).is_absolute_url and httpx.URL(url).host != client.base_url.host:
            # The credential goes with every request: never follow a link off the tenant's account.
            raise ToolError("bad_pagination", f"Zendesk's next page points at another host ({httpx.URL(url).host})")
    return out


async def get_ticket(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    """The ticket and all its comments; `untrusted` names the fields that are the customer's words."""
    ticket_id = args["ticket_id"]
    async with _client(ctx) as client:
        t = (await _answer(client, "GET", f"/api/v2/tickets/{ticket_id}.json", _TicketAnswer)).ticket
        comments = await _comments(client, ticket_id)
    return {
        "ticket_id": t.id,
        "subject": t.subject,
        "description": t.description,
        "status": t.status,
        "priority": t.priority,
        "requester_id": t.requester_id,
        "tags": t.tags,
        "comments": comments,
        "untrusted": ["subject", "description", "comments"],
    }


async def tag_ticket(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    """Add tags (Zendesk's `PUT .../tags` adds to what is there, so repeating it changes nothing)."""
    async with _client(ctx) as client:
        doc = await _answer(client, "PUT", f"/api/v2/tickets/{args['ticket_id']}/tags.json", _TagsAnswer, json={"tags": args["tags"]})
    return {"ticket_id": args["ticket_id"], "tags": doc.tags}


async def untag_ticket(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    """Remove tags (Zendesk's `DELETE .../tags` with the tags in the body; tags that are not there are left alone)."""
    async with _client(ctx) as client:
        response = await send(client, "DELETE", f"/api/v2/tickets/{args['ticket_id']}/tags.json", json={"tags": args["tags"]})
        raise_for_answer(response, "Zendesk")
    return {"ticket_id": args["ticket_id"], "removed": args["tags"]}


async def _comment(ctx: ToolContext, ticket_id: int, body: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    ticket: dict[str, Any] = {"comment": {"body": body, "public": False}, **(extra or {})}
    async with _client(ctx) as client:
        doc = await _answer(client, "PUT", f"/api/v2/tickets/{ticket_id}.json", _UpdateAnswer, json={"ticket": ticket})
    events = doc.audit.events if doc.audit is not None else []
    comment_id = next((e.id for e in events if e.type == "Comment"), None)
    return {"ticket_id": ticket_id, "comment_id": comment_id, "public": False}


async def add_internal_note(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    """A private comment, seen by agents only."""
    return await _comment(ctx, args["ticket_id"], args["body"])


async def draft_reply(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    """A reply for a human to review and send: saved as a private comment headed as a draft, and the ticket tagged.

    Zendesk has no draft API; nothing here can make a comment public, so nothing reaches the requester.
    """
    body = f"{DRAFT_HEADER}\n\n{args['body']}"
    result = await _comment(ctx, args["ticket_id"], body, {"additional_tags": [DRAFT_TAG]})
    return result | {"draft": True, "sent": False}


async def set_status(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    """Set the ticket's status (open, pending, hold, solved); setting the status it has changes nothing."""
    async with _client(ctx) as client:
        update = {"ticket": {"status": args["status"]}}
        doc = await _answer(client, "PUT", f"/api/v2/tickets/{args['ticket_id']}.json", _StatusAnswer, json=update)
    return {"ticket_id": args["ticket_id"], "status": doc.ticket.status}
