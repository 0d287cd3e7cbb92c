"""What an approver and the on-call are told when a link or a token does not come: an endpoint listing someone with no
token (their messages carry no link), a token refused because it was replaced, revoked or had expired."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

import pytest
from test_approval_service_api import World, bearer, decided, world  # noqa: F401  (the fixture)

from services.approval import auth, webhooks
from services.approval.repository import Endpoint


async def test_an_endpoint_listing_an_approver_with_no_token_says_so_once_in_the_log_and_its_view(
    world: World,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    """approver2am: the demo's first messages reached the chat with `links: {}` and no line said why. The on-call now
    reads, once per endpoint and approver, who gets no link and why, and the endpoint's view lists them."""
    world.service.settings = world.service.settings.model_copy(update={"webhook_allowed_hosts": ["chat.test"]})
    listed = ("bob@acme.example", "erin@acme.example")  # erin holds no token in acme
    await world.repo.upsert_endpoint(Endpoint("acme-chat", "http://chat.test/hook", webhooks.new_secret(), "acme", listed))
    world.sender.failures = 0
    with caplog.at_level(logging.WARNING):
        for n in (1, 2, 3):
            assert await world.service.on_decided(decided(f"a-{n}"), event_id=f"e{n}", at=world.clock()) is not None
            await world.service.deliver_webhooks()
    assert len(world.sender.got) == 3
    assert all(sorted(json.loads(body)["data"]["links"]) == ["bob@acme.example"] for _, _, body in world.sender.got)
    told = [r.getMessage() for r in caplog.records if "erin@acme.example" in r.getMessage()]
    assert len(told) == 1, told  # one line for the endpoint and approver, not one a message
    assert "webhook endpoint acme-chat (tenant acme) lists erin@acme.example, who holds no live token in tenant acme" in told[0]
    assert "no one-time link for them" in told[0]
    assert not [r for r in caplog.records if "bob@acme.example" in r.getMessage() and r.levelno >= logging.WARNING]

    admin = auth.new_token()
    await world.repo.add_token(auth.hash_token(admin), "ops@acme.example", "acme", ["admin"])
    [view] = (await world.client.get("/api/v1/webhooks/endpoints", headers=bearer(admin))).json()
    assert view["approvers_without_token"] == ["erin@acme.example"]
    one = await world.client.get("/api/v1/webhooks/endpoints/acme-chat", headers=bearer(admin))
    assert one.json()["approvers_without_token"] == ["erin@acme.example"]

    erin = auth.new_token()  # once erin holds a token, her link goes out and the view lists nobody
    await world.repo.add_token(auth.hash_token(erin), "erin@acme.example", "acme", ["finance"])
    assert await world.service.on_decided(decided("a-4"), event_id="e4", at=world.clock()) is not None
    await world.service.deliver_webhooks()
    assert sorted(json.loads(world.sender.got[-1][2])["data"]["links"]) == ["bob@acme.example", "erin@acme.example"]
    [view] = (await world.client.get("/api/v1/webhooks/endpoints", headers=bearer(admin))).json()
    assert view["approvers_without_token"] == []


async def test_a_replaced_token_says_it_was_replaced_and_a_guess_learns_nothing(world: World) -> None:  # noqa: F811
    """Bob's old token, rotated, read "unknown, revoked or expired token": a typo or a rotation? He now reads it was
    replaced and when; the answer names no one, no tenant and nothing of the new token. A guessed token reads as before."""
    old = world.tokens["bob"]
    rotated = await world.client.post("/api/v1/tokens/rotate", headers=bearer(old))
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()
    refused = await world.client.get("/api/v1/me", headers=bearer(old))
    assert refused.status_code == 401
    message = refused.json()["detail"]["message"]
    assert message.startswith("this token was replaced at "), message
    assert "use the new one, or ask whoever gave you this one for it" in message
    for secret in ("bob", "acme", new["token"], new["token_id"], old):
        assert secret not in message

    guess = await world.client.get("/api/v1/me", headers=bearer(auth.new_token()))
    assert guess.json()["detail"]["message"] == "unknown, revoked or expired token"


async def test_a_revoked_or_expired_token_says_which_and_when(world: World) -> None:  # noqa: F811
    """Dan's token revoked (no new one made) and erin's expired: each reads what ended it, not a catch-all."""
    [dan] = [t for t in await world.repo.tokens() if t.approver == "dan@acme.example"]
    assert await world.repo.revoke_token(dan.token_id)
    revoked = (await world.client.get("/api/v1/me", headers=bearer(world.tokens["dan"]))).json()["detail"]["message"]
    assert revoked.startswith("this token was revoked at "), revoked
    assert revoked.endswith("ask your tenant's admin for a new one")

    erin = auth.new_token()
    tomorrow = world.clock() + timedelta(days=1)
    await world.repo.add_token(auth.hash_token(erin), "erin@acme.example", "acme", ["finance"], expires_at=tomorrow)
    world.repo.clock = world.clock
    world.clock.now += timedelta(days=2)
    expired = (await world.client.get("/api/v1/me", headers=bearer(erin))).json()["detail"]["message"]
    assert expired.startswith("this token expired at "), expired
