"""Outgoing Standard Webhooks (retries, delivery log, one-time links) and inbound callbacks, over real HTTP."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from approval_harness import Receiver, StartApproval

from services.approval import webhooks


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver.listening(failures=2) as r:
        yield r


async def test_webhooks_are_signed_retried_logged_and_carry_one_time_links(
    start_approval: StartApproval, receiver: Receiver, http: httpx.AsyncClient, wait_for: Any, tmp_path: Path
) -> None:
    secret = webhooks.new_secret()
    tenant = f"acme-wh-{int(time.time() * 1000) % 10**8}"
    endpoints = tmp_path / "webhooks.yaml"
    endpoints.write_text(
        f"endpoints:\n  - endpoint_id: chat-{tenant}\n    url: {receiver.url}\n    secret: {secret}\n"
        f"    tenant_id: {tenant}\n    approvers: [bob@acme.example]\n"
    )
    h = await start_approval(webhooks_file=endpoints, webhook_backoff_initial_s=0.2, webhook_max_attempts=5)
    h.tenant = tenant
    await h.token("bob@acme.example", ["finance"])
    decided = h.decided()
    await h.escalate(decided)
    record = await h.request_for(decided.action_id, wait_for)

    async def delivered() -> Any:
        rows = await h.repo.deliveries(record.approval_id)
        return rows if rows and rows[0].status == "delivered" else None

    (delivery,) = await wait_for(delivered, what="webhook delivered after retries")
    assert delivery.attempts == 3
    assert len(receiver.got) == 3
    assert len({headers["webhook-id"] for headers, _ in receiver.got}) == 1
    attempts = await h.proc.pool.fetch(  # type: ignore[union-attr]
        "SELECT attempt, status_code, at FROM approval.webhook_attempts WHERE delivery_id = $1 ORDER BY attempt", delivery.delivery_id
    )
    assert [a["status_code"] for a in attempts] == [503, 503, 200]
    gaps = [(b["at"] - a["at"]).total_seconds() for a, b in itertools.pairwise(attempts)]
    assert gaps[0] >= 0.18  # exponential backoff: at least 0.2 s, then at least 0.4 s
    assert gaps[1] >= 0.36
    headers, body = receiver.got[-1]
    webhooks.verify(secret, headers, body, now=time.time(), tolerance_s=300)
    message = json.loads(body)
    assert message["type"] == "approval.requested"
    assert message["data"]["action_digest"] == decided.action_digest

    link = message["data"]["links"]["bob@acme.example"].split("#link=")[1]
    url = f"{h.url}/api/v1/approvals/{record.approval_id}/approve"
    first = await http.post(url, json={"action_digest": record.action_digest}, headers={"Authorization": f"Bearer {link}"})
    assert first.status_code == 200, first.text
    assert first.json()["decided_by"] == "bob@acme.example"
    replayed = await http.post(url, json={"action_digest": record.action_digest}, headers={"Authorization": f"Bearer {link}"})
    assert (replayed.status_code, replayed.json()["detail"]["code"]) == (401, "link_used")


async def test_inbound_callbacks_check_signature_timestamp_and_replay(
    start_approval: StartApproval, http: httpx.AsyncClient, wait_for: Any
) -> None:
    h = await start_approval()
    admin = await h.token("ops@acme.example", ["admin"])
    bob = await h.token("bob@acme.example", ["finance"])
    created = await http.post(
        f"{h.url}/api/v1/webhooks/endpoints",
        json={"endpoint_id": f"slack-{h.tenant}", "url": "http://127.0.0.1:9/unused", "approvers": []},
        headers={"Authorization": f"Bearer {admin}"},
    )
    assert created.status_code == 200, created.text
    secret = created.json()["secret"]
    enrolled = await http.post(  # bob lets the chat tool decide in his name (an admin cannot do it for him)
        f"{h.url}/api/v1/webhooks/endpoints/slack-{h.tenant}/enrol",
        json={"url": "http://127.0.0.1:9/unused", "secret_fingerprint": webhooks.secret_fingerprint(secret)},
        headers={"Authorization": f"Bearer {bob}"},
    )
    assert enrolled.json()["approvers"] == ["bob@acme.example"], enrolled.text
    assert secret.startswith("whsec_")
    decided = h.decided()
    await h.escalate(decided)
    record = await h.request_for(decided.action_id, wait_for)
    body = json.dumps(
        {
            "type": "approval.decision",
            "data": {
                "approval_id": record.approval_id,
                "approver": "bob@acme.example",
                "decision": "reject",
                "action_digest": record.action_digest,
            },
        }
    ).encode()
    url = f"{h.url}/api/v1/callbacks/slack-{h.tenant}"

    async def post(msg_id: str, ts: int, key: str = secret) -> httpx.Response:
        return await http.post(url, content=body, headers=webhooks.signed_headers(key, msg_id, ts, body))

    now = int(time.time())
    stale = await post("msg_stale", now - 600)
    assert (stale.status_code, stale.json()["detail"]["code"]) == (401, "stale_timestamp")
    forged = await post("msg_forged", now, key=webhooks.new_secret())
    assert (forged.status_code, forged.json()["detail"]["code"]) == (401, "bad_signature")
    accepted = await post("msg_1", now)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["status"] == "rejected"
    replay = await post("msg_1", now)
    assert (replay.status_code, replay.json()["detail"]["code"]) == (409, "replayed")
    events = await wait_for(
        lambda: _decisions(h, record.approval_id),
        what="approval.rejected",
    )
    assert [e.type for e in events] == ["tidegate.approval.rejected"]
    assert events[0].data.approver == "bob@acme.example"


async def _decisions(h: Any, approval_id: str) -> list[Any]:
    return [e for e in await h.approvals() if e.data.approval_id == approval_id and e.type != "tidegate.approval.requested"]
