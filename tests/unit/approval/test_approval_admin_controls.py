"""The tenant admin's controls (approver2.md findings 6 and 7): remove an endpoint, resend a failed message, revoke a token.

Each is tried as the admin and as an admin of another tenant, who must learn nothing (404 as for a missing id).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import timedelta

import httpx
from test_approval_service_api import World, bearer, decided, world  # noqa: F401  (the fixture)

from services.approval import auth, webhooks
from services.approval.domain import ApprovalRecord
from services.approval.repository import Endpoint, InMemoryApprovalRepository
from services.approval.webhooks import SendResult

SECRET = webhooks.new_secret()
ENDPOINTS = "/api/v1/webhooks/endpoints"
DELIVERIES = "/api/v1/webhooks/deliveries"


async def _token(w: World, who: str, tenant: str, groups: list[str]) -> str:
    token = auth.new_token()
    await w.repo.add_token(auth.hash_token(token), who, tenant, groups)
    return token


async def _admins(w: World) -> tuple[str, str]:
    """An admin of acme, and an admin of globex (the attacker)."""
    return await _token(w, "root@acme.example", "acme", ["admin"]), await _token(w, "eve@globex.example", "globex", ["admin"])


async def _request(w: World, action_id: str = "a-1") -> ApprovalRecord:
    record = await w.service.on_decided(decided(action_id), event_id=f"e-{action_id}", at=w.clock())
    assert record is not None
    return record


def _same_404(a: httpx.Response, b: httpx.Response, id_a: str, id_b: str) -> bool:
    return a.status_code == b.status_code == 404 and a.text.replace(id_a, "ID") == b.text.replace(id_b, "ID")


def _links(body: bytes) -> dict[str, str]:
    links: dict[str, str] = json.loads(body)["data"].get("links", {})
    return links


async def _fail(repo: InMemoryApprovalRepository, delivery_id: str) -> None:
    """The delivery's attempts are used up (as the sender's layer leaves it)."""
    await repo.record_attempt(delivery_id, 1, status_code=500, error="HTTP 500", duration_ms=3.0, outcome="failed", next_at=None)


@dataclass
class RemovingSender:
    """Accepts every message, but the admin removes the endpoint while the first one is in flight."""

    repo: InMemoryApprovalRepository
    got: list[bytes] = field(default_factory=list)

    async def send(self, url: str, headers: dict[str, str], body: bytes) -> SendResult:
        self.got.append(body)
        await self.repo.remove_endpoint("acme", "chat", "endpoint removed by root@acme.example: never sent")
        return SendResult(True, 200, None, 1.0)


async def test_an_admin_removes_an_endpoint_and_its_pending_messages_are_never_sent_nor_its_links_minted(world: World) -> None:  # noqa: F811
    admin, _ = await _admins(world)
    await world.repo.upsert_endpoint(Endpoint("chat", "http://chat.test/hook", SECRET, "acme", ("bob@acme.example",)))
    await _request(world)
    removed = await world.client.delete(f"{ENDPOINTS}/chat", headers=bearer(admin))
    assert removed.status_code == 200, removed.text
    assert removed.json() == {"endpoint_id": "chat", "tenant_id": "acme", "enabled": False}
    assert await world.service.deliver_webhooks() == 0
    assert world.sender.got == []  # the message queued before the removal never goes out
    (failed,) = await world.repo.deliveries()
    assert (failed.status, failed.last_error) == ("failed", "endpoint removed by root@acme.example: never sent")
    await _request(world, "a-2")
    assert len(await world.repo.deliveries()) == 1  # nothing queued for it any more
    shown = (await world.client.get(f"{ENDPOINTS}/chat", headers=bearer(admin))).json()
    assert (shown["enabled"], shown["approvers"]) == (False, [])  # bob's enrolment is gone with it
    body = json.dumps({"type": "approval.decision", "data": {}}).encode()
    headers = webhooks.signed_headers(SECRET, "msg_1", int(world.clock().timestamp()), body)
    callback = await world.client.post("/api/v1/callbacks/acme/chat", content=body, headers=headers)
    assert callback.status_code == 401  # its secret decides nothing any more
    retried = await world.client.post(f"{DELIVERIES}/{failed.delivery_id}/retry", headers=bearer(admin))
    assert (retried.status_code, retried.json()["detail"]["code"]) == (409, "endpoint_removed")


async def test_a_message_in_flight_when_its_endpoint_is_removed_stays_failed(world: World) -> None:  # noqa: F811
    """The receiver's answer to the one message already on the wire does not revive the removed endpoint's message."""
    await world.repo.upsert_endpoint(Endpoint("chat", "http://chat.test/hook", SECRET, "acme", ("bob@acme.example",)))
    await _request(world)
    world.service.sender = sender = RemovingSender(world.repo)
    await world.service.deliver_webhooks()
    assert len(sender.got) == 1
    (delivery,) = await world.repo.deliveries()
    assert delivery.status == "failed"
    assert [(a.attempt, a.status_code) for a in await world.repo.attempts_of(delivery.delivery_id)] == [(1, 200)]  # logged all the same


async def test_an_admin_of_another_tenant_cannot_remove_an_endpoint_and_learns_nothing(world: World) -> None:  # noqa: F811
    admin, attacker = await _admins(world)
    await world.repo.upsert_endpoint(Endpoint("chat", "http://chat.test/hook", SECRET, "acme", ("bob@acme.example",)))
    await world.repo.upsert_endpoint(Endpoint("pager", "http://pager.test/hook", SECRET, "acme", source="file"))
    theirs = await world.client.delete(f"{ENDPOINTS}/chat", headers=bearer(attacker))
    missing = await world.client.delete(f"{ENDPOINTS}/nope", headers=bearer(attacker))
    assert _same_404(theirs, missing, "chat", "nope")
    as_acme = await world.client.delete(f"{ENDPOINTS}/chat?tenant_id=acme", headers=bearer(attacker))
    assert _same_404(as_acme, missing, "chat", "nope")
    not_admin = await world.client.delete(f"{ENDPOINTS}/chat", headers=bearer(world.tokens["bob"]))
    assert (not_admin.status_code, not_admin.json()["detail"]["code"]) == (403, "not_admin")
    assert (await world.repo.endpoint("acme", "chat")) == Endpoint("chat", "http://chat.test/hook", SECRET, "acme", ("bob@acme.example",))
    operators = await world.client.delete(f"{ENDPOINTS}/pager", headers=bearer(admin))
    assert (operators.status_code, operators.json()["detail"]["code"]) == (409, "operator_endpoint")
    pager = await world.repo.endpoint("acme", "pager")
    assert pager is not None
    assert pager.enabled


async def test_an_admin_lists_the_tenants_tokens_without_secrets_and_another_tenant_sees_none_of_them(world: World) -> None:  # noqa: F811
    admin, attacker = await _admins(world)
    listed = await world.client.get("/api/v1/tokens", headers=bearer(admin))
    assert listed.status_code == 200, listed.text
    rows = listed.json()
    assert sorted(r["approver"] for r in rows) == ["alice@acme.example", "bob@acme.example", "dan@acme.example", "root@acme.example"]
    assert all(r["live"] and r["revoked_at"] is None and r["tenant_id"] == "acme" for r in rows)
    assert not any(secret in listed.text for secret in [*world.tokens.values(), admin])
    assert not any(auth.hash_token(secret) in listed.text for secret in world.tokens.values())
    theirs = (await world.client.get("/api/v1/tokens", headers=bearer(attacker))).json()
    assert [r["approver"] for r in theirs] == ["eve@globex.example"]
    not_admin = await world.client.get("/api/v1/tokens", headers=bearer(world.tokens["bob"]))
    assert (not_admin.status_code, not_admin.json()["detail"]["code"]) == (403, "not_admin")


async def test_a_revoked_token_and_the_links_of_its_person_die_and_another_tenants_admin_gets_404(world: World) -> None:  # noqa: F811
    admin, attacker = await _admins(world)
    await world.repo.upsert_endpoint(Endpoint("chat", "http://chat.test/hook", SECRET, "acme", ("bob@acme.example",)))
    world.sender.failures = 0
    record = await _request(world)
    await world.service.deliver_webhooks()
    link = _links(world.sender.got[-1][2])["bob@acme.example"].split("#link=")[1]
    rows = (await world.client.get("/api/v1/tokens", headers=bearer(admin))).json()
    bobs = next(r["token_id"] for r in rows if r["approver"] == "bob@acme.example")
    stolen = await world.client.post(f"/api/v1/tokens/{bobs}/revoke", headers=bearer(attacker))
    unknown = await world.client.post("/api/v1/tokens/tok_nope/revoke", headers=bearer(attacker))
    assert _same_404(stolen, unknown, bobs, "tok_nope")
    assert (await world.client.get("/api/v1/me", headers=bearer(world.tokens["bob"]))).status_code == 200  # still his
    revoked = await world.client.post(f"/api/v1/tokens/{bobs}/revoke", headers=bearer(admin))
    assert revoked.status_code == 200, revoked.text
    assert (revoked.json()["live"], revoked.json()["still_live"]) == (False, [])
    assert revoked.json()["revoked_at"] is not None
    assert (await world.client.get("/api/v1/me", headers=bearer(world.tokens["bob"]))).status_code == 401
    approve = await world.client.post(
        f"/api/v1/approvals/{record.approval_id}/approve", json={"action_digest": record.action_digest}, headers=bearer(link)
    )
    assert approve.status_code == 401  # his link dies with his last token
    await _request(world, "a-2")
    await world.service.deliver_webhooks()
    assert "bob@acme.example" not in _links(world.sender.got[-1][2])  # and no link is minted for him again
    twice = await world.client.post(f"/api/v1/tokens/{bobs}/revoke", headers=bearer(admin))
    assert (twice.status_code, twice.json()["detail"]["code"]) == (409, "already_revoked")


async def test_revoking_one_of_two_tokens_says_the_person_still_holds_the_other(world: World) -> None:  # noqa: F811
    admin, _ = await _admins(world)
    await _token(world, "bob@acme.example", "acme", ["finance"])
    rows = (await world.client.get("/api/v1/tokens", headers=bearer(admin))).json()
    bobs = [r["token_id"] for r in rows if r["approver"] == "bob@acme.example"]
    revoked = (await world.client.post(f"/api/v1/tokens/{bobs[0]}/revoke", headers=bearer(admin))).json()
    assert (revoked["still_live"], revoked["operator_token_live"]) == ([bobs[1]], False)


async def test_revoking_says_when_the_person_still_acts_through_an_operator_token(world: World) -> None:  # noqa: F811
    """Security review 3: links log in on any live token of the person in the tenant or `*`; `still_live: []` hid the second."""
    admin, _ = await _admins(world)
    await world.repo.add_token(auth.hash_token(auth.new_token()), "bob@acme.example", "*", ["finance"], operator=True)
    rows = (await world.client.get("/api/v1/tokens", headers=bearer(admin))).json()
    bobs = [r["token_id"] for r in rows if r["approver"] == "bob@acme.example"]  # the tenant's own: the operator's is not listed
    revoked = (await world.client.post(f"/api/v1/tokens/{bobs[0]}/revoke", headers=bearer(admin))).json()
    assert (revoked["still_live"], revoked["operator_token_live"]) == ([], True)


async def test_an_admin_resends_a_failed_message_and_reads_its_attempts(world: World) -> None:  # noqa: F811
    admin, attacker = await _admins(world)
    await world.repo.upsert_endpoint(Endpoint("chat", "http://chat.test/hook", SECRET, "acme", ("bob@acme.example",)))
    await _request(world)
    (delivery,) = await world.repo.deliveries()
    pending = await world.client.post(f"{DELIVERIES}/{delivery.delivery_id}/retry", headers=bearer(admin))
    assert (pending.status_code, pending.json()["detail"]["code"]) == (409, "not_failed")
    await _fail(world.repo, delivery.delivery_id)
    for path, method in ((f"{DELIVERIES}/{delivery.delivery_id}/retry", "POST"), (f"{DELIVERIES}/{delivery.delivery_id}/attempts", "GET")):
        theirs = await world.client.request(method, path, headers=bearer(attacker))
        missing = await world.client.request(method, path.replace(delivery.delivery_id, "wh_nope"), headers=bearer(attacker))
        assert _same_404(theirs, missing, delivery.delivery_id, "wh_nope")
    retried = await world.client.post(f"{DELIVERIES}/{delivery.delivery_id}/retry", headers=bearer(admin))
    assert retried.status_code == 200, retried.text
    assert (retried.json()["status"], retried.json()["attempts"]) == ("pending", 0)
    world.sender.failures = 0
    assert await world.service.deliver_webhooks() == 1  # due at once
    assert "bob@acme.example" in _links(world.sender.got[-1][2])  # still pending: bob's link goes with it
    attempts = (await world.client.get(f"{DELIVERIES}/{delivery.delivery_id}/attempts", headers=bearer(admin))).json()
    assert [(a["attempt"], a["status_code"], a["error"]) for a in attempts] == [(1, 500, "HTTP 500"), (2, 200, None)]
    delivered = await world.client.post(f"{DELIVERIES}/{delivery.delivery_id}/retry", headers=bearer(admin))
    assert (delivered.status_code, delivered.json()["detail"]["code"]) == (409, "not_failed")


async def test_a_message_resent_after_its_request_was_decided_carries_no_links(world: World) -> None:  # noqa: F811
    admin, _ = await _admins(world)
    await world.repo.upsert_endpoint(Endpoint("chat", "http://chat.test/hook", SECRET, "acme", ("bob@acme.example",)))
    record = await _request(world)
    (delivery,) = await world.repo.deliveries()
    await _fail(world.repo, delivery.delivery_id)
    rejected = await world.client.post(f"/api/v1/approvals/{record.approval_id}/reject", json={}, headers=bearer(world.tokens["bob"]))
    assert rejected.status_code == 200
    world.clock.now += timedelta(seconds=1)
    assert (await world.client.post(f"{DELIVERIES}/{delivery.delivery_id}/retry", headers=bearer(admin))).status_code == 200
    world.sender.failures = 0
    await world.service.deliver_webhooks()
    resent = [json.loads(body) for _, headers, body in world.sender.got if headers["webhook-id"] == delivery.delivery_id]
    assert resent
    assert all("links" not in m["data"] for m in resent)
