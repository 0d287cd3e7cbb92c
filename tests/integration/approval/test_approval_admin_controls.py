"""The tenant admin's controls on the real database, over real HTTP: remove an endpoint, resend a failed message, revoke a token.

An admin of another tenant tries each on the first tenant's ids and must get the 404 of a missing one.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from approval_harness import ApprovalHarness, Receiver, StartApproval, bearer


def same_404(a: httpx.Response, b: httpx.Response, id_a: str, id_b: str) -> bool:
    return a.status_code == b.status_code == 404 and a.text.replace(id_a, "ID") == b.text.replace(id_b, "ID")


async def one_delivery(h: ApprovalHarness, wait_for: Any, *, attempts: int = 1, status: str = "pending") -> Any:
    decided = h.decided()
    await h.escalate(decided)
    record = await h.request_for(decided.action_id, wait_for)

    async def attempted() -> Any:
        rows = await h.repo.deliveries(record.approval_id)
        return rows[0] if rows and (rows[0].attempts, rows[0].status) == (attempts, status) else None

    return await wait_for(attempted, what=f"a delivery {status} after {attempts} attempt(s)")


async def test_an_admin_removes_an_endpoint_resends_its_message_and_another_tenants_admin_reaches_nothing(
    start_approval: StartApproval, http: httpx.AsyncClient, wait_for: Any
) -> None:
    async with Receiver.listening(failures=1) as receiver:
        # one attempt fails, and the next would be an hour away: the message waits, pending, until the admin acts
        h = await start_approval(webhook_backoff_initial_s=3600, webhook_max_attempts=2)
        admin = await h.token("root@acme.example", ["admin"])
        attacker = await h.token("eve@evil.example", ["admin"], tenant=f"evil-{uuid.uuid4().hex[:8]}")
        endpoints, deliveries = f"{h.url}/api/v1/webhooks/endpoints", f"{h.url}/api/v1/webhooks/deliveries"
        chat = {"endpoint_id": "chat", "url": receiver.url, "approvers": []}
        assert (await http.post(endpoints, json=chat, headers=bearer(admin))).status_code == 200
        delivery = await one_delivery(h, wait_for)
        ident = delivery.delivery_id

        pending = await http.post(f"{deliveries}/{ident}/retry", headers=bearer(admin))
        assert (pending.status_code, pending.json()["detail"]["code"]) == (409, "not_failed")
        for method, path in (
            ("POST", f"{deliveries}/{ident}/retry"),
            ("GET", f"{deliveries}/{ident}/attempts"),
            ("DELETE", f"{endpoints}/chat"),
        ):
            theirs = await http.request(method, path, headers=bearer(attacker))
            missing = await http.request(method, path.replace(ident, "wh_nope").replace("/chat", "/nope"), headers=bearer(attacker))
            assert same_404(theirs, missing, ident if ident in path else "chat", "wh_nope" if ident in path else "nope"), theirs.text

        removed = await http.delete(f"{endpoints}/chat", headers=bearer(admin))
        assert removed.json() == {"endpoint_id": "chat", "tenant_id": h.tenant, "enabled": False}, removed.text
        (failed,) = await h.repo.deliveries(delivery.approval_id)
        assert (failed.status, failed.last_error) == ("failed", "endpoint removed by root@acme.example: never sent")
        later = h.decided()
        await h.escalate(later)
        record = await h.request_for(later.action_id, wait_for)
        assert await h.repo.deliveries(record.approval_id) == []  # nothing queued for a removed endpoint
        gone = await http.post(f"{deliveries}/{ident}/retry", headers=bearer(admin))
        assert (gone.status_code, gone.json()["detail"]["code"]) == (409, "endpoint_removed")

        assert (await http.post(endpoints, json=chat, headers=bearer(admin))).json()["enabled"] is True  # registered again
        retried = await http.post(f"{deliveries}/{ident}/retry", headers=bearer(admin))
        assert (retried.status_code, retried.json()["status"], retried.json()["attempts"]) == (200, "pending", 0), retried.text

        async def delivered() -> Any:
            rows = await h.repo.deliveries(delivery.approval_id)
            return rows[0] if rows[0].status == "delivered" else None

        assert (await wait_for(delivered, what="the resent message delivered")).attempts == 1
        attempts = (await http.get(f"{deliveries}/{ident}/attempts", headers=bearer(admin))).json()
        assert [(a["attempt"], a["status_code"]) for a in attempts] == [(1, 503), (2, 200)]  # the log numbers on past the re-queue
        assert len(receiver.got) == 2


async def test_an_admin_lists_and_revokes_the_tenants_tokens_and_another_tenants_admin_gets_404(
    start_approval: StartApproval, http: httpx.AsyncClient
) -> None:
    h = await start_approval()
    admin = await h.token("root@acme.example", ["admin"])
    bob = await h.token("bob@acme.example", ["finance"])
    attacker = await h.token("eve@evil.example", ["admin"], tenant=f"evil-{uuid.uuid4().hex[:8]}")
    listed = await http.get(f"{h.url}/api/v1/tokens", headers=bearer(admin))
    assert sorted(r["approver"] for r in listed.json()) == ["bob@acme.example", "root@acme.example"], listed.text
    assert bob not in listed.text
    bobs = next(r["token_id"] for r in listed.json() if r["approver"] == "bob@acme.example")
    assert bobs not in (await http.get(f"{h.url}/api/v1/tokens", headers=bearer(attacker))).text
    theirs = await http.post(f"{h.url}/api/v1/tokens/{bobs}/revoke", headers=bearer(attacker))
    missing = await http.post(f"{h.url}/api/v1/tokens/tok_nope/revoke", headers=bearer(attacker))
    assert same_404(theirs, missing, bobs, "tok_nope")
    assert (await http.get(f"{h.url}/api/v1/me", headers=bearer(bob))).status_code == 200
    revoked = await http.post(f"{h.url}/api/v1/tokens/{bobs}/revoke", headers=bearer(admin))
    assert (revoked.status_code, revoked.json()["live"]) == (200, False), revoked.text
    assert (await http.get(f"{h.url}/api/v1/me", headers=bearer(bob))).status_code == 401
