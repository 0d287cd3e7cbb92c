"""What a webhook message carries, decided as it is sent: links only for approvers whose vote the policy counts, and
nothing at all for an endpoint an admin removed after the delivery round had picked the message up."""

from __future__ import annotations

import json
from typing import Any

import pytest
from signers import as_operator
from test_approval_service_api import World, decided, world  # noqa: F401  (the fixture)

from schemas import ControlTenant, ControlTenantData, action_digest
from servicekit import ControlState
from services.approval import auth, webhooks
from services.approval.domain import DEFAULT_GROUPS, GroupsConfig
from services.approval.repository import Endpoint

EMAIL = {"to": "customer@example.com", "subject": "Your refund", "body": "Done."}


async def _approver(world: World, who: str, groups: list[str]) -> None:  # noqa: F811
    await world.repo.add_token(auth.hash_token(auth.new_token()), who, "acme", groups)


async def test_no_link_is_minted_for_an_approver_whose_vote_the_tenants_settings_do_not_count(world: World) -> None:  # noqa: F811
    world.service.control = world.service.control or ControlState()
    record = ControlTenant.build(
        ControlTenantData(tenant_id="acme", settings={"approver_groups": {"draft": ["comms"]}}, set_by="admin"), source="cli"
    )
    await world.service.control.apply(as_operator(record))
    file_groups = {**DEFAULT_GROUPS.risk_groups, "draft": ["support", "comms"]}  # the file lets both decide drafts
    world.service.groups = GroupsConfig(default=DEFAULT_GROUPS.model_copy(update={"risk_groups": file_groups}))
    await _approver(world, "p1@acme.example", ["support"])
    await _approver(world, "c1@acme.example", ["comms"])
    world.service.settings = world.service.settings.model_copy(update={"webhook_allowed_hosts": ["chat.test"]})
    chat = Endpoint("chat", "http://chat.test/hook", webhooks.new_secret(), "acme", ("p1@acme.example", "c1@acme.example"))
    await world.repo.upsert_endpoint(chat)
    call = decided(tool="send_email", args=EMAIL, requested_by="req@acme.example", action_digest=action_digest("acme", "send_email", EMAIL))
    assert await world.service.on_decided(call, event_id="e1", at=world.clock()) is not None
    world.sender.failures = 0
    await world.service.deliver_webhooks()
    _, _, body = world.sender.got[-1]
    assert sorted(json.loads(body)["data"]["links"]) == ["c1@acme.example"]  # p1's link could only ever be refused


async def test_a_message_whose_endpoint_was_removed_after_the_round_claimed_it_is_never_sent(
    world: World,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world.service.settings = world.service.settings.model_copy(update={"webhook_allowed_hosts": ["chat.test"]})
    await _approver(world, "bob@acme.example", ["finance"])
    await world.repo.upsert_endpoint(Endpoint("chat", "http://chat.test/hook", webhooks.new_secret(), "acme", ("bob@acme.example",)))
    assert await world.service.on_decided(decided(), event_id="e1", at=world.clock()) is not None
    claim = world.repo.claim_due_deliveries

    async def claimed_then_removed(*args: Any, **kw: Any) -> Any:
        due = await claim(*args, **kw)
        await world.repo.remove_endpoint("acme", "chat", "removed by admin@acme.example")
        return due

    monkeypatch.setattr(world.repo, "claim_due_deliveries", claimed_then_removed)
    await world.service.deliver_webhooks()
    assert world.sender.got == []  # neither the message nor bob's link left
    [delivery] = await world.repo.deliveries()
    assert delivery.status == "failed"
