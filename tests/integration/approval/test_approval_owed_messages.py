"""Messages owed to an endpoint while its row was refused are sent once it is registered again, over the real database and HTTP.

The approver at 2 a.m. works from the chat: a request raised while the endpoint was refused must reach it after an admin
registers the endpoint again; one decided meanwhile must not; registering it again once more sends nothing twice.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from approval_harness import ApprovalHarness, Receiver, StartApproval, bearer, service_seals
from prometheus_client import REGISTRY

from servicekit import REPO_ROOT, KitSettings, create_pool
from servicekit.db import apply_migrations
from services.approval import webhooks
from services.approval._webhook_side import owed_message_id
from services.approval._webhook_values import REFUSED_UNSENT
from services.approval.domain import REQUESTED
from services.approval.repository import Delivery, Endpoint, PgApprovalRepository
from services.approval.webhooks import new_secret

OWED = "tidegate_webhook_messages_owed"


async def refuse(h: ApprovalHarness, endpoint_id: str) -> None:
    """Make the endpoint's row what migration 011 left of one registered before: no sealed secret, no proof."""
    assert h.proc.pool is not None
    await h.proc.pool.execute(
        "UPDATE approval.webhook_endpoints SET secret_key_id = NULL, secret_sealed = NULL, key_id = NULL, signature = NULL "
        "WHERE tenant_id = $1 AND endpoint_id = $2",
        h.tenant,
        endpoint_id,
    )


async def raised(h: ApprovalHarness, wait_for: Any) -> Any:
    decided = h.decided()
    await h.escalate(decided)
    return await h.request_for(decided.action_id, wait_for)


def received(receiver: Receiver, approval_id: str) -> list[dict[str, Any]]:
    return [m for m in receiver.messages() if m["data"]["approval_id"] == approval_id]


async def test_a_request_raised_while_refused_reaches_the_chat_once_the_endpoint_is_registered_again(
    start_approval: StartApproval, http: httpx.AsyncClient, wait_for: Any
) -> None:
    async with Receiver.listening(failures=0) as receiver:
        h = await start_approval()
        h.tenant = f"acme-owed-{uuid.uuid4().hex[:8]}"
        admin = await h.token("root@acme.example", ["admin"])
        bob = await h.token("bob@acme.example", ["finance"])
        endpoints = f"{h.url}/api/v1/webhooks/endpoints"
        secret = new_secret()
        chat = {"endpoint_id": "chat", "url": receiver.url, "approvers": [], "secret": secret}
        assert (await http.post(endpoints, json=chat, headers=bearer(admin))).status_code == 200
        await refuse(h, "chat")

        waiting = await raised(h, wait_for)  # raised while refused: no message is written for the endpoint
        decided = await raised(h, wait_for)
        assert await h.repo.deliveries(waiting.approval_id) == []
        rejected = await http.post(f"{h.url}/api/v1/approvals/{decided.approval_id}/reject", json={}, headers=bearer(bob))
        assert rejected.status_code == 200, rejected.text
        labels = {"tenant": h.tenant, "endpoint": "chat"}
        await wait_for(lambda: REGISTRY.get_sample_value(OWED, labels) == 1, what="the operator sees one message owed")
        assert receiver.got == []

        assert (await http.post(endpoints, json=chat, headers=bearer(admin))).status_code == 200  # registered again
        await wait_for(lambda: received(receiver, waiting.approval_id), what="the owed message sent")
        headers, body = receiver.got[0]
        webhooks.verify(secret, headers, body, now=time.time(), tolerance_s=300)  # signed with the secret registered again
        message = json.loads(body)
        assert (message["type"], message["data"]["status"]) == (REQUESTED.removeprefix("tidegate."), "pending")
        assert headers["webhook-id"] == owed_message_id(h.tenant, "chat", waiting.approval_id)
        assert REGISTRY.get_sample_value(OWED, labels) == 0

        assert (await http.post(endpoints, json=chat, headers=bearer(admin))).status_code == 200  # registered once more
        later = await raised(h, wait_for)  # proven now: sent as any request is, after the rounds that followed
        await wait_for(lambda: received(receiver, later.approval_id), what="a later request's message")
        assert [m["data"]["approval_id"] for m in receiver.messages()] == [waiting.approval_id, later.approval_id]
        assert received(receiver, decided.approval_id) == []  # decided meanwhile: owed nothing
        assert [d.status for d in await h.repo.deliveries(waiting.approval_id)] == ["delivered"]


MIGRATIONS = REPO_ROOT / "services" / "approval" / "migrations"


async def test_a_message_failed_because_the_row_was_refused_is_owed_again_and_written_once(
    infra: Any, kit: KitSettings, tmp_path: Path, start_approval: StartApproval, wait_for: Any
) -> None:
    """The store on its own schema: the message queued before the row was refused, failed for it, is written anew once."""
    schema = f"approval_owed_{uuid.uuid4().hex[:8]}"
    pool = await create_pool(infra.database_url, max_size=2)
    try:
        await apply_migrations(pool, schema, MIGRATIONS)
        repo = PgApprovalRepository(pool, schema, seals=service_seals(kit))
        h = await start_approval()  # only for a request record like the service's
        record = await raised(h, wait_for)
        tenant, secret = record.tenant_id, new_secret()
        endpoint = Endpoint("chat", "https://chat.example/hook", secret, tenant)
        await repo.upsert_endpoint(endpoint)
        queued = Delivery("msg_before", "chat", tenant, record.approval_id, "approval.requested", "{}")
        await repo.insert_request(record, [], [queued])
        s = f'"{schema}"'
        await pool.execute(f"UPDATE {s}.webhook_endpoints SET signature = 'forged'")  # the row changed in the database
        assert await repo.claim_due_deliveries(record.created_at + timedelta(days=1), timedelta(seconds=30)) == []
        failed = await repo.delivery("msg_before")
        assert failed is not None
        assert failed.status == "failed"
        assert (failed.last_error or "").startswith(REFUSED_UNSENT)
        (refused,) = await repo.endpoints_of(tenant)
        assert await repo.owed_counts([refused], record.created_at) == [1]
        assert await repo.owed_endpoints() == []

        await repo.upsert_endpoint(endpoint)  # registered again
        (owed,) = await repo.owed_endpoints()
        assert await repo.owed_requests(owed, record.created_at) == [record.approval_id]
        message = Delivery(
            owed_message_id(tenant, "chat", record.approval_id), "chat", tenant, record.approval_id, "approval.requested", "{}"
        )
        assert await repo.queue_owed(owed, [message, message], record.created_at) == 1
        assert await repo.owed_endpoints() == []
        await repo.upsert_endpoint(endpoint)  # registered once more: it was proven, nothing is owed
        assert await repo.owed_endpoints() == []
        assert await repo.queue_owed(owed, [message], record.created_at) == 0  # a second copy's round writes nothing either
        assert sorted(d.status for d in await repo.deliveries(record.approval_id)) == ["failed", "pending"]
    finally:
        await pool.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await pool.close()
