"""The Zendesk connector reading answers it cannot use (an HTML page, another shape): a clear ToolError, never a bare parse error."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from connectors import zendesk_tools as zd
from servicekit.toolcontract import ToolContext, ToolError

Answer = Callable[[httpx.Request], httpx.Response]


def _ctx() -> ToolContext:
    return ToolContext(
        pool=None, tenant_id="acme", action_id="a-1", idempotency_key="a-1", task_id="t-1", attempt=1,
        credential="tok", connection={"base_url": "https://acme.zendesk.test", "email": "agent@acme.example"},
    )  # fmt: skip


def _json(doc: Any) -> Answer:
    return lambda request: httpx.Response(200, content=json.dumps(doc).encode(), headers={"content-type": "application/json"})


async def _refusal(call: Any, args: dict[str, Any]) -> ToolError:
    with pytest.raises(ToolError) as refused:
        await call(_ctx(), args)
    return refused.value


async def test_an_html_page_instead_of_json_is_a_bad_answer_naming_the_status_and_the_first_bytes(answer: Any) -> None:
    answer(lambda request: httpx.Response(200, text="<html><body>Please sign in</body></html>", headers={"content-type": "text/html"}))
    error = await _refusal(zd.get_ticket, {"ticket_id": 7})
    assert (error.type, error.retryable, error.maybe_applied) == ("bad_answer", True, True)
    assert "Zendesk answered GET acme.zendesk.test/api/v2/tickets/7.json with HTTP 200 (text/html)" in error.message
    assert "Invalid JSON" in error.message
    assert "b'<html><body>Please sign in" in error.message
    assert "JSONDecodeError" not in error.message


async def test_an_answer_of_another_shape_says_which_field_is_missing(answer: Any) -> None:
    answer(_json({"tickets": []}))
    assert "(ticket: Field required)" in (await _refusal(zd.get_ticket, {"ticket_id": 7})).message
    answer(_json([{"id": 7}]))
    assert (await _refusal(zd.tag_ticket, {"ticket_id": 7, "tags": ["x"]})).type == "bad_answer"
    answer(_json({"ticket": {"id": 7}}))
    assert "(ticket.status: Field required)" in (await _refusal(zd.set_status, {"ticket_id": 7, "status": "open"})).message
    answer(_json({"audit": {"events": "none"}}))
    assert "(audit.events: Input should be a valid array)" in (await _refusal(zd.add_internal_note, {"ticket_id": 7, "body": "b"})).message


async def test_a_comments_page_of_another_shape_is_a_bad_answer(answer: Any) -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/comments.json"):
            return _json({"comments": [{"body": "no id"}], "meta": {"has_more": False}})(request)
        return _json({"ticket": {"id": 7, "subject": "s"}})(request)

    answer(respond)
    assert "(comments.0.id: Field required)" in (await _refusal(zd.get_ticket, {"ticket_id": 7})).message


async def test_well_formed_answers_still_read_as_before(answer: Any) -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/comments.json"):
            comment = {"id": 1, "author_id": 9, "body": "hi", "created_at": "2026-01-01T00:00:00Z", "html_body": "<p>hi</p>"}
            return _json({"comments": [comment], "meta": {"has_more": False}, "links": {"next": None}})(request)
        return _json({"ticket": {"id": 7, "subject": "s", "status": "open", "tags": ["vip"], "url": "u"}})(request)

    answer(respond)
    ticket = await zd.get_ticket(_ctx(), {"ticket_id": 7})
    assert (ticket["ticket_id"], ticket["subject"], ticket["status"], ticket["priority"], ticket["tags"]) == (7, "s", "open", None, ["vip"])
    assert ticket["comments"] == [{"comment_id": 1, "author_id": 9, "public": True, "body": "hi", "created_at": "2026-01-01T00:00:00Z"}]
