"""A one-time link sent before `tidegate keys rotate approval` still opens its request for the old key's grace (platform probe).

Before, rotating the approval service's key (docs/security/signatures.md, Rotation) made every link already in the
approvers' chats answer 401 "the link's signature is not valid" at once, while every event the old key signed kept
verifying for TIDEGATE_RETIRED_KEY_GRACE_S: a planned rotation refused the approvers' work. Past the grace (a copy of the
old key left somewhere), a link it makes opens nothing.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from test_approval_service_api import World, bearer, decided, world  # noqa: F401  (the fixture)

from servicekit import SigningKey, rotate
from services.approval import auth
from services.approval.domain import ApprovalRecord


async def _request(world: World) -> ApprovalRecord:  # noqa: F811
    record = await world.service.on_decided(decided(), event_id="e1", at=world.clock())
    assert record is not None
    return record


def _link(world: World, key: SigningKey, record: ApprovalRecord) -> str:  # noqa: F811
    expires = world.clock() + timedelta(minutes=30)
    return auth.issue_link(key, approval_id=record.approval_id, approver="alice@acme.example", tenant_id="acme", expires_at=expires)


async def _opens(world: World, record: ApprovalRecord, link: str) -> int:  # noqa: F811
    return (await world.client.get(f"/api/v1/approvals/{record.approval_id}", headers=bearer(link))).status_code


async def test_a_link_sent_before_the_rotation_opens_its_request_for_the_grace_and_not_after(world: World, tmp_path: Path) -> None:  # noqa: F811
    record = await _request(world)
    sent = _link(world, world.service.key, record)  # in alice's chat
    assert await _opens(world, record, sent) == 200
    rotate(tmp_path, "approval", now=world.clock())  # `tidegate keys rotate approval`
    world.service.key = SigningKey.load_or_create(tmp_path, "approval")  # the service signs with the new key (it follows its file)
    assert await _opens(world, record, sent) == 200  # before: 401, the link dead the moment the key was rotated
    assert await _opens(world, record, _link(world, world.service.key, record)) == 200  # links sent now: the new key
    world.clock.now += timedelta(seconds=601)  # TIDEGATE_RETIRED_KEY_GRACE_S (600) later
    assert await _opens(world, record, sent) == 401  # the old key opens nothing new any more


async def test_a_link_made_by_a_key_nobody_retired_opens_nothing(world: World, tmp_path: Path) -> None:  # noqa: F811
    record = await _request(world)
    stranger = SigningKey.load_or_create(tmp_path / "elsewhere", "approval")
    assert await _opens(world, record, _link(world, stranger, record)) == 401


async def test_a_link_past_its_keys_grace_says_why_and_what_to_do_not_that_it_is_forged(world: World, tmp_path: Path) -> None:  # noqa: F811
    """The upgrade probe (upgrade21 F4): carol's link, in her chat since before `tidegate keys rotate approval`, answered
    "the link's signature is not valid" once the grace ended: read as a forged or damaged link, with nothing to do."""
    record = await _request(world)
    sent = _link(world, world.service.key, record)
    rotate(tmp_path, "approval", now=world.clock())
    world.service.key = SigningKey.load_or_create(tmp_path, "approval")
    world.clock.now += timedelta(seconds=601)
    answer = await world.client.get(f"/api/v1/approvals/{record.approval_id}", headers=bearer(sent))
    assert answer.status_code == 401  # it still opens nothing
    said = answer.json()["detail"]["message"]
    assert "rotated" in said, said
    assert "grace has ended" in said, said
    assert "API token" in said, said
    stranger = _link(world, SigningKey.load_or_create(tmp_path / "elsewhere", "approval"), record)
    forged = await world.client.get(f"/api/v1/approvals/{record.approval_id}", headers=bearer(stranger))
    assert forged.json()["detail"]["message"] == "the link's signature is not valid"  # a key nobody retired: no story told
