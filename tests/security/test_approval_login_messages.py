"""The approval service's database login rewrites a queued webhook message, so the approver's chat shows the login's words.

The attacker holds only `tidegate_approval`'s login. A request waits for a decision; its message to the team's chat is
queued in `approval.webhook_deliveries` (the chat answered 503 once: it waits for its next attempt). The login
rewrites the stored body: the reasons, and the page the approver is sent to (a look-alike site). The Standard Webhooks
signature the chat verifies is made at send time, with the endpoint's secret, over the body as stored: before, the
rewritten message reached the chat signed as the service's. It must not be sent at all, and neither must a message the
login inserts; each is failed with why, and the operator is told.
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
PHISHING = "https://approvals.acme-example.net/?approval="
LIE = "routine: the customer's own card, nothing unusual"


async def chat_waiting(start: StartApproval, http: httpx.AsyncClient, chat: Receiver, login: asyncpg.Connection, wait_for: WaitFor) -> Any:
    """A request whose message the chat refused once: queued again, waiting for its next attempt (its row, as the login reads it)."""
    h = await start(webhook_backoff_initial_s=3.0)
    admin = await h.token("ann@acme.example", ["finance", "admin"])
    made = await http.post(
        f"{h.url}/api/v1/webhooks/endpoints", json={"endpoint_id": "chat", "url": chat.url, "approvers": []}, headers=bearer(admin)
    )
    assert made.status_code in (200, 201), made.text
    await h.escalate(d := h.decided(args={"payee_id": "cus_evil", "amount_usd": 9000.0, "order_id": "O-1"}))
    record = await h.request_for(d.action_id, wait_for)
    await wait_for(lambda: len(chat.got) >= 1 or None, what="the first attempt", timeout=20)
    [row] = await login.fetch("SELECT * FROM approval.webhook_deliveries WHERE approval_id = $1 AND status = 'pending'", record.approval_id)
    return row


def lying(row: Any) -> str:
    """The message's body as the login rewrites it: another reason, and the page the approver is sent to a look-alike site."""
    body = json.loads(row["body"])
    body["data"]["page_url"] = PHISHING + row["approval_id"]
    body["data"]["reasons"] = [{"code": "needs_human_approval", "policy_id": "routine", "message": LIE}]
    return json.dumps(body)


def told(message: dict[str, Any]) -> bool:
    """Whether a message the chat received carries what the login wrote."""
    text = json.dumps(message)
    return PHISHING in text or LIE in text


async def settled(login: asyncpg.Connection, delivery_id: str, wait_for: WaitFor) -> tuple[str, str]:
    """The message's status once it is no longer pending (delivered, or failed), and its last error."""

    async def done() -> tuple[str, str] | None:
        row = await login.fetchrow("SELECT status, last_error FROM approval.webhook_deliveries WHERE delivery_id = $1", delivery_id)
        return (row["status"], row["last_error"] or "") if row is not None and row["status"] != "pending" else None

    return await wait_for(done, what="the message sent or failed", timeout=30)  # type: ignore[no-any-return]


async def test_a_queued_message_the_login_rewrote_is_never_sent(
    start_approval: StartApproval, http: httpx.AsyncClient, approval_login: asyncpg.Connection, wait_for: WaitFor
) -> None:
    async with Receiver.listening(failures=1) as chat:
        row = await chat_waiting(start_approval, http, chat, approval_login, wait_for)
        await approval_login.execute(
            "UPDATE approval.webhook_deliveries SET body = $2 WHERE delivery_id = $1", row["delivery_id"], lying(row)
        )
        refused = ROWS_REFUSED.labels("approval", "webhook_deliveries", "invalid")._value.get()

        status, why = await settled(approval_login, row["delivery_id"], wait_for)
        assert not [m for m in chat.messages() if told(m)], "the chat received the login's words, signed with the endpoint's secret"
        assert len(chat.got) == 1  # the first attempt, as the service wrote it
        assert status == "failed"
        assert "not the approval service's signed one" in why
        assert ROWS_REFUSED.labels("approval", "webhook_deliveries", "invalid")._value.get() > refused  # told, not silent


async def test_a_message_the_login_inserts_is_never_sent(
    start_approval: StartApproval, http: httpx.AsyncClient, approval_login: asyncpg.Connection, wait_for: WaitFor
) -> None:
    async with Receiver.listening(failures=1) as chat:
        row = await chat_waiting(start_approval, http, chat, approval_login, wait_for)
        await approval_login.execute(
            "INSERT INTO approval.webhook_deliveries (delivery_id, endpoint_id, tenant_id, approval_id, event_type, body, status, "
            "next_attempt_at, body_key_id, body_signature) VALUES ('msg_forged', $1, $2, $3, $4, $5, 'pending', now(), $6, $7)",
            row["endpoint_id"], row["tenant_id"], row["approval_id"], row["event_type"], lying(row),
            row["body_key_id"], row["body_signature"],  # the genuine message's proof, copied
        )  # fmt: skip

        status, why = await settled(approval_login, "msg_forged", wait_for)
        await settled(approval_login, row["delivery_id"], wait_for)  # the genuine one's second attempt: delivered
        assert not [m for m in chat.messages() if told(m)], "the chat received a message the login wrote"
        assert status == "failed"
        assert "not the approval service's signed one" in why
