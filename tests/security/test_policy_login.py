"""The policy's own database login, in an attacker's hands, cannot widen what the policy allows (outside review, F4 and F5).

The attacker holds only `.tidegate/db/policy/policy.json`: no signing key, no bus credentials. With it, one INSERT into
`policy.known_payees` used to turn `deny new_payee_blocked` into `allow`; a rewritten `policy.decisions.proposal` would
have had a human's grant authorize args no approver saw. Known payees now carry the policy key's proof and a grant
authorizes the args it signed. And a valid signed proposal whose decision would be larger than the broker takes is
answered `deny too_large` rather than never (F5). Real broker and database, the real service.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from bus_helpers import Collector, Producer
from prometheus_client import REGISTRY

from schemas import (
    ActionDecided,
    ActionProposed,
    ActionProposedData,
    ActionResultData,
    ActionSucceeded,
    ApprovalData,
    ApprovalGranted,
    ProposalCost,
    ResultCost,
    decode,
)
from servicekit import REPO_ROOT, ControlState, KitSettings, ServiceProcess, SigningKey, ToolCatalog, approval_message
from servicekit.db import create_pool
from servicekit.dbroles import service_database_url
from services.policy._pg_repository import PgPolicyRepository
from services.policy.app import build
from services.policy.pack import PackSource, compile_pack
from services.policy.payees import PayeeSeal
from services.policy.service import PolicyService
from tests.conftest import delete_prefix_topics

pytestmark = pytest.mark.integration

CATALOG = ToolCatalog.load(REPO_ROOT / "catalog" / "tools")


def _proposal(tool: str, args: dict[str, Any], *, tenant: str = "acme", task_id: str | None = None) -> ActionProposed:
    data = ActionProposedData(
        action_id=f"a-{uuid.uuid4().hex[:10]}", task_id=task_id or f"t-{uuid.uuid4().hex[:8]}", tenant_id=tenant, step=1, tool=tool,
        args=args, rationale="security test", proposer="tests/security", cost=ProposalCost(usd=0.0), mode="autonomous",
        requested_by="alice@acme.example",
    )  # fmt: skip
    return ActionProposed.build(data, source="tests/security")


def _refund(payee: str, amount: float = 25.0) -> dict[str, Any]:
    return {"payee_id": payee, "amount_usd": amount, "order_id": "O-1"}


def _succeeded(p: ActionProposedData) -> ActionSucceeded:
    data = ActionResultData(
        action_id=p.action_id, task_id=p.task_id, tenant_id=p.tenant_id, tool=p.tool, status="succeeded", attempts=1, duration_ms=1.0,
        result={"refund_id": "re_1"}, cost=ResultCost(usd=0.01),
    )  # fmt: skip
    return ActionSucceeded.build(data, source="tidegate/executor")


def _refused() -> float:
    return sum(
        REGISTRY.get_sample_value("tidegate_rows_refused_total", {"service": "policy", "table": "known_payees", "reason": reason}) or 0.0
        for reason in ("unsigned", "invalid")
    )


def _codes(d: ActionDecided) -> tuple[str, list[str]]:
    return d.data.outcome, [r.code.value for r in d.data.reasons]


@pytest.fixture
async def as_policy_login(kit: KitSettings) -> AsyncIterator[asyncpg.Connection]:
    """A plain client logged in with the policy service's own database login (what the attacker holds)."""
    conn = await asyncpg.connect(service_database_url(kit, "policy"))
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def stack(kit: KitSettings, infra: Any, prefix: str) -> AsyncIterator[tuple[ServiceProcess, Collector, Producer]]:
    process = build(kit=kit)
    collector = Collector(kit, ["actions.decided", "actions.authorized", "deadletter"])
    producer = Producer(kit)
    await process.start()
    await collector.start()
    await producer.start()
    try:
        yield process, collector, producer
    finally:
        await producer.stop()
        await collector.stop()
        await process.stop()
        await delete_prefix_topics(infra.kafka_bootstrap, prefix)


async def test_a_known_payee_forged_with_the_policys_own_login_does_not_lift_the_new_payee_block(
    stack: tuple[ServiceProcess, Collector, Producer], as_policy_login: asyncpg.Connection, wait_for: Any
) -> None:
    _, collector, producer = stack

    async def decided(p: ActionProposed) -> ActionDecided:
        await producer.send("actions.proposed", p)
        found: ActionDecided = await wait_for(lambda: (collector.decided(p.data.action_id) or [None])[0], what=f"decision on {p.data.args}")
        return found

    assert _codes(await decided(_proposal("issue_refund", _refund("acct_attacker_99")))) == ("deny", ["new_payee_blocked"])

    # A genuine payment that settles: the policy learns its payee, with its key's proof.
    paid = _proposal("issue_refund", _refund("cus_1001", 40.0))
    assert _codes(await decided(paid))[0] == "allow"
    await producer.send("actions.results", _succeeded(paid.data))
    genuine = await wait_for(
        lambda: as_policy_login.fetchrow("SELECT key_id, proof FROM policy.known_payees WHERE tenant_id = 'acme' AND payee = 'cus_1001'"),
        what="the payee learned from the settled refund",
    )
    assert genuine["key_id"].startswith("policy-")
    assert genuine["proof"]

    # The attacker: the finding's INSERT (no proof), and a row that borrows the genuine row's proof.
    finding = "INSERT INTO policy.known_payees (tenant_id, payee, learned_from) VALUES ('acme', 'acct_attacker_99', 'x')"
    await as_policy_login.execute(finding)
    await as_policy_login.execute(
        "INSERT INTO policy.known_payees (tenant_id, payee, learned_from, key_id, proof) VALUES ('acme', 'acct_attacker_98', 'x', $1, $2)",
        genuine["key_id"],
        genuine["proof"],
    )
    before = _refused()
    for payee in ("acct_attacker_99", "acct_attacker_98"):
        d = await decided(_proposal("issue_refund", _refund(payee)))
        assert _codes(d) == ("deny", ["new_payee_blocked"]), payee
        assert d.data.facts["payee_is_new"] is True
    assert _refused() - before >= 2  # each refused row is counted (and logged)


async def test_a_large_valid_proposal_gets_a_deny_too_large_it_can_read_and_the_next_one_is_decided(
    stack: tuple[ServiceProcess, Collector, Producer], wait_for: Any
) -> None:
    _, collector, producer = stack
    recipients = [f"customer-{i:06d}-of-the-spring-campaign@mail.customers-of-acme.example" for i in range(10_000)]
    big = _proposal("send_email", {"to": recipients, "subject": "News", "body": "Hello"})
    assert 650_000 < len(big.model_dump_json()) < 1024 * 1024  # ~0.7 MB: under every bound of the bus, valid for its tool
    await producer.send("actions.proposed", big)
    after = _proposal("get_ticket", {"ticket_id": "T-1001"}, task_id=big.data.task_id)
    await producer.send("actions.proposed", after)

    d: ActionDecided = await wait_for(lambda: (collector.decided(big.data.action_id) or [None])[0], what="the large proposal's decision")
    assert _codes(d) == ("deny", ["too_large"])
    assert d.data.args == {}
    assert d.data.action_digest
    assert d.data.facts["decision_bytes"] > d.data.facts["max_decision_bytes"]
    next_one: ActionDecided = await wait_for(lambda: (collector.decided(after.data.action_id) or [None])[0], what="the next decision")
    assert next_one.data.outcome == "allow"
    assert collector.rejected(big.data.action_id) == []  # answered, not dead-lettered


async def test_a_learned_payee_still_counts_and_a_rewritten_stored_proposal_does_not_change_what_a_grant_authorizes(
    kit: KitSettings, as_policy_login: asyncpg.Connection, tmp_path: Path
) -> None:
    """Through the service's use cases on the policy's own login: the legitimate lesson, then the attacker's rewrite."""
    tenant = f"sec-{uuid.uuid4().hex[:8]}"
    source = PackSource.from_dir(REPO_ROOT / "policies" / "default")
    escalating = {"allow_autonomous": True, "known_payees": ["cus_1001"], "triggers": {"new_payee": {"action": "escalate"}}}
    pack = compile_pack(PackSource(files=source.files, settings=source.settings | {"tenants": {tenant: escalating}}), CATALOG)
    keys = kit.keys_dir
    approval_key = SigningKey.load_or_create(keys, "approval")
    signer = SigningKey.load_or_create(keys, "policy")

    async def nowhere(records: Any) -> None:
        pass

    def granted(d: ActionDecided) -> ApprovalGranted:
        now = datetime.now(UTC)
        data = ApprovalData(
            approval_id=f"ap-{uuid.uuid4().hex[:8]}", action_id=d.data.action_id, task_id=d.data.task_id, tenant_id=tenant,
            tool=d.data.tool, args=d.data.args, action_digest=d.data.action_digest, reasons=d.data.reasons,
            policy_version=d.data.policy_version, approver="bob@acme.example", approvers=["bob@acme.example"],
            approver_groups={"bob@acme.example": ["finance"]}, expires_at=now + timedelta(hours=1), decided_at=now,
            requested_by=d.data.requested_by, key_id=approval_key.key_id,
        )  # fmt: skip
        data = data.model_copy(update={"signature": approval_key.sign(approval_message("tidegate.approval.granted", data))})
        return ApprovalGranted.build(data, source="tidegate/approval")

    pool = await create_pool(service_database_url(kit, "policy"), max_size=2)
    try:
        service = PolicyService(
            catalog=CATALOG, pack=pack, repo=PgPolicyRepository(pool, PayeeSeal(signer, keys)), signer=signer, keys_dir=keys,
            control=ControlState(), publish_many=nowhere,
        )  # fmt: skip

        async def propose(args: dict[str, Any]) -> ActionDecided:
            record = await service.on_proposed(_proposal("issue_refund", args, tenant=tenant))
            return decode("actions.decided", record.decided_event.encode())

        # Legitimate: a new payee escalates, a human grants, the refund settles; the payee is known from then on.
        first = await propose(_refund("cus_7777"))
        assert _codes(first) == ("escalate", ["new_payee_review"])
        regranted = await service.on_approval(granted(first))
        assert regranted is not None
        assert regranted.outcome == "allow"
        await service.on_result(_succeeded(regranted.proposal))
        assert _codes(await propose(_refund("cus_7777"))) == ("allow", ["within_threshold"])

        # The attacker rewrites the escalated call's stored args to pay itself, then the human grants the genuine call.
        second = await propose(_refund("cus_8888", 30.0))
        assert second.data.outcome == "escalate"
        await as_policy_login.execute(
            "UPDATE policy.decisions SET proposal = jsonb_set(proposal, '{args,payee_id}', '\"acct_attacker_99\"') WHERE key = $1",
            second.data.action_id,
        )
        after_grant = await service.on_approval(granted(second))
        assert after_grant is not None
        assert after_grant.authorized_event is not None
        authorized = decode("actions.authorized", after_grant.authorized_event.encode())
        assert authorized.data.args["payee_id"] == "cus_8888"  # what the approver saw and signed, not the stored copy
    finally:
        await pool.close()
