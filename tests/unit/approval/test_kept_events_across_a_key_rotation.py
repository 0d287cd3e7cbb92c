"""The operator rotates the policy's and the approval service's keys on schedule; the approvers' requests keep working (review63).

`tidegate credentials` asks for every signing key to be rotated every 90 days, and `tidegate keys rotate` keeps the old
public key "so that what it signed still verifies" (docs/operations.md, Keys). A request keeps the policy's signed
escalation it was opened from, and a settled one the service's own signed decision; both are checked each time the
request is shown. They were checked as if they had just come off the bus: once the old key's grace (600 s) had passed,
every request pending since before the rotation could no longer be approved (`409 request_unproven`, "reject it"), and
every request settled before the approval key's rotation was flagged as changed after it was settled and counted as a
refused row (`TidegateRowsRefused`: "its database login wrote it") at every listing. A key retired as leaked
(`--leaked`) still proves nothing it kept: its holder may have signed anything since.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from test_approval_service_api import World, bearer, decided, world  # noqa: F401  (the fixture)

from schemas import ActionDecided
from servicekit import SigningKey, rotate
from servicekit.authority import Authority, encode_signed
from services.approval import adoption_refusal
from services.approval._decision_proofs import as_signed
from services.approval._row_proofs import approval_seals
from services.approval.domain import ApprovalRecord

GRACE_PASSED = timedelta(seconds=601)  # TIDEGATE_RETIRED_KEY_GRACE_S (600) later


def _checking(world: World, tmp_path: Path) -> Authority:  # noqa: F811
    """The service as `app.build` makes it: the deployment's keys, and its seals, so that every showing checks the kept events."""
    authority = Authority(tmp_path, tmp_path / "operators", tmp_path / "clients", clock=lambda: world.clock().timestamp())
    world.service.authority = authority
    world.service.seals = approval_seals(authority, service_key=world.service.key)
    return authority


async def _escalated(world: World, policy: SigningKey) -> tuple[ApprovalRecord, str]:  # noqa: F811
    data = decided()
    signed = encode_signed(ActionDecided.build(data, source="tidegate/policy"), policy)
    record = await world.service.on_decided(data, event_id="e1", at=world.clock(), signed=signed)
    assert record is not None
    assert record.decision is not None
    return record, signed.decode()


async def test_a_request_pending_across_a_policy_key_rotation_is_still_approved_after_the_grace(world: World, tmp_path: Path) -> None:  # noqa: F811
    authority = _checking(world, tmp_path)
    record, text = await _escalated(world, SigningKey.load_or_create(tmp_path, "policy"))
    rotate(tmp_path, "policy", now=world.clock())  # `tidegate keys rotate policy`, on schedule
    world.clock.now += GRACE_PASSED
    authority.reload()
    stored = await world.repo.get(record.approval_id)
    assert stored is not None
    shown = as_signed(stored, authority, world.service.seals)
    assert shown.not_as_signed is None, shown.not_as_signed  # before: "…key policy-… was retired, and signs nothing new"
    assert adoption_refusal(stored.model_copy(update={"decision": None}), text, authority) is None  # `approvals adopt` keeps it too
    url = f"/api/v1/approvals/{record.approval_id}/approve"
    ok = await world.client.post(url, json={"action_digest": record.action_digest}, headers=bearer(world.tokens["bob"]))
    assert ok.status_code == 200, ok.text  # before: 409 request_unproven, and only a reject left
    assert ok.json()["status"] == "granted"


async def test_a_request_settled_before_an_approval_key_rotation_is_shown_as_signed_after_the_grace(world: World, tmp_path: Path) -> None:  # noqa: F811
    authority = _checking(world, tmp_path)
    record, _ = await _escalated(world, SigningKey.load_or_create(tmp_path, "policy"))
    url = f"/api/v1/approvals/{record.approval_id}/approve"
    ok = await world.client.post(url, json={"action_digest": record.action_digest}, headers=bearer(world.tokens["bob"]))
    assert ok.status_code == 200, ok.text
    rotate(tmp_path, "approval", now=world.clock())  # `tidegate keys rotate approval`
    world.service.key = SigningKey.load_or_create(tmp_path, "approval")
    world.clock.now += GRACE_PASSED
    authority.reload()
    settled = await world.repo.get(record.approval_id)
    assert settled is not None
    assert settled.settled_event is not None
    shown = as_signed(settled, authority, world.service.seals)
    assert shown.not_as_signed is None, shown.not_as_signed  # before: flagged, and counted as a refused row at every listing
    assert shown.record.decided_by == "bob@acme.example"


@pytest.mark.parametrize("service", ["policy", "approval"])
async def test_a_key_rotated_as_leaked_proves_nothing_it_kept(world: World, tmp_path: Path, service: str) -> None:  # noqa: F811
    authority = _checking(world, tmp_path)
    record, text = await _escalated(world, SigningKey.load_or_create(tmp_path, "policy"))
    if service == "approval":
        url = f"/api/v1/approvals/{record.approval_id}/approve"
        ok = await world.client.post(url, json={"action_digest": record.action_digest}, headers=bearer(world.tokens["bob"]))
        assert ok.status_code == 200, ok.text
    rotate(tmp_path, service, now=world.clock(), grace=False)  # `tidegate keys rotate <service> --leaked`
    world.clock.now += timedelta(seconds=3)
    authority.reload()
    stored = await world.repo.get(record.approval_id)
    assert stored is not None
    shown = as_signed(stored, authority, world.service.seals)
    assert shown.not_as_signed is not None
    assert "retired" in shown.not_as_signed, shown.not_as_signed
    if service == "policy":
        assert adoption_refusal(stored.model_copy(update={"decision": None}), text, authority) is not None
