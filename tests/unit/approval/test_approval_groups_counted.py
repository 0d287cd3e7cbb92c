"""Approvals the policy would not count (approver probe 2, finding 8), over the in-memory repository.

The tenant's `approver_groups` setting (operator-signed `control.tenant`) says whose approvals the policy
service counts; the groups file here said `support` may decide a `draft` call. The page told `support`
approvers they could decide, said "granted", and the policy denied the grant `approval_quorum_not_met`.
Now such an approve is refused before it is recorded, with the reason, and the disagreement is logged once.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from signers import as_operator
from test_approval_service_api import World, bearer, decided, world  # noqa: F401  (the fixture)

from schemas import ControlPolicy, ControlPolicyData, ControlTenant, ControlTenantData, RiskClass, action_digest
from servicekit import ControlState
from servicekit.approver_groups import counts, recorded_approver_groups
from services.approval import auth
from services.approval.domain import DEFAULT_GROUPS, ApprovalRecord, Approver, GroupsConfig
from services.policy.engine import _quorum_reasons
from services.policy.tenant_settings import TenantSettings

EMAIL = {"to": "customer@example.com", "subject": "Your refund", "body": "Done."}
REQUESTER = "req@acme.example"


async def _token(world: World, approver: str, groups: list[str]) -> str:  # noqa: F811
    token = auth.new_token()
    await world.repo.add_token(auth.hash_token(token), approver, "acme", groups)
    return token


async def _settings(world: World, settings: dict[str, Any]) -> None:  # noqa: F811
    """The operator's `control.tenant` record for acme (`tidegate tenant set acme --setting ...`)."""
    world.service.control = world.service.control or ControlState()
    record = ControlTenant.build(ControlTenantData(tenant_id="acme", settings=settings, set_by="admin"), source="cli")
    await world.service.control.apply(as_operator(record))


async def _two_of_two_email(world: World) -> ApprovalRecord:  # noqa: F811
    """The probe's request: a `send_email` (class `draft`, decided by `support` per the groups file) needing two approvals."""
    world.service.groups = GroupsConfig(default=DEFAULT_GROUPS.model_copy(update={"required_approvals": {"draft": 2}}))
    call = decided(tool="send_email", args=EMAIL, requested_by=REQUESTER, action_digest=action_digest("acme", "send_email", EMAIL))
    record = await world.service.on_decided(call, event_id="e1", at=world.clock())
    assert record is not None
    assert (record.risk, record.required_approvals) == ("draft", 2)
    return record


async def _approve(world: World, record: ApprovalRecord, token: str) -> httpx.Response:  # noqa: F811
    body = {"action_digest": record.action_digest}
    return await world.client.post(f"/api/v1/approvals/{record.approval_id}/approve", json=body, headers=bearer(token))


async def test_an_approver_the_tenants_settings_do_not_count_is_told_and_refused_before_the_vote_is_recorded(
    world: World,  # noqa: F811
) -> None:
    await _settings(world, {"approver_groups": {"draft": ["comms"]}})
    record = await _two_of_two_email(world)
    p1, p2 = await _token(world, "p1@acme.example", ["support"]), await _token(world, "p2@acme.example", ["support"])
    shown = (await world.client.get(f"/api/v1/approvals/{record.approval_id}", headers=bearer(p1))).json()
    assert (shown["can_decide"], shown["cannot_decide_code"], shown["can_reject"]) == (False, "groups_not_counted", True)
    assert shown["cannot_decide_because"].startswith("your approval would not count: the tenant's settings require a member of ['comms']")
    assert "draft calls" in shown["cannot_decide_because"]
    for token in (p1, p2):
        refused = await _approve(world, record, token)
        assert (refused.status_code, refused.json()["detail"]["code"]) == (403, "groups_not_counted")
    stored = await world.repo.get(record.approval_id)
    assert stored is not None
    assert (stored.status, stored.approvers, stored.version) == ("pending", [], record.version)
    assert world.bus.types() == ["tidegate.approval.requested"]  # no grant the policy would deny


async def test_approvers_in_the_counted_group_still_decide_and_anyone_the_file_lets_in_may_still_reject(
    world: World,  # noqa: F811
) -> None:
    await _settings(world, {"approver_groups": {"draft": ["comms"]}})
    record = await _two_of_two_email(world)
    c1, c2 = await _token(world, "c1@acme.example", ["support", "comms"]), await _token(world, "c2@acme.example", ["support", "comms"])
    assert (await world.client.get(f"/api/v1/approvals/{record.approval_id}", headers=bearer(c1))).json()["can_decide"] is True
    assert (await _approve(world, record, c1)).json()["status"] == "pending"
    granted = await _approve(world, record, c2)
    assert (granted.status_code, granted.json()["status"]) == (200, "granted"), granted.text
    both = ["comms", "support"]
    assert world.bus.events[-1][1].data.approver_groups == {"c1@acme.example": both, "c2@acme.example": both}

    second = await world.service.on_decided(
        decided("a-2", tool="send_email", args=EMAIL, requested_by=REQUESTER, action_digest=action_digest("acme", "send_email", EMAIL)),
        event_id="e2",
        at=world.clock(),
    )
    assert second is not None
    p1 = await _token(world, "p1@acme.example", ["support"])
    rejected = await world.client.post(f"/api/v1/approvals/{second.approval_id}/reject", json={}, headers=bearer(p1))
    assert (rejected.status_code, rejected.json()["status"]) == (200, "rejected"), rejected.text


async def test_without_the_setting_in_a_record_every_approver_the_file_lets_in_decides_as_before(world: World) -> None:  # noqa: F811
    await _settings(world, {"allow_autonomous": False})  # the pack is on the policy's disk: its default is not known here
    record = await _two_of_two_email(world)
    p1 = await _token(world, "p1@acme.example", ["support"])
    assert (await _approve(world, record, p1)).json()["status"] == "pending"


async def test_a_pack_on_control_gives_its_default_approver_groups_under_a_record_that_names_none(world: World) -> None:  # noqa: F811
    await _settings(world, {"allow_autonomous": False})
    pack = {"tenants": {"default": {"approver_groups": {"draft": ["comms"]}}}}
    policy = ControlPolicyData(version="sha256:x", files={}, settings=pack, published_by="admin")
    assert world.service.control is not None
    await world.service.control.apply(as_operator(ControlPolicy.build(policy, source="cli")))
    record = await _two_of_two_email(world)
    p1 = await _token(world, "p1@acme.example", ["support"])
    refused = await _approve(world, record, p1)
    assert (refused.status_code, refused.json()["detail"]["code"]) == (403, "groups_not_counted")


async def test_the_disagreement_is_logged_once_per_tenant_and_class(world: World, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    await _settings(world, {"approver_groups": {"draft": ["comms"]}})
    with caplog.at_level(logging.WARNING, logger="services.approval.service"):
        record = await _two_of_two_email(world)
        p1 = await _token(world, "p1@acme.example", ["support"])
        for _ in range(3):
            await world.client.get(f"/api/v1/approvals/{record.approval_id}", headers=bearer(p1))
            await _approve(world, record, p1)
    told = [r.getMessage() for r in caplog.records if "approver_groups" in r.getMessage()]
    assert len(told) == 1, told
    assert "lets ['support'] decide draft calls of acme" in told[0]
    assert "count only ['comms']" in told[0]


@pytest.mark.parametrize(
    ("record", "pack", "tenant", "expected"),
    [
        ({"approver_groups": {"draft": ["comms"]}}, None, "acme", {"draft": ["comms"]}),
        ({"allow_autonomous": True}, None, "acme", None),  # the pack's default is on the policy's disk
        ({"allow_autonomous": True}, {"tenants": {"default": {"approver_groups": {"read": ["x"]}}}}, "acme", {"read": ["x"]}),
        ({"approver_groups": {}}, {"tenants": {"default": {"approver_groups": {"read": ["x"]}}}}, "acme", {}),  # the record replaces
        (None, {"tenants": {"acme": {"approver_groups": {"draft": ["a"]}}, "default": {}}}, "acme", {"draft": ["a"]}),
        (None, {"tenants": {"default": {}}}, "acme", {}),
        ({"approver_groups": {"draft": "comms"}}, None, "acme", None),  # malformed: the policy ignores the record
    ],
)
def test_the_tenants_approver_groups_are_read_from_records_as_the_policy_merges_them(
    record: dict[str, Any] | None, pack: dict[str, Any] | None, tenant: str, expected: dict[str, list[str]] | None
) -> None:
    assert recorded_approver_groups(record, pack, tenant) == expected


def test_the_counting_rule_is_the_policys() -> None:
    assert counts((), ["support"])  # a class not named: anyone counts
    assert counts({"comms"}, ["support", "comms"])
    assert not counts({"comms"}, ["support"])
    assert not counts({"comms"}, [])


@pytest.mark.parametrize("held", [["support"], ["comms"], ["support", "comms"], [], ["finance"]])
@pytest.mark.parametrize("setting", [{"draft": ["comms"]}, {"financial": ["finance"]}, {}])
async def test_the_approval_service_refuses_exactly_the_approvers_the_policy_would_not_count(
    world: World,  # noqa: F811
    held: list[str],
    setting: dict[str, list[str]],
) -> None:
    """One approver of a 1-of-1 `draft` call: let through here only if the policy counts them, `groups_not_counted` only if it would not."""
    await _settings(world, {"approver_groups": setting})
    call = decided(tool="send_email", args=EMAIL, requested_by=REQUESTER, action_digest=action_digest("acme", "send_email", EMAIL))
    record = await world.service.on_decided(call, event_id="e1", at=world.clock())
    assert record is not None
    who = Approver(approver="x@acme.example", tenant_id="acme", groups=frozenset(held))
    refusal = world.service.access(record, who)
    refused_here = refusal is not None and refusal.code == "groups_not_counted"
    denied_there = bool(_quorum_reasons(TenantSettings(approver_groups=setting), RiskClass.DRAFT, {who.approver: held}, 1))
    assert refusal is not None or not denied_there  # never "you may decide" for a grant the policy denies
    assert not refused_here or denied_there  # never refused for this reason when the policy would count them
