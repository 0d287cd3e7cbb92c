"""Webhook messages with no proof at all: queued by release 23 before the upgrade, or written by the approval login.

The operator upgrades a busy release 23 to 24 while the team's chat is down: messages asking for a decision wait in
`approval.webhook_deliveries`, queued unsigned (23 signed none; migration 018 adds the columns empty). Release 24 as
shipped failed every one of them unsent, so the approvers were never told of requests still waiting. Now the service
writes each pending, proven request's message again, signed, in their place, from the request as the policy signed it:
never the stored body.

The attacker holds only `tidegate_approval`'s login: unsigned rows it writes with its own words get no further than
that. The chat receives the request's genuine message, once however many such rows name it, and nothing at all for a
request the login rewrote (told, counted).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import pytest
from approval_harness import Receiver, StartApproval, bearer

from servicekit.metrics import ROWS_REFUSED

pytestmark = pytest.mark.integration

WaitFor = Callable[..., Awaitable[Any]]
LIE = "routine: the customer's own card, nothing unusual"
PHISHING = "https://approvals.acme-example.net/?approval="


async def waiting(start: StartApproval, http: httpx.AsyncClient, chat: Receiver, wait_for: WaitFor, amount: float = 9000.0) -> Any:
    """The harness with the chat endpoint registered, and a request whose message the chat refused once (the request)."""
    h = await start(webhook_backoff_initial_s=3.0)
    admin = await h.token("ann@acme.example", ["finance", "admin"])
    made = await http.post(
        f"{h.url}/api/v1/webhooks/endpoints", json={"endpoint_id": "chat", "url": chat.url, "approvers": []}, headers=bearer(admin)
    )
    assert made.status_code in (200, 201), made.text
    await h.escalate(d := h.decided(args={"payee_id": "cus_new", "amount_usd": amount, "order_id": "O-1"}))
    record = await h.request_for(d.action_id, wait_for)
    await wait_for(lambda: len(chat.got) >= 1 or None, what="the first attempt", timeout=20)
    return record


async def as_release_23_queued_it(login: asyncpg.Connection, approval_id: str) -> str:
    """The request's pending message without its proof, as release 23 left it at the upgrade (its id)."""
    row = await login.fetchrow(
        "UPDATE approval.webhook_deliveries SET body_key_id = NULL, body_signature = NULL "
        "WHERE approval_id = $1 AND status = 'pending' RETURNING delivery_id",
        approval_id,
    )
    assert row is not None
    return str(row["delivery_id"])


async def no_longer_pending(login: asyncpg.Connection, delivery_id: str, wait_for: WaitFor) -> tuple[str, str]:
    """A message's status once it is sent or failed, and its last error."""

    async def done() -> tuple[str, str] | None:
        row = await login.fetchrow("SELECT status, last_error FROM approval.webhook_deliveries WHERE delivery_id = $1", delivery_id)
        return (row["status"], row["last_error"] or "") if row is not None and row["status"] != "pending" else None

    return await wait_for(done, what="the message sent or failed", timeout=30)  # type: ignore[no-any-return]


def about(chat: Receiver, approval_id: str) -> list[dict[str, Any]]:
    """The messages the chat received about one request."""
    return [m for m in chat.messages() if m["data"]["approval_id"] == approval_id]


async def test_a_message_release_23_queued_for_a_pending_request_reaches_the_chat_signed(
    start_approval: StartApproval, http: httpx.AsyncClient, approval_login: asyncpg.Connection, wait_for: WaitFor
) -> None:
    async with Receiver.listening(failures=1) as chat:
        record = await waiting(start_approval, http, chat, wait_for)
        old = await as_release_23_queued_it(approval_login, record.approval_id)

        status, why = await no_longer_pending(approval_login, old, wait_for)
        assert status == "failed"  # never sent as stored
        assert "queued unsigned by a release before 24" in why, why
        await wait_for(lambda: len(about(chat, record.approval_id)) >= 2 or None, what="the request's message sent again", timeout=30)
        [_, again] = about(chat, record.approval_id)
        assert again["type"] == "approval.requested"
        assert again["data"]["status"] == "pending"
        assert again["data"]["not_as_signed"] is None
        assert again["data"]["args"]["amount_usd"] == 9000.0
        new = await approval_login.fetchrow(
            "SELECT delivery_id, body_key_id FROM approval.webhook_deliveries WHERE approval_id = $1 AND delivery_id <> $2",
            record.approval_id,
            old,
        )
        assert new is not None
        assert new["body_key_id"] is not None  # signed by the service when queued
        assert (await no_longer_pending(approval_login, new["delivery_id"], wait_for))[0] == "delivered"


async def test_unsigned_messages_the_login_writes_reach_the_chat_only_as_the_service_would_write_them(
    start_approval: StartApproval, http: httpx.AsyncClient, approval_login: asyncpg.Connection, wait_for: WaitFor
) -> None:
    async with Receiver.listening(failures=1) as chat:
        record = await waiting(start_approval, http, chat, wait_for)
        genuine = await approval_login.fetchrow(
            "SELECT * FROM approval.webhook_deliveries WHERE approval_id = $1 AND status = 'pending'", record.approval_id
        )
        body = json.loads(genuine["body"])
        body["data"]["page_url"] = PHISHING + record.approval_id
        body["data"]["reasons"] = [{"code": "needs_human_approval", "policy_id": "routine", "message": LIE}]
        for forged in ("msg_forged_1", "msg_forged_2"):
            await approval_login.execute(
                "INSERT INTO approval.webhook_deliveries (delivery_id, endpoint_id, tenant_id, approval_id, event_type, body, status, "
                "next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6, 'pending', now())",
                forged, genuine["endpoint_id"], genuine["tenant_id"], record.approval_id, genuine["event_type"], json.dumps(body),
            )  # fmt: skip
        for forged in ("msg_forged_1", "msg_forged_2"):
            assert (await no_longer_pending(approval_login, forged, wait_for))[0] == "failed"
        await no_longer_pending(approval_login, genuine["delivery_id"], wait_for)
        await wait_for(lambda: len(about(chat, record.approval_id)) >= 3 or None, what="the genuine messages", timeout=30)

        text = json.dumps(chat.messages())
        assert LIE not in text, "the chat received the login's words"
        assert PHISHING not in text, "the chat was sent to the login's page"
        # the first attempt (refused), its second (delivered), and one message in the forged rows' place, however many
        assert len(about(chat, record.approval_id)) == 3


async def test_an_unsigned_message_of_a_request_the_login_rewrote_is_not_sent_again(
    start_approval: StartApproval, http: httpx.AsyncClient, approval_login: asyncpg.Connection, wait_for: WaitFor
) -> None:
    async with Receiver.listening(failures=1) as chat:
        record = await waiting(start_approval, http, chat, wait_for)
        await approval_login.execute(
            "UPDATE approval.approvals SET record = jsonb_set(record, '{args,amount_usd}', '9.0') WHERE approval_id = $1",
            record.approval_id,
        )
        old = await as_release_23_queued_it(approval_login, record.approval_id)
        refused = ROWS_REFUSED.labels("approval", "webhook_deliveries", "unsigned")._value.get()

        status, why = await no_longer_pending(approval_login, old, wait_for)
        assert status == "failed"
        assert "not queued again signed: this request was changed in the database" in why, why
        assert len(about(chat, record.approval_id)) == 1  # the first attempt only
        assert ROWS_REFUSED.labels("approval", "webhook_deliveries", "unsigned")._value.get() > refused  # told, not silent
        others = await approval_login.fetchval(
            "SELECT count(*) FROM approval.webhook_deliveries WHERE approval_id = $1 AND delivery_id <> $2", record.approval_id, old
        )
        assert others == 0


async def test_an_unsigned_message_of_a_request_settled_since_is_failed_without_a_page(
    start_approval: StartApproval, http: httpx.AsyncClient, approval_login: asyncpg.Connection, wait_for: WaitFor
) -> None:
    async with Receiver.listening(failures=99) as chat:
        record = await waiting(start_approval, http, chat, wait_for)
        old = await as_release_23_queued_it(approval_login, record.approval_id)
        await approval_login.execute(
            "UPDATE approval.approvals SET record = jsonb_set(record, '{status}', '\"expired\"') WHERE approval_id = $1",
            record.approval_id,
        )
        refused = ROWS_REFUSED.labels("approval", "webhook_deliveries", "unsigned")._value.get()

        status, why = await no_longer_pending(approval_login, old, wait_for)
        assert status == "failed"
        assert "not queued again signed: its request is expired: nothing is left to ask" in why, why
        assert ROWS_REFUSED.labels("approval", "webhook_deliveries", "unsigned")._value.get() == refused  # no page for it
