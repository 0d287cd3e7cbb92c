"""Zendesk connector against our stand-in of Zendesk's API: every tool, pagination, error shapes, retries that do not duplicate."""

from __future__ import annotations

from typing import Any

import pytest
from connector_harness import CANARY, Executed, call_context

import schemas as s
from connectors import zendesk_tools as zd
from servicekit.toolcontract import ToolContext, ToolError
from servicekit.undo import UndoRefused
from standins.zendesk import ZendeskStandIn


def ctx(standin: ZendeskStandIn, **kw: Any) -> ToolContext:
    return call_context(base_url=standin.url, email="agent@acme.example", **kw)


async def test_get_ticket_reads_every_comment_across_pages_and_marks_the_customers_words_untrusted(zendesk: ZendeskStandIn) -> None:
    for n in range(149):
        zendesk._add_comment(101, f"comment {n}", public=n % 2 == 0, author_id=7)
    ticket = await zd.get_ticket(ctx(zendesk), {"ticket_id": 101})
    assert (ticket["ticket_id"], ticket["subject"], ticket["status"]) == (101, "Refund for order O-1001", "open")
    assert len(ticket["comments"]) == 150
    assert ticket["comments"][0]["body"].startswith("I was charged twice")
    assert ticket["comments"][-1]["body"] == "comment 148"
    assert set(ticket["untrusted"]) == {"subject", "description", "comments"}
    assert zendesk.requests.count(("GET", "/api/v2/tickets/101/comments.json")) == 2  # two pages of 100


async def test_oauth_bearer_token_when_the_account_has_no_email(zendesk: ZendeskStandIn) -> None:
    bearer = call_context(base_url=zendesk.url)
    assert (await zd.get_ticket(bearer, {"ticket_id": 102}))["subject"] == "Where is my parcel?"


async def test_tags_notes_drafts_and_status_land_as_zendesk_records_them(zendesk: ZendeskStandIn) -> None:
    assert (await zd.tag_ticket(ctx(zendesk), {"ticket_id": 101, "tags": ["refund", "vip"]}))["tags"] == ["refund", "vip"]
    assert (await zd.tag_ticket(ctx(zendesk), {"ticket_id": 101, "tags": ["refund"]}))["tags"] == ["refund", "vip"]
    note = await zd.add_internal_note(ctx(zendesk), {"ticket_id": 101, "body": "Duplicate charge confirmed in Stripe."})
    assert note["comment_id"] == zendesk.comments[101][-1]["id"]
    assert zendesk.comments[101][-1]["public"] is False

    draft = await zd.draft_reply(ctx(zendesk), {"ticket_id": 101, "body": "We refunded the duplicate charge."})
    assert (draft["draft"], draft["sent"]) == (True, False)
    saved = zendesk.comments[101][-1]
    assert saved["public"] is False
    assert saved["body"].startswith(zd.DRAFT_HEADER)
    assert zd.DRAFT_TAG in zendesk.tickets[101]["tags"]
    assert [c for c in zendesk.comments[101] if c["public"]] == zendesk.comments[101][:1]  # only the customer's own message

    assert (await zd.set_status(ctx(zendesk), {"ticket_id": 101, "status": "pending"}))["status"] == "pending"
    assert zendesk.tickets[101]["status"] == "pending"


async def test_zendesk_error_shapes(zendesk: ZendeskStandIn) -> None:
    with pytest.raises(ToolError) as rejected:
        await zd.get_ticket(ctx(zendesk, credential="wrong-token"), {"ticket_id": 101})
    assert rejected.value.type == "credential_rejected"
    with pytest.raises(ToolError) as missing:
        await zd.get_ticket(ctx(zendesk), {"ticket_id": 999})
    assert (missing.value.type, missing.value.retryable) == ("not_found", False)
    assert "RecordNotFound" in missing.value.message

    zendesk.inject(422, {"error": "RecordInvalid", "description": "Record validation errors",
                         "details": {"status": [{"description": "Status: closed prevents ticket update"}]}})  # fmt: skip
    with pytest.raises(ToolError) as invalid:
        await zd.set_status(ctx(zendesk), {"ticket_id": 101, "status": "open"})
    assert invalid.value.type == "http_422"
    assert "closed prevents ticket update" in invalid.value.message

    zendesk.inject(429, {"error": "APIRateLimitExceeded", "description": "Number of allowed API requests per minute exceeded"},
                   method="GET", headers={"Retry-After": "7"})  # fmt: skip
    with pytest.raises(ToolError) as limited:
        await zd.get_ticket(ctx(zendesk), {"ticket_id": 101})
    assert (limited.value.type, limited.value.retryable, limited.value.maybe_applied) == ("rate_limited", True, False)
    assert "Retry-After: 7" in limited.value.message

    zendesk.inject(500, {"error": "InternalError"})
    with pytest.raises(ToolError) as broken:
        await zd.tag_ticket(ctx(zendesk), {"ticket_id": 101, "tags": ["x"]})
    assert (broken.value.retryable, broken.value.maybe_applied) == (True, True)


async def test_an_answer_of_another_shape_is_a_bad_answer_for_the_executor_not_a_crash(zendesk: ZendeskStandIn, executed: Executed) -> None:
    await executed.connect("acme", "zendesk", tools=["zendesk_set_status"], base_url=zendesk.url, email="agent@acme.example")
    for _ in range(3):  # each attempt (set_status is safe to repeat) gets a ticket without its status
        zendesk.inject(200, {"ticket": {"id": 101}})
    result = await executed.run(executed.authorize("acme", "zendesk_set_status", {"ticket_id": 101, "status": "pending"}))
    assert result.data.error is not None
    assert (result.type, result.data.error.type, result.data.attempts) == ("tidegate.action.unknown", "bad_answer", 3)
    assert "Zendesk answered PUT" in result.data.error.message
    assert "(ticket.status: Field required)" in result.data.error.message


async def test_a_next_page_on_another_host_is_not_followed_with_the_credential(zendesk: ZendeskStandIn) -> None:
    zendesk.inject(200, {"ticket": zendesk.tickets[101]}, method="GET")
    zendesk.inject(
        200,
        {"comments": [], "meta": {"has_more": True}, "links": {"next": "https://attacker.example/steal?page[after]=x"}},
        method="GET",
    )
    with pytest.raises(ToolError) as refused:
        await zd.get_ticket(ctx(zendesk), {"ticket_id": 101})
    assert refused.value.type == "bad_pagination"


async def test_retries_through_the_executor_never_duplicate_a_write(zendesk: ZendeskStandIn, executed: Executed) -> None:
    tools = ["zendesk_tag_ticket", "zendesk_add_internal_note", "zendesk_draft_reply", "zendesk_set_status"]
    await executed.connect("acme", "zendesk", tools=tools, base_url=zendesk.url, email="agent@acme.example")

    # A 500 on an idempotent write: retried, and the tag is there once.
    zendesk.inject(500, {"error": "InternalError"})
    tagged = await executed.run(executed.authorize("acme", "zendesk_tag_ticket", {"ticket_id": 101, "tags": ["refund"]}))
    assert (tagged.type, tagged.data.attempts) == ("tidegate.action.succeeded", 2)
    assert zendesk.tickets[101]["tags"].count("refund") == 1

    # A 429 says "not processed": the note is retried and written once.
    before = len(zendesk.comments[101])
    zendesk.inject(429, {"error": "APIRateLimitExceeded"}, headers={"Retry-After": "7"})
    noted = await executed.run(executed.authorize("acme", "zendesk_add_internal_note", {"ticket_id": 101, "body": "checked"}))
    assert (noted.type, noted.data.attempts) == ("tidegate.action.succeeded", 2)
    assert executed.waits[-1] == 7.0  # Zendesk's Retry-After, not the catalog's 1 s first backoff
    assert len(zendesk.comments[101]) == before + 1

    # A 500 on a note may have been applied, and Zendesk takes no idempotency key: not repeated, the outcome is unknown.
    zendesk.inject(500, {"error": "InternalError"})
    unknown = await executed.run(executed.authorize("acme", "zendesk_add_internal_note", {"ticket_id": 101, "body": "again"}))
    assert isinstance(unknown, s.ActionUnknown)
    assert unknown.data.attempts == 1

    # So may a 503, which a gateway gives after Zendesk did the work: the note is there once, and the outcome is unknown
    # (connectors probe F6: a 503 was read as "not processed", and the customer saw the note twice, reported succeeded).
    before = len(zendesk.comments[101])
    zendesk.inject(503, {"error": "ServiceUnavailable"}, headers={"Retry-After": "1"}, applied=True)
    gateway = await executed.run(executed.authorize("acme", "zendesk_add_internal_note", {"ticket_id": 101, "body": "once"}))
    assert (gateway.type, gateway.data.attempts) == ("tidegate.action.unknown", 1)
    assert [c["body"] for c in zendesk.comments[101][before:]] == ["once"]


async def test_missing_credential_and_read_only_default(zendesk: ZendeskStandIn, executed: Executed) -> None:
    args = {"ticket_id": 101, "tags": ["x"]}
    missing = await executed.run(executed.authorize("acme", "zendesk_tag_ticket", args))
    assert missing.data.error is not None
    assert missing.data.error.type == "credential_missing"
    await executed.connect("acme", "zendesk", tools=[], base_url=zendesk.url, email="agent@acme.example")
    scoped = await executed.run(executed.authorize("acme", "zendesk_tag_ticket", args))
    assert scoped.data.error is not None
    assert scoped.data.error.type == "tool_not_enabled"
    # Nothing was written; the undo's prior-state read (a read tool, enabled by default) may have been made.
    assert [r for r in zendesk.requests if r[0] != "GET"] == []
    read = await executed.run(executed.authorize("acme", "zendesk_get_ticket", {"ticket_id": 102}))
    assert isinstance(read, s.ActionSucceeded)
    assert all(CANARY not in r.model_dump_json() for r in executed.results)


async def test_undo_of_tags_and_status_restores_the_ticket_exactly_and_notes_are_irreversible(
    zendesk: ZendeskStandIn, executed: Executed
) -> None:
    tools = ["zendesk_tag_ticket", "zendesk_untag_ticket", "zendesk_set_status", "zendesk_add_internal_note"]
    await executed.connect("acme", "zendesk", tools=tools, base_url=zendesk.url, email="agent@acme.example")
    zendesk.tickets[101]["tags"] = ["vip"]
    zendesk.tickets[101]["status"] = "pending"
    original = {k: list(v) if isinstance(v, list) else v for k, v in zendesk.tickets[101].items() if k != "updated_at"}

    tagged = await executed.run(executed.authorize("acme", "zendesk_tag_ticket", {"ticket_id": 101, "tags": ["refund", "vip"]}))
    solved = await executed.run(executed.authorize("acme", "zendesk_set_status", {"ticket_id": 101, "status": "solved"}))
    assert (zendesk.tickets[101]["tags"], zendesk.tickets[101]["status"]) == (["vip", "refund"], "solved")

    await executed.undo(solved)
    untag, untagged = await executed.undo(tagged)
    assert (untag.tool, untag.args) == ("zendesk_untag_ticket", {"ticket_id": 101, "tags": ["refund"]})
    assert ("DELETE", "/api/v2/tickets/101/tags.json") in zendesk.requests
    assert {k: v for k, v in zendesk.tickets[101].items() if k != "updated_at"} == original  # "vip" was there before: it stays

    # Undoing the untag puts back only what it removed.
    retag, _ = await executed.undo(untagged)
    assert (retag.tool, retag.args["tags"], zendesk.tickets[101]["tags"]) == ("zendesk_tag_ticket", ["refund"], ["vip", "refund"])

    noted = await executed.run(executed.authorize("acme", "zendesk_add_internal_note", {"ticket_id": 101, "body": "checked"}))
    with pytest.raises(UndoRefused) as refused:
        await executed.undo(noted)
    assert refused.value.code == s.ReasonCode.UNDO_IRREVERSIBLE
    assert "Zendesk cannot delete a comment" in refused.value.message
