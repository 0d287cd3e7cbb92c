"""Tenant admins keep their directory over plain HTTP; one tenant's admin cannot touch another's, and the approval key cannot change a mode.

The approval and policy services run on the real broker and database. The attacker holds tenant A's
admin token (and, as an insider, the approval service's own signing key and broker access).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer
from approval_harness import ApprovalHarness, StartApproval, bearer, read_topic

import schemas as s
from servicekit import ADMIN, kafka_options, service_key, sign_event
from services.policy.app import build as build_policy


def shape(answer: httpx.Response, name: str) -> tuple[int, str]:
    """An answer with the tenant's name taken out: what a stranger can tell apart."""
    return answer.status_code, answer.text.replace(name, "NAME")


async def propose_mail(h: ApprovalHarness, tenant: str, to: str) -> str:
    action_id = f"a-{uuid.uuid4().hex[:10]}"
    data = s.ActionProposedData(
        action_id=action_id,
        task_id=f"t-{uuid.uuid4().hex[:10]}",
        tenant_id=tenant,
        step=1,
        tool="send_email",
        args={"to": [to], "subject": "invoice", "body": "attached"},
        proposer="tests/security",
        mode="autonomous",
        requested_by=f"alice@{tenant}.example",
    )
    await h.publish("actions.proposed", s.ActionProposed.build(data, source="tests/security"))
    return action_id


async def decision(h: ApprovalHarness, wait_for: Any, action_id: str) -> tuple[str, list[str]]:
    async def found() -> list[Any]:
        events = await read_topic(h.kit.kafka_bootstrap, h.bus.topic("actions.decided"), "actions.decided")
        return [e for e in events if e.data.action_id == action_id]

    (decided, *_) = await wait_for(found, timeout=30, what=f"the decision on {action_id}")
    return decided.data.outcome, [r.code for r in decided.data.reasons]


async def test_tenant_admins_keep_their_own_directory_only_and_the_approval_key_cannot_change_a_mode(
    start_approval: StartApproval, http: httpx.AsyncClient, wait_for: Any
) -> None:
    h = await start_approval()
    policy = build_policy(h.kit)
    await policy.start()
    attacker = AIOKafkaProducer(bootstrap_servers=h.kit.kafka_bootstrap, acks="all", **kafka_options(h.kit, ADMIN))
    await attacker.start()
    try:
        a, b = f"a{uuid.uuid4().hex[:8]}", f"b{uuid.uuid4().hex[:8]}"
        operator = await h.token("ops@tidegate.example", ["admin"], operator=True)
        a_admin = await h.token(f"root@{a}.example", ["admin"], tenant=a)
        a_approver = await h.token(f"bob@{a}.example", ["finance"], tenant=a)
        tenants = f"{h.url}/api/v1/tenants"

        # Only an operator-wide admin onboards; a tenant admin cannot, even its own tenant.
        assert (await http.post(tenants, json={"tenant_id": a}, headers=bearer(a_admin))).json()["detail"]["code"] == "not_operator"
        assert (await http.post(tenants, json={"tenant_id": "x"})).status_code == 401
        for name in (a, b):
            made = await http.post(
                tenants, json={"tenant_id": name, "directory": {"internal_domains": [f"{name}.example"]}}, headers=bearer(operator)
            )
            assert made.status_code == 200, made.text
        assert (await http.post(tenants, json={"tenant_id": a}, headers=bearer(operator))).status_code == 409
        await wait_for(lambda: http.get(f"{tenants}/{a}", headers=bearer(a_admin)), what="tenant A visible to its admin")

        # A's admin against B: every route answers as for a tenant that does not exist, a bad body included.
        missing = f"z{uuid.uuid4().hex[:8]}"
        for method, suffix, body in (
            ("GET", "", None),
            ("PUT", "/directory", {"known_contacts": ["mallory@evil.example"]}),
            ("PATCH", "/directory", {"add": {"known_payees": ["ACCT-EVIL"]}}),
            ("PUT", "/directory", {"allow_autonomous": True}),  # invalid, and still only a 404
        ):
            theirs = await http.request(method, f"{tenants}/{b}{suffix}", json=body, headers=bearer(a_admin))
            nobody = await http.request(method, f"{tenants}/{missing}{suffix}", json=body, headers=bearer(a_admin))
            assert theirs.status_code == 404, (method, suffix, theirs.text)
            assert shape(theirs, b) == shape(nobody, missing)
        assert b not in (await http.get(tenants, headers=bearer(a_admin))).json()
        # An approver who is not an admin, and a one-time-link-less caller, are refused before any tenant is looked at.
        assert (await http.get(f"{tenants}/{a}", headers=bearer(a_approver))).json()["detail"]["code"] == "not_admin"
        assert (await http.put(f"{tenants}/{a}/directory", json={}, headers={})).status_code == 401
        b_view = (await http.get(f"{tenants}/{b}", headers=bearer(operator))).json()
        assert b_view["directory"]["known_contacts"] == []
        assert b_view["directory"]["known_payees"] == []

        # A's admin keeps A's directory: a contact, then the policy service uses it (once an operator made A autonomous).
        added = await http.patch(
            f"{tenants}/{a}/directory", json={"add": {"known_contacts": ["AP@Supplier.example"]}}, headers=bearer(a_admin)
        )
        assert added.status_code == 200, added.text
        assert added.json()["directory"]["known_contacts"] == ["ap@supplier.example"]
        operator_record = s.ControlTenant.build(
            s.ControlTenantData(tenant_id=a, settings={"allow_autonomous": True}, set_by="ops"), source="ops"
        )
        await h.publish("control", operator_record)  # signed by the operator key (the harness signs as the rightful producer)
        state = policy.policy.control  # type: ignore[attr-defined]
        await wait_for(
            lambda: a in state.tenants and "ap@supplier.example" in state.directories[a].directory.known_contacts,
            what="the policy service to read the operator's record and the admin's directory",
        )
        outcome, _ = await decision(h, wait_for, await propose_mail(h, a, "ap@supplier.example"))
        assert outcome == "allow"
        assert (await decision(h, wait_for, await propose_mail(h, a, "x@evil.example")))[0] == "escalate"

        # The insider with the approval key: a control.tenant that makes B autonomous is refused (approval may sign directories
        # only), and a directory record that smuggles a mode in is invalid as a whole. B stays in draft mode.
        approval = service_key(h.kit, "approval")
        forged_mode = sign_event(
            s.ControlTenant.build(s.ControlTenantData(tenant_id=b, settings={"allow_autonomous": True}, set_by="root"), source="x"),
            approval,
            sequence=time.time_ns(),
        )
        await attacker.send_and_wait(h.bus.topic("control"), s.encode(forged_mode), key=forged_mode.key)
        smuggled = s.DirectoryUpdated.build(
            s.DirectoryUpdatedData(tenant_id=b, directory=s.TenantDirectory(), set_by="root"), source="tidegate/approval"
        )
        doc = json.loads(s.encode(sign_event(smuggled, approval, sequence=time.time_ns())))
        doc["data"]["directory"]["allow_autonomous"] = True
        await attacker.send_and_wait(h.bus.topic("directory"), json.dumps(doc).encode(), key=smuggled.key)

        async def dead(event_id: str, code: str) -> list[Any]:
            letters = await read_topic(h.kit.kafka_bootstrap, h.bus.topic("deadletter"), "deadletter")
            return [d for d in letters if event_id in d.data.raw_value and d.data.code == code and d.data.service == "policy"]

        await wait_for(lambda: dead(forged_mode.id, "signer_not_allowed"), timeout=30, what="the forged mode dead-lettered")
        await wait_for(lambda: dead(smuggled.id, "invalid_event"), timeout=30, what="the smuggled mode dead-lettered")
        outcome, codes = await decision(h, wait_for, await propose_mail(h, b, f"carol@{b}.example"))
        assert (outcome, codes) == ("escalate", ["draft_mode"])
    finally:
        await attacker.stop()
        await policy.stop()
