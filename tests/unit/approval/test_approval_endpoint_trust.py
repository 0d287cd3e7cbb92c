"""What an endpoint is trusted with, over the in-memory repository (security review 2, findings 2, 7 and 8).

A tenant admin who re-points an endpoint must not receive the one-time links of the approvers who enrolled it as it
was; an approver enrols an endpoint by its URL and its secret's fingerprint; an id or a filter holding a control
character is refused before it reaches a store.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from test_approval_service_api import World, bearer, decided, world  # noqa: F401  (the fixture)

from services.approval import auth, webhooks
from services.approval.domain import DEFAULT_GROUPS, GroupsConfig
from services.approval.repository import Delivery, Endpoint

CHAT_SECRET = webhooks.new_secret()  # the chat tool's: the operator registered it, the admin never held it
ALICE, BOB, MALLORY = "alice@acme.example", "bob@acme.example", "mallory@acme.example"
ENDPOINTS = "/api/v1/webhooks/endpoints"


async def _mallory_and_the_chat_endpoint(world: World) -> str:  # noqa: F811
    """Mallory, admin only and the requester; the tenant's chat endpoint, listing alice and bob, at chat.test (two approvals needed)."""
    world.service.settings = world.service.settings.model_copy(update={"webhook_allowed_hosts": ["chat.test", "mallory.test"]})
    world.service.groups = GroupsConfig(default=DEFAULT_GROUPS.model_copy(update={"required_approvals": {"financial": 2}}))
    mallory = auth.new_token()
    await world.repo.add_token(auth.hash_token(mallory), MALLORY, "acme", ["admin"])
    await world.repo.upsert_endpoint(Endpoint("chat", "http://chat.test/hook", CHAT_SECRET, "acme", (ALICE, BOB)))
    return mallory


def _sent(world: World, n: int = -1) -> tuple[str, dict[str, str], dict[str, Any]]:  # noqa: F811
    url, headers, body = world.sender.got[n]
    return url, headers, json.loads(body)


async def test_an_admin_who_repoints_an_endpoint_never_gets_the_links_queued_for_its_approvers(world: World) -> None:  # noqa: F811
    """The review's attack: the first attempt fails (a 503), Mallory re-points `chat` at her server, the retry goes there.
    The links it carried were minted for alice and bob at chat.test: with them, Mallory granted her own refund as both."""
    mallory = await _mallory_and_the_chat_endpoint(world)
    record = await world.service.on_decided(decided(requested_by=MALLORY), event_id="e1", at=world.clock())
    assert record is not None
    assert await world.service.deliver_webhooks() == 0  # the chat tool answers 503 once
    url, headers, first = _sent(world)
    assert (url, sorted(first["data"]["links"])) == ("http://chat.test/hook", [ALICE, BOB])  # the endpoint they enrolled
    webhooks.verify(CHAT_SECRET, headers, world.sender.got[-1][2], now=world.clock().timestamp(), tolerance_s=300)
    repointed = await world.client.post(
        ENDPOINTS, json={"endpoint_id": "chat", "url": "http://mallory.test/steal", "approvers": []}, headers=bearer(mallory)
    )
    assert repointed.status_code == 200, repointed.text
    world.clock.now += timedelta(seconds=5)
    assert await world.service.deliver_webhooks() == 1
    url, _, retry = _sent(world)
    assert url == "http://mallory.test/steal"
    assert "links" not in retry["data"]
    assert retry["data"]["approval_id"] == record.approval_id  # the message itself still goes: nothing is lost but the links
    stored = await world.repo.get(record.approval_id)
    assert stored is not None
    assert (stored.status, stored.approvers) == ("pending", [])


async def test_links_go_with_the_endpoint_row_the_attempt_is_sent_to_even_when_it_changes_meanwhile(
    world: World,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An admin's change between the claim of a message and its send: that attempt goes to the URL and secret it read, with
    the links of the approvers listed there; the next one to the new URL and secret, with the links of those listed now."""
    await _mallory_and_the_chat_endpoint(world)
    record = await world.service.on_decided(decided(requested_by=MALLORY), event_id="e1", at=world.clock())
    assert record is not None
    mine = webhooks.new_secret()
    claim = world.repo.claim_due_deliveries

    async def claimed_then_repointed(*args: Any, **kw: Any) -> Any:
        due = await claim(*args, **kw)
        await world.repo.upsert_endpoint(Endpoint("chat", "http://mallory.test/steal", mine, "acme", (MALLORY, BOB)))
        return due

    monkeypatch.setattr(world.repo, "claim_due_deliveries", claimed_then_repointed)
    await world.service.deliver_webhooks()  # the 503
    url, headers, first = _sent(world)
    assert (url, sorted(first["data"]["links"])) == ("http://chat.test/hook", [ALICE, BOB])
    webhooks.verify(CHAT_SECRET, headers, world.sender.got[-1][2], now=world.clock().timestamp(), tolerance_s=300)
    world.clock.now += timedelta(seconds=5)
    await world.service.deliver_webhooks()
    url, headers, retry = _sent(world)
    assert (url, sorted(retry["data"]["links"])) == ("http://mallory.test/steal", [BOB])  # never one for the requester
    webhooks.verify(mine, headers, world.sender.got[-1][2], now=world.clock().timestamp(), tolerance_s=300)


async def test_no_link_is_stored_and_one_an_older_copy_stored_is_never_sent(world: World) -> None:  # noqa: F811
    """A stored message holds no link (a database dump or the delivery log gives none); one an older copy of the service
    stored with its links, for the endpoint as it was, goes out with the links of the approvers listed now only."""
    await _mallory_and_the_chat_endpoint(world)
    record = await world.service.on_decided(decided(), event_id="e1", at=world.clock())
    assert record is not None
    (queued,) = await world.repo.deliveries(record.approval_id)
    assert "links" not in json.loads(queued.body)["data"]
    old_body = json.loads(queued.body)
    old_body["data"]["links"] = {ALICE: "http://approvals.test/?approval=x#link=tgl.stale", BOB: "http://approvals.test/#link=tgl.b"}
    world.repo.delivery_rows["msg_old"] = Delivery(
        "msg_old", "chat", "acme", record.approval_id, "approval.requested", json.dumps(old_body), next_attempt_at=world.clock()
    )
    await world.repo.upsert_endpoint(Endpoint("chat", "http://chat.test/hook", CHAT_SECRET, "acme", (BOB,)))  # alice left
    world.sender.failures = 0
    await world.service.deliver_webhooks()
    bodies = [json.loads(body) for _, _, body in world.sender.got]
    assert [sorted(b["data"]["links"]) for b in bodies] == [[BOB], [BOB]]
    assert all(link.startswith("http://approvals.test/?approval=ap-") for b in bodies for link in b["data"]["links"].values())


async def test_a_settled_request_is_announced_without_links(world: World) -> None:  # noqa: F811
    """Links are minted for a request still pending when its message is sent: once decided, a queued message carries none."""
    await _mallory_and_the_chat_endpoint(world)
    world.service.groups = GroupsConfig()
    record = await world.service.on_decided(decided(), event_id="e1", at=world.clock())
    assert record is not None
    rejected = await world.client.post(f"/api/v1/approvals/{record.approval_id}/reject", json={}, headers=bearer(world.tokens["bob"]))
    assert rejected.status_code == 200, rejected.text
    world.sender.failures = 0
    assert await world.service.deliver_webhooks() == 2
    assert [(b["type"], "links" in b["data"]) for b in (json.loads(body) for _, _, body in world.sender.got)] == [
        ("approval.requested", False),
        ("approval.rejected", False),
    ]


async def test_enrolling_confirms_the_secret_too_so_an_admin_cannot_swap_in_her_own(world: World) -> None:  # noqa: F811
    """Mallory keeps the chat endpoint's URL and swaps in a secret only she holds (so her callbacks decide as whoever enrols):
    bob, enrolling again with the URL and the fingerprint of the secret his chat tool holds, is refused."""
    mallory = await _mallory_and_the_chat_endpoint(world)
    chat = {"url": "http://chat.test/hook", "secret_fingerprint": webhooks.secret_fingerprint(CHAT_SECRET)}
    mine = webhooks.new_secret()
    swapped = await world.client.post(
        ENDPOINTS, json={"endpoint_id": "chat", "url": chat["url"], "secret": mine, "approvers": []}, headers=bearer(mallory)
    )
    assert swapped.status_code == 200, swapped.text
    assert swapped.json()["secret_fingerprint"] == webhooks.secret_fingerprint(mine) != chat["secret_fingerprint"]
    refused = await world.client.post(f"{ENDPOINTS}/chat/enrol", json=chat, headers=bearer(world.tokens["bob"]))
    assert (refused.status_code, refused.json()["detail"]["code"]) == (409, "endpoint_changed")
    assert mine not in refused.text
    endpoint = await world.repo.endpoint("acme", "chat")
    assert endpoint is not None
    assert endpoint.approvers == ()
    url_alone = await world.client.post(f"{ENDPOINTS}/chat/enrol", json={"url": chat["url"]}, headers=bearer(world.tokens["bob"]))
    assert (url_alone.status_code, url_alone.json()["detail"]["code"]) == (422, "invalid_body")
    shown = await world.client.get(f"{ENDPOINTS}/chat", headers=bearer(mallory))
    assert shown.json()["secret_fingerprint"] == webhooks.secret_fingerprint(mine)
    assert shown.json()["secret"] is None


async def test_an_endpoint_changed_between_the_read_and_the_enrolment_is_not_enrolled(world: World) -> None:  # noqa: F811
    """The endpoint bob checked is read, then the write is conditional on that URL and secret: a change in between refuses it."""
    await _mallory_and_the_chat_endpoint(world)
    read = world.repo.endpoint

    async def read_then_changed(tenant_id: str, endpoint_id: str) -> Endpoint | None:
        found = await read(tenant_id, endpoint_id)
        await world.repo.upsert_endpoint(Endpoint("chat", "http://chat.test/hook", webhooks.new_secret(), "acme", ()))
        return found

    world.repo.endpoint = read_then_changed  # type: ignore[method-assign]
    chat = {"url": "http://chat.test/hook", "secret_fingerprint": webhooks.secret_fingerprint(CHAT_SECRET)}
    raced = await world.client.post(f"{ENDPOINTS}/chat/enrol", json=chat, headers=bearer(world.tokens["dan"]))
    assert (raced.status_code, raced.json()["detail"]["code"]) == (409, "endpoint_changed")
    world.repo.endpoint = read  # type: ignore[method-assign]
    changed = await world.repo.endpoint("acme", "chat")
    assert changed is not None
    assert changed.approvers == ()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/v1/actions/a%00b/undo"),
        ("GET", "/api/v1/approvals/ap-a%00b"),
        ("POST", "/api/v1/approvals/ap-a%00b/approve"),
        ("POST", "/api/v1/approvals/ap-a%00b/reject"),
        ("GET", "/api/v1/approvals?tool=a%00b"),
        ("GET", "/api/v1/approvals?status=pending&reason=a%0Ab"),
        ("GET", f"{ENDPOINTS}/a%00b"),
        ("GET", f"{ENDPOINTS}/chat?tenant_id=a%1Fb"),
        ("POST", f"{ENDPOINTS}/a%00b/enrol"),
        ("DELETE", f"{ENDPOINTS}/a%00b/enrol"),
        ("GET", "/api/v1/webhooks/deliveries?approval_id=a%7Fb"),
        ("POST", "/api/v1/callbacks/acme/a%00b"),
        ("POST", "/api/v1/callbacks/a%00b"),
        ("GET", "/api/v1/tenants/a%00b"),
    ],
)
async def test_an_id_or_filter_holding_a_control_character_is_refused_by_every_route(
    world: World,  # noqa: F811
    method: str,
    path: str,
) -> None:
    """PostgreSQL refuses U+0000 in any text: a NUL in an id or a filter was a 500 on each route that read it."""
    answer = await world.client.request(method, path, headers=bearer(world.tokens["bob"]))
    assert (answer.status_code, answer.json()["detail"]["code"]) == (422, "invalid_param"), answer.text
    assert "holds the control character U+" in answer.json()["detail"]["message"]


async def test_ids_and_filters_without_control_characters_are_answered_as_before(world: World) -> None:  # noqa: F811
    unicode_id = await world.client.post("/api/v1/actions/é%E2%80%8Bx/undo", headers=bearer(world.tokens["bob"]))
    assert (unicode_id.status_code, unicode_id.json()["detail"]["code"]) == (404, "not_found")
    filtered = await world.client.get("/api/v1/approvals", params={"tool": "issue_refund"}, headers=bearer(world.tokens["bob"]))
    assert filtered.status_code == 200
