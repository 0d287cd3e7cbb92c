"""The tenant API's rules: who may touch which tenant's directory, how a change is made and signed, what is learned."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from schemas import ControlTenant, ControlTenantData, Envelope, TenantDirectory
from servicekit import REPO_ROOT, ControlState, KitSettings, SigningKey, ToolCatalog, action_digest, sign_as_operator
from services.approval.domain import ApprovalRecord, Approver
from services.approval.repository import InMemoryApprovalRepository
from services.approval.tenants import TenantDirectories, proposals

CATALOG = ToolCatalog.load(REPO_ROOT / "catalog" / "tools")
NOW = datetime(2026, 11, 30, tzinfo=UTC)
OPERATOR = KitSettings(keys_dir=Path(tempfile.mkdtemp(prefix="tidegate-test-operator-")))

ROOT_A = Approver(approver="root@a.example", tenant_id="a", groups=frozenset({"admin"}))
BOB_A = Approver(approver="bob@a.example", tenant_id="a", groups=frozenset({"finance"}))
OPS = Approver(approver="ops", tenant_id="*", groups=frozenset({"admin"}), operator=True)


def granted(n: int, tool: str, args: dict[str, Any], *, edited: bool = False, tenant: str = "a") -> ApprovalRecord:
    return ApprovalRecord(
        approval_id=f"ap-{tool}-{n}",
        action_id=f"a-{tool}-{n}",
        task_id="t",
        tenant_id=tenant,
        tool=tool,
        args=args,
        action_digest=action_digest(tenant, tool, args),
        status="granted",
        edited_args=args if edited else None,
        created_at=NOW + timedelta(minutes=n),
        expires_at=NOW + timedelta(hours=1),
    )


def mail(to: str) -> dict[str, Any]:
    return {"to": [to], "subject": "s", "body": "b"}


def test_a_counterparty_approved_unchanged_n_times_is_proposed_never_one_edited_or_already_listed() -> None:
    records = [granted(i, "send_email", mail("AP@Supplier.example")) for i in range(3)]
    records += [granted(10 + i, "send_email", mail("once@other.example"), edited=i > 0) for i in range(3)]  # 2 of them edited
    records += [granted(20 + i, "send_email", mail(f"x{i}@a.example")) for i in range(3)]  # internal already
    records += [granted(30 + i, "issue_refund", {"payee_id": "cus_9", "amount_usd": 900.0, "order_id": "O"}) for i in range(3)]
    directory = TenantDirectory(internal_domains=["a.example"]).model_dump()
    found = {(p.list, p.value): p.approvals for p in proposals(records, CATALOG, directory, after=3)}
    assert found == {("known_contacts", "ap@supplier.example"): 3, ("known_payees", "cus_9"): 3}
    assert proposals(records, CATALOG, directory, after=0) == []  # learning off (the default)
    assert {(p.list, p.value) for p in proposals(records, CATALOG, directory, after=1)} >= {("known_contacts", "once@other.example")}
    listed = TenantDirectory(known_contacts=["ap@supplier.example"], known_payees=["cus_9"]).model_dump()
    assert proposals(records, CATALOG, listed, after=3) == []


@pytest.fixture
def published() -> list[tuple[str, Envelope]]:
    return []


@pytest.fixture
def tenants(tmp_path: Path, published: list[tuple[str, Envelope]]) -> TenantDirectories:
    control = ControlState()

    async def publish(topic: str, event: Envelope) -> None:
        published.append((topic, event))
        await control.apply(event)  # the topic read back, at once

    return TenantDirectories(control, SigningKey.load_or_create(tmp_path, "approval"), publish, InMemoryApprovalRepository(), CATALOG)


async def test_access_is_role_then_tenant_and_another_tenant_is_not_found_alike(tenants: TenantDirectories) -> None:
    await tenants.publish_directory("a", TenantDirectory(), OPS, onboards=True)
    await tenants.publish_directory("b", TenantDirectory(), OPS, onboards=True)
    assert tenants.access(ROOT_A, "a", link=False) is None
    assert tenants.access(OPS, "b", link=False) is None
    theirs, nobody = tenants.access(ROOT_A, "b", link=False), tenants.access(ROOT_A, "zz", link=False)
    assert theirs is not None
    assert nobody is not None
    assert (theirs.status, theirs.code) == (nobody.status, nobody.code) == (404, "not_found")
    not_admin = tenants.access(BOB_A, "b", link=False)  # the role is refused before any tenant is looked at
    assert not_admin is not None
    assert (not_admin.status, not_admin.code) == (403, "not_admin")
    assert tenants.access(ROOT_A, "a", link=True) is not None  # a one-time link is never an admin
    onboarding = tenants.access(ROOT_A, None, link=False, onboarding=True)
    assert onboarding is not None
    assert onboarding.code == "not_operator"


async def test_a_change_is_signed_by_the_approval_key_with_a_growing_sequence_and_keeps_the_operators_entries(
    tenants: TenantDirectories, published: list[tuple[str, Envelope]]
) -> None:
    operator = sign_as_operator(
        OPERATOR,
        ControlTenant.build(ControlTenantData(tenant_id="a", settings={"internal_domains": ["a.example"]}, set_by="ops"), source="cli"),
    )
    await tenants.control.apply(operator)
    await tenants.publish_directory("a", TenantDirectory(chat_channels=["general"]), ROOT_A)
    changed = tenants.changed(
        "a",
        TenantDirectory(known_contacts=[" AP@Supplier.example "], known_payees=[" ACCT-9 "]),
        TenantDirectory(chat_channels=["general"]),
    )
    assert changed == TenantDirectory(known_contacts=["ap@supplier.example"], known_payees=["ACCT-9"])
    await tenants.publish_directory("a", changed, ROOT_A)
    (first_topic, first), (_, second) = published
    assert first_topic == "directory"
    assert first.keyid == second.keyid == tenants.key.key_id
    assert second.sequence is not None
    assert first.sequence is not None
    assert second.sequence > first.sequence
    assert tenants.effective("a")["internal_domains"] == ["a.example"]  # the operator's entry stays
    assert tenants.effective("a")["known_contacts"] == ["ap@supplier.example"]
    view = await tenants.view("a")
    assert (view["settings"], view["directory_set_by"]) == ({"internal_domains": ["a.example"]}, "root@a.example")


async def test_the_tenant_view_proposes_what_humans_approved_once_the_operator_turned_learning_on(tenants: TenantDirectories) -> None:
    repo = tenants.repo
    assert isinstance(repo, InMemoryApprovalRepository)
    for record in [granted(i, "send_email", mail("ap@supplier.example")) for i in range(2)]:
        repo.records[record.approval_id] = record
    off = ControlTenant.build(ControlTenantData(tenant_id="a", settings={}, set_by="ops"), source="cli")
    await tenants.control.apply(sign_as_operator(OPERATOR, off))
    assert (await tenants.view("a"))["proposals"] == []  # off by default
    on = ControlTenant.build(ControlTenantData(tenant_id="a", settings={"learn_after_approvals": 2}, set_by="ops"), source="cli")
    await tenants.control.apply(sign_as_operator(OPERATOR, on))
    [proposal] = (await tenants.view("a"))["proposals"]
    assert (proposal["list"], proposal["value"], proposal["approvals"]) == ("known_contacts", "ap@supplier.example", 2)
    await tenants.publish_directory(
        "a", tenants.changed("a", TenantDirectory(known_contacts=["ap@supplier.example"]), TenantDirectory()), ROOT_A
    )
    assert (await tenants.view("a"))["proposals"] == []  # added by an admin: nothing left to propose
