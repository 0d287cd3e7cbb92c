"""Tenants are onboarded with `control.tenant` records: no policy edit, no new policy version; a stranger is refused with its own reason."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from schemas import (
    ActionProposed,
    ActionProposedData,
    ControlTenant,
    ControlTenantData,
    DirectoryUpdated,
    DirectoryUpdatedData,
    Envelope,
    TenantDirectory,
)
from servicekit import (
    REPO_ROOT,
    ControlState,
    EventOutlet,
    KitSettings,
    SigningKey,
    ToolCatalog,
    next_sequence,
    service_key,
    sign_as_operator,
    sign_event,
)
from services.policy import InMemoryPolicyRepository
from services.policy.pack import PackSource, compile_pack
from services.policy.service import PolicyService
from tidegate.commands.tenant import parse_trigger, tenant_record

CATALOG = ToolCatalog.load(REPO_ROOT / "catalog" / "tools")


@pytest.fixture
def published() -> list[tuple[str, Envelope]]:
    return []


@pytest.fixture
def service(tmp_path: Path, published: list[tuple[str, Envelope]]) -> PolicyService:
    async def publish(topic: str, event: Envelope) -> None:
        published.append((topic, event))

    return PolicyService(
        catalog=CATALOG,
        pack=compile_pack(PackSource.from_dir(REPO_ROOT / "policies" / "default"), CATALOG),
        repo=InMemoryPolicyRepository(),
        signer=SigningKey.load_or_create(tmp_path, "policy"),
        keys_dir=tmp_path,
        control=ControlState(),
        publish_many=EventOutlet(publish).publish_many,
    )


def _proposal(action_id: str, tool: str, args: dict[str, Any], tenant: str = "initech") -> ActionProposed:
    data = ActionProposedData(
        action_id=action_id, task_id="t-1", tenant_id=tenant, step=1, tool=tool, args=args, proposer="tests", mode="autonomous"
    )
    return ActionProposed.build(data, source="tests")


OPERATOR = KitSettings(keys_dir=Path(tempfile.mkdtemp(prefix="tidegate-test-operator-")))


def _tenant(settings: dict[str, Any], tenant: str = "initech") -> ControlTenant:
    """A `control.tenant` record as `tidegate tenant add|set` publishes it: signed by an operator, with a fresh sequence."""
    record = ControlTenant.build(ControlTenantData(tenant_id=tenant, settings=settings, set_by="admin"), source="tidegate/cli")
    return sign_as_operator(OPERATOR, record)


async def test_a_tenant_never_onboarded_is_refused_with_how_to_onboard(service: PolicyService) -> None:
    record = await service.on_proposed(_proposal("a-1", "get_ticket", {"ticket_id": "T-1"}))
    decided = record.decided
    assert decided is not None
    assert (decided.data.outcome, [r.code.value for r in decided.data.reasons]) == ("deny", ["tenant_not_onboarded"])
    assert "tidegate tenant add initech" in (decided.data.reasons[0].message or "")


async def test_a_control_record_onboards_and_changes_a_tenant_without_a_new_policy_version(service: PolicyService) -> None:
    version = service.pack.version
    await service.on_control(_tenant({"allow_autonomous": True, "known_payees": ["cus_1001"], "refund_threshold_usd": 100}))
    refund = {"payee_id": "cus_1001", "amount_usd": 50.0, "order_id": "O-1"}
    first = (await service.on_proposed(_proposal("a-2", "issue_refund", refund))).decided
    assert first is not None
    assert first.data.outcome == "allow"
    await service.on_control(_tenant({"allow_autonomous": True, "known_payees": ["cus_1001"], "refund_threshold_usd": 20}))
    second = (await service.on_proposed(_proposal("a-3", "issue_refund", refund))).decided
    assert second is not None
    assert second.data.outcome == "escalate"
    assert first.data.policy_version == second.data.policy_version == version == service.pack.version


async def test_an_invalid_record_onboards_nothing(service: PolicyService) -> None:
    await service.on_control(_tenant({"refund_threshold_usd": -5}))
    decided = (await service.on_proposed(_proposal("a-4", "get_ticket", {"ticket_id": "T-1"}))).decided
    assert decided is not None
    assert decided.data.reasons[0].code.value == "tenant_not_onboarded"


def test_the_cli_merges_changes_and_checks_them() -> None:
    record = tenant_record({"internal_domains": ["a.example"]}, {"allow_autonomous": True, "budget_usd": None}, ["new_payee=escalate:2"])
    assert record == {
        "internal_domains": ["a.example"],
        "allow_autonomous": True,
        "triggers": {"new_payee": {"action": "escalate", "approvers": 2}},
    }
    with pytest.raises(ValueError, match="a trigger is"):
        parse_trigger("new_payee=maybe")
    with pytest.raises(ValidationError):
        tenant_record({}, {"refund_threshold_usd": -1}, [])
    with pytest.raises(ValidationError):
        tenant_record({}, {}, ["no_such_trigger=deny"])
    classes = tenant_record({"classes": {"code_change": {"action": "deny"}}}, {}, [], ["financial=escalate:2"])
    assert classes == {"classes": {"code_change": {"action": "deny"}, "financial": {"action": "escalate", "approvers": 2}}}
    with pytest.raises(ValidationError):
        tenant_record({}, {}, [], ["finance=deny"])


def test_a_tenant_accepts_writes_no_tool_undoes_by_risk_class_and_a_misspelt_class_is_refused() -> None:
    assert tenant_record({}, {"accept_irreversible": ["write_low"]}, []) == {"accept_irreversible": ["write_low"]}
    with pytest.raises(ValidationError, match="accept_irreversible: not risk classes: low_risk"):
        tenant_record({}, {"accept_irreversible": ["low_risk"]}, [])


def _directory(tenant: str = "initech", *, onboards: bool = False, **entries: list[str]) -> Envelope:
    """A `directory.updated` record as the approval service publishes it for a tenant admin: approval-signed, with a sequence."""
    data = DirectoryUpdatedData(tenant_id=tenant, directory=TenantDirectory(**entries), set_by="root@initech.example", onboards=onboards)
    return sign_event(DirectoryUpdated.build(data, source="tidegate/approval"), service_key(OPERATOR, "approval"), sequence=next_sequence())


async def test_an_admins_directory_adds_to_the_operators_and_onboards_only_at_the_packs_default_posture(service: PolicyService) -> None:
    mail = {"to": ["ap@supplier.example"], "subject": "invoice", "body": "attached"}
    await service.on_control(_directory(onboards=True, known_contacts=["ap@supplier.example"]))
    onboarded = (await service.on_proposed(_proposal("d-1", "send_email", mail))).decided
    assert onboarded is not None  # onboarded, but on the default entry: draft mode, so a send still waits for a human
    assert (onboarded.data.outcome, onboarded.data.reasons[0].code.value) == ("escalate", "draft_mode")
    await service.on_control(_tenant({"allow_autonomous": True, "internal_domains": ["initech.example"]}))
    known = (await service.on_proposed(_proposal("d-2", "send_email", mail))).decided
    assert known is not None
    assert known.data.outcome == "allow"  # the admin's contact and the operator's mode, together
    stranger = (await service.on_proposed(_proposal("d-3", "send_email", mail | {"to": ["x@evil.example"]}))).decided
    assert stranger is not None
    assert stranger.data.outcome == "escalate"
    assert [r.code.value for r in stranger.data.reasons] == ["external_recipient"]
    await service.on_control(_directory(known_contacts=[]))  # the admin takes the contact back
    again = (await service.on_proposed(_proposal("d-4", "send_email", mail))).decided
    assert again is not None
    assert again.data.outcome == "escalate"


async def test_an_admins_directory_adds_to_a_tenant_the_pack_itself_onboarded(service: PolicyService) -> None:
    refund = {"payee_id": "cus_1001", "amount_usd": 50.0, "order_id": "O-1"}  # a payee acme's pack entry knows
    before = (await service.on_proposed(_proposal("p-1", "issue_refund", refund, tenant="acme"))).decided
    await service.on_control(_directory("acme", known_contacts=["ap@supplier.example"]))
    after = (await service.on_proposed(_proposal("p-2", "issue_refund", refund, tenant="acme"))).decided
    assert before is not None
    assert after is not None
    assert before.data.outcome == after.data.outcome == "allow"  # acme's own settings (autonomous, payees) still hold


async def test_a_tenant_onboarded_without_payees_is_told_how_to_pay_its_first_one(service: PolicyService) -> None:
    """Governance probe F5: every refund of a tenant with no known payee was denied, and the message named no way out."""
    await service.on_control(_tenant({"allow_autonomous": True, "refund_threshold_usd": 300}, tenant="initrode"))
    refund = {"payee_id": "cus_1001", "amount_usd": 40.0, "order_id": "O-7001"}
    decided = (await service.on_proposed(_proposal("a-9", "issue_refund", refund, tenant="initrode"))).decided
    assert decided is not None
    [reason] = decided.data.reasons
    assert (decided.data.outcome, reason.code.value) == ("deny", "new_payee_blocked")
    assert "tidegate tenant set initrode --payee" in (reason.message or "")
    assert "tidegate tenant set initrode --trigger new_payee=escalate" in (reason.message or "")
