"""An insider with a plain Kafka client (no Tidegate code, keys of its own or none) tries each forgery; all are refused.

The services run as in the integration suites (real broker and PostgreSQL, built by their `app.build`).
Each attack is a raw aiokafka write; the test then checks that nothing happened (systems of record,
decisions, approvals, controls unchanged) and that the event was dead-lettered with its reason code.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from bus_helpers import Collector

import schemas as s
from servicekit import (
    ADMIN,
    AGENT,
    KitSettings,
    ServiceProcess,
    SigningKey,
    client_key,
    create_pool,
    kafka_options,
    service_key,
    sign_as_client,
    sign_as_operator,
    sign_event,
)
from services.approval.app import build as build_approval
from services.approval.settings import ApprovalSettings
from services.executor.app import build as build_executor
from services.planner.app import build as build_planner
from services.policy.app import build as build_policy
from systems.seed import TICKETS, seed_demo
from tidegate.demo.tickets import ticket_task

WATCHED = ["deadletter", "actions.decided", "actions.authorized", "approvals", "actions.results", "tasks.outcomes"]


@dataclass
class Stack:
    kit: KitSettings
    policy: Any  # the PolicyService
    collector: Collector
    attacker: AIOKafkaProducer
    pool: Any

    async def send(self, topic: str, value: bytes | dict[str, Any], key: str | None = "t-attack") -> None:
        """What the attacker can do: write any bytes to any topic."""
        raw = value if isinstance(value, bytes) else json.dumps(value).encode()
        await self.attacker.send_and_wait(self.kit.topic_prefix + topic, raw, key=key.encode() if key else None)

    async def refused(self, wait_for: Any, needle: str, code: str) -> None:
        """Wait until the record holding `needle` is dead-lettered with `code`."""
        await wait_for(
            lambda: [d for d in self.collector.rejected(needle) if d.data.code == code], what=f"{needle} dead-lettered as {code}"
        )


@pytest.fixture
async def stack(kit: KitSettings) -> AsyncIterator[Stack]:
    pool = await create_pool(kit.database_url, max_size=2)
    await seed_demo(pool, ["acme"])
    services: list[ServiceProcess] = [
        build_policy(kit),
        build_executor(kit),
        build_planner(kit),
        build_approval(kit, ApprovalSettings(http_port=0)),
    ]
    for svc in services:
        await svc.start()
    collector = Collector(kit, WATCHED)
    await collector.start()
    attacker = AIOKafkaProducer(
        bootstrap_servers=kit.kafka_bootstrap, acks="all", **kafka_options(kit, ADMIN)
    )  # an insider with broker access
    await attacker.start()
    try:
        yield Stack(kit, services[0].policy, collector, attacker, pool)  # type: ignore[attr-defined]
    finally:
        await attacker.stop()
        await collector.stop()
        for svc in reversed(services):
            await svc.stop()
        await pool.close()


def ce(event_type: str, tenant: str, data: dict[str, Any], **attrs: Any) -> dict[str, Any]:
    """A complete CloudEvents document, as an attacker writes it by hand."""
    return {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "tidegate/policy",
        "type": f"tidegate.{event_type}",
        "time": "2026-11-30T10:00:00Z",
        "tenantid": tenant,
        "data": data,
        **attrs,
    }


def permit_everything() -> dict[str, Any]:
    return {
        "tenant_id": "*",
        "version": "sha256:pwned",
        "files": {"all.cedar": '@id("all")\n@outcome("allow")\n@reason("within_threshold")\npermit(principal, action, resource);'},
        "settings": {},
        "published_by": "mallory",
    }


async def test_control_cannot_be_forged_spoofed_or_replayed(stack: Stack, wait_for: Any, tmp_path: Any) -> None:
    version = stack.policy.pack.version
    deletions = await stack.pool.fetchval("SELECT count(*) FROM crm.deletion_requests")
    # 1. An unsigned policy pack that permits everything.
    unsigned = ce("control.policy", "*", permit_everything())
    await stack.send("control", unsigned, key="policy")
    await stack.refused(wait_for, unsigned["id"], "signature_missing")
    # 2. The same, signed by a key of the attacker's own (named like an operator, not on the allow-list).
    mallory = SigningKey.load_or_create(tmp_path / "mallory", stack.kit.operator)
    forged = sign_event(s.decode("control", json.dumps(ce("control.policy", "*", permit_everything()))), mallory, sequence=2**62)
    await stack.send("control", s.encode(forged), key="policy")
    await stack.refused(wait_for, forged.id, "unknown_key")
    # 3. Signed by a service's genuine key: services do not govern.
    insider = sign_event(
        s.decode("control", json.dumps(ce("control.policy", "*", permit_everything()))), service_key(stack.kit, "executor")
    )
    await stack.send("control", s.encode(insider), key="policy")
    await stack.refused(wait_for, insider.id, "signer_not_allowed")
    assert stack.policy.pack.version == version

    # 4. A replay: the operator raised the budget, then lowered it; the attacker re-sends the captured raise.
    raise_ = sign_as_operator(
        stack.kit, s.ControlBudget.build(s.ControlBudgetData(tenant_id="acme", limit_usd=1000, set_by="ops"), source="cli")
    )
    lower = sign_as_operator(
        stack.kit, s.ControlBudget.build(s.ControlBudgetData(tenant_id="acme", limit_usd=5, set_by="ops"), source="cli")
    )
    for event in (raise_, lower):
        await stack.send("control", s.encode(event), key="budget:acme")
    await wait_for(lambda: stack.policy.control.budgets.get("acme") == 5, what="the operator's budget")
    await stack.send("control", s.encode(raise_), key="budget:acme")
    await stack.refused(wait_for, raise_.id, "control_replayed")
    assert stack.policy.control.budgets["acme"] == 5

    # 5. A kill switch set by the operator cannot be cleared by the attacker, signed or replayed.
    switch = s.ControlKillswitchData(tenant_id="acme", tool="issue_refund", active=True, set_by="oncall")
    await stack.send("control", s.encode(sign_as_operator(stack.kit, s.ControlKillswitch.build(switch, source="cli"))), key="k")
    await wait_for(lambda: stack.policy.control.killed("acme", "issue_refund"), what="the kill switch")
    clear = ce("control.killswitch", "acme", {**switch.model_dump(), "active": False})
    await stack.send("control", clear, key="k")
    await stack.refused(wait_for, clear["id"], "signature_missing")
    assert stack.policy.control.killed("acme", "issue_refund") is not None

    # Nothing destructive runs: a genuine client's deletion request is still decided by the real pack.
    proposal = sign_as_client(
        stack.kit,
        s.ActionProposed.build(
            s.ActionProposedData(
                action_id=f"del-{uuid.uuid4().hex[:8]}",
                task_id="t-del",
                tenant_id="acme",
                step=1,
                tool="delete_customer_data",
                args={"customer_id": "cus_1001", "reason": "asked"},
                proposer="external:test",
                mode="autonomous",
                requested_by="alice@acme.example",
            ),
            source="external:test",
        ),
    )
    await stack.send("actions.proposed", s.encode(proposal), key="t-del")
    [decided] = await wait_for(lambda: stack.collector.decided(proposal.data.action_id), what="the deletion's decision")
    assert decided.data.outcome != "allow"
    assert decided.data.policy_version == version
    assert not stack.collector.authorized(proposal.data.action_id)
    assert await stack.pool.fetchval("SELECT count(*) FROM crm.deletion_requests") == deletions


async def test_decisions_results_and_replies_cannot_be_forged(stack: Stack, wait_for: Any) -> None:
    action, reserved = f"a-{uuid.uuid4().hex[:8]}", f"r-{uuid.uuid4().hex[:8]}"
    # A genuine call holds budget: the outside inventory service is not running, so no genuine result comes for 10 s.
    genuine = sign_as_client(
        stack.kit,
        s.ActionProposed.build(
            s.ActionProposedData(
                action_id=reserved,
                task_id="t-attack",
                tenant_id="acme",
                step=1,
                tool="update_inventory",
                args={"sku": "SKU-1", "delta": 1},
                proposer="external:test",
                mode="autonomous",
                requested_by="alice@acme.example",
            ),
            source="external:test",
        ),
    )
    await stack.send("actions.proposed", s.encode(genuine))
    await wait_for(lambda: stack.collector.authorized(reserved), what="the genuine call's authorization")
    held = "SELECT status, amount_usd FROM policy.reservations WHERE action_id = $1"
    reservation = await stack.pool.fetchrow(held, reserved)
    assert reservation["status"] == "reserved"
    spent = await stack.pool.fetchval("SELECT amount_usd FROM policy.spend WHERE tenant_id = 'acme' AND task_id = 't-attack'")
    decided = {
        "action_id": action,
        "task_id": "t-attack",
        "tenant_id": "acme",
        "tool": "issue_refund",
        "args": {"payee_id": "cus_1001", "amount_usd": 5000.0, "order_id": "O-1"},
        "action_digest": "x",
        "outcome": "escalate",
        "reasons": [{"code": "needs_human_approval", "policy_id": "p"}],
        "policy_version": "v",
        "risk": "read",  # a low risk class: one approver, anyone
        "latency_ms": 1,
        "requested_by": "mallory@acme.example",
    }
    # An unsigned decision (it would open an approval request with the attacker's risk and requester).
    first = ce("action.decided", "acme", decided)
    await stack.send("actions.decided", first)
    await stack.refused(wait_for, first["id"], "signature_missing")
    # Signed by the planner's genuine key: only the policy service decides.
    by_planner = sign_event(
        s.decode("actions.decided", json.dumps(ce("action.decided", "acme", decided))), service_key(stack.kit, "planner")
    )
    await stack.send("actions.decided", s.encode(by_planner))
    await stack.refused(wait_for, by_planner.id, "signer_not_allowed")
    # Forged results: a failure (releases a budget reservation at the policy), a success (moves the planner on).
    result = {"action_id": reserved, "task_id": "t-attack", "tenant_id": "acme", "tool": "issue_refund", "attempts": 1, "duration_ms": 1}
    failed = ce("action.failed", "acme", {**result, "status": "failed"}, source="tidegate/executor")
    succeeded = ce("action.succeeded", "acme", {**result, "status": "succeeded", "result": {"ok": True}}, source="tidegate/executor")
    for event in (failed, succeeded):
        await stack.send("actions.results", event)
    await stack.refused(wait_for, failed["id"], "signature_missing")
    await stack.refused(wait_for, succeeded["id"], "signature_missing")
    # The budget the genuine call holds is still held: the forged failure released nothing.
    forgeries = {failed["id"], succeeded["id"]}
    assert not [e for e in stack.collector.events["actions.results"] if e.data.action_id == reserved and e.id not in forgeries]
    assert await stack.pool.fetchrow(held, reserved) == reservation
    assert await stack.pool.fetchval("SELECT amount_usd FROM policy.spend WHERE tenant_id = 'acme' AND task_id = 't-attack'") == spent
    # A tool reply signed by a key the catalog does not name for that tool (the executor's own, say).
    reply = ce(
        "tool.reply", "acme", {"action_id": action, "task_id": "t-attack", "tenant_id": "acme", "tool": "update_inventory", "ok": True}
    )
    signed_reply = sign_event(s.decode("tools.update_inventory.replies", json.dumps(reply)), service_key(stack.kit, "executor"))
    await stack.send("tools.update_inventory.replies", s.encode(signed_reply))
    await stack.refused(wait_for, signed_reply.id, "signer_not_allowed")
    # Nothing was approved, authorized or paid.
    assert not [e for e in stack.collector.events["approvals"] if e.data.action_id == action]
    assert not stack.collector.authorized(action)
    assert await stack.pool.fetchval("SELECT count(*) FROM payments.refunds WHERE idempotency_key = $1", action) == 0


async def test_the_requester_is_the_authenticated_client(stack: Stack, wait_for: Any) -> None:
    def task(requested_by: str, tenant: str = "acme") -> s.TaskSubmitted:
        data = s.TaskSubmittedData(
            task_id=f"t-{uuid.uuid4().hex[:8]}",
            tenant_id=tenant,
            workflow="support_triage",
            input={"ticket_id": "T-1001"},
            requested_by=requested_by,
        )
        return s.TaskSubmitted.build(data, source="client")

    # Alice's registered key, claiming to be someone else (four-eyes would then let Alice approve her own task).
    alice = client_key(stack.kit, "acme", "alice@acme.example")
    spoofed = sign_event(task("bob@acme.example"), alice)
    await stack.send("tasks", s.encode(spoofed), key=spoofed.data.task_id)
    await stack.refused(wait_for, spoofed.id, "signer_not_allowed")
    # Alice's key, for another tenant.
    other_tenant = sign_event(task("alice@acme.example", tenant="globex"), alice)
    await stack.send("tasks", s.encode(other_tenant), key=other_tenant.data.task_id)
    await stack.refused(wait_for, other_tenant.id, "signer_not_allowed")
    # No key at all, and a proposal with no signature from an outside agent.
    anonymous = task("alice@acme.example")
    await stack.send("tasks", s.encode(anonymous), key=anonymous.data.task_id)
    await stack.refused(wait_for, anonymous.id, "signature_missing")
    proposal = ce(
        "action.proposed",
        "acme",
        {"action_id": "p-1", "task_id": "t-p", "tenant_id": "acme", "step": 1, "tool": "tag_ticket", "args": {}, "proposer": "x"},
    )
    await stack.send("actions.proposed", proposal)
    await stack.refused(wait_for, proposal["id"], "signature_missing")
    # The genuine one runs: the planner relays Alice as the requester in its own signed proposals.
    genuine = sign_as_client(stack.kit, task("alice@acme.example"))
    await stack.send("tasks", s.encode(genuine), key=genuine.data.task_id)
    [first, *_] = await wait_for(
        lambda: (
            stack.collector.events["actions.decided"]
            and [e for e in stack.collector.events["actions.decided"] if e.data.task_id == genuine.data.task_id]
        ),
        what="a decision on the genuine task",
    )
    assert first.data.requested_by == "alice@acme.example"
    for rejected in (spoofed, other_tenant, anonymous):
        assert not [e for e in stack.collector.events["actions.decided"] if e.data.task_id == rejected.data.task_id]


async def test_an_incomplete_or_mismatched_envelope_is_dead_lettered_never_filled_in(stack: Stack, wait_for: Any) -> None:
    data = {"action_id": "p-2", "task_id": "t-p", "tenant_id": "acme", "step": 1, "tool": "tag_ticket", "args": {}, "proposer": "x"}
    no_id = {k: v for k, v in ce("action.proposed", "acme", data).items() if k != "id"}
    no_id["source"] = "needle-no-id"
    await stack.send("actions.proposed", no_id)
    await stack.refused(wait_for, "needle-no-id", "invalid_event")
    elsewhere = ce("action.proposed", "globex", data, source="needle-tenant")  # filed under another tenant than its data's
    await stack.send("actions.proposed", elsewhere)
    await stack.refused(wait_for, "needle-tenant", "invalid_event")
    assert not stack.collector.decided("p-2")


async def test_another_tenant_cannot_squat_an_action_id(stack: Stack, wait_for: Any) -> None:
    """Tenant B's client proposes the id of tenant A's next step first; A never gets B's decision, nothing of B's runs as A's."""
    task = f"t-{uuid.uuid4().hex[:8]}"
    action = f"{task}:2"  # an id an outside agent chose and tenant B learned: policy keeps the first tenant's

    def proposal(tenant: str, requester: str, args: dict[str, Any]) -> s.ActionProposed:
        data = s.ActionProposedData(
            action_id=action,
            task_id=task,
            tenant_id=tenant,
            step=2,
            tool="tag_ticket",
            args=args,
            proposer="external:test",
            mode="autonomous",
            requested_by=requester,
        )
        return sign_as_client(stack.kit, s.ActionProposed.build(data, source="external:test"))

    squat = proposal("globex", "mallory@globex.example", {"ticket_id": "T-1001", "tag": "squatted"})
    await stack.send("actions.proposed", s.encode(squat), key=task)
    [b_decision] = await wait_for(lambda: stack.collector.decided(action), what="the squatter's decision")
    assert b_decision.tenantid == "globex"
    # A's genuine proposal of the same id: dead-lettered with a stable reason, B's decision is not handed to A.
    genuine = proposal("acme", "alice@acme.example", {"ticket_id": "T-1001", "tag": "vip"})
    await stack.send("actions.proposed", s.encode(genuine), key=task)
    await stack.refused(wait_for, genuine.id, "action_id_reused")
    assert [d.id for d in stack.collector.decided(action)] == [b_decision.id]
    assert all(a.tenantid == "globex" for a in stack.collector.authorized(action))
    # A redelivery of the squatter's own proposal is still answered (the same decision, not a conflict).
    await stack.send("actions.proposed", s.encode(squat), key=task)
    await wait_for(lambda: len(stack.collector.decided(action)) == 2, what="the squatter's redelivered decision")
    assert {d.id for d in stack.collector.decided(action)} == {b_decision.id}
    # The same tenant reusing its id for another call is refused the same way.
    again = proposal("globex", "mallory@globex.example", {"ticket_id": "T-1002", "tag": "other"})
    await stack.send("actions.proposed", s.encode(again), key=task)
    await stack.refused(wait_for, again.id, "action_id_reused")
    assert {d.id for d in stack.collector.decided(action)} == {b_decision.id}


async def test_another_tenant_cannot_guess_the_planners_next_action_id(stack: Stack, wait_for: Any) -> None:
    """Tenant B, on the shared agent login, reads A's decisions and proposes every id it can derive for A's steps first.

    The planner's ids carry a tag only the planner can compute (`<task_id>:<step>.<tag>`): none of B's guesses is
    A's, so A's task runs every step to completion, and B's proposals are decided as B's own.
    """
    task_id = f"t-{uuid.uuid4().hex[:8]}"
    genuine = sign_as_client(
        stack.kit, s.TaskSubmitted.build(ticket_task(next(t for t in TICKETS if t.ticket_id == "T-1007"), task_id=task_id), source="client")
    )
    assert genuine.data.tenant_id == "acme"
    mallory = AIOKafkaProducer(bootstrap_servers=stack.kit.kafka_bootstrap, acks="all", **kafka_options(stack.kit, AGENT))
    spy = AIOKafkaConsumer(
        stack.kit.topic_prefix + "actions.decided",
        bootstrap_servers=stack.kit.kafka_bootstrap,
        auto_offset_reset="earliest",
        group_id=f"{stack.kit.topic_prefix}agent-mallory-{uuid.uuid4().hex[:8]}",  # the groups the agent login may use
        **kafka_options(stack.kit, AGENT),
    )
    guesses: list[str] = []

    async def squat(action_id: str) -> None:
        data = s.ActionProposedData(
            action_id=action_id,
            task_id=task_id,
            tenant_id="globex",
            step=int(action_id.split(":")[1].split(".")[0]),
            tool="tag_ticket",
            args={"ticket_id": "T-1001", "tags": ["squatted"]},
            proposer="external:mallory",
            mode="autonomous",
            requested_by="mallory@globex.example",
        )
        event = sign_as_client(stack.kit, s.ActionProposed.build(data, source="external:mallory"))
        await mallory.send_and_wait(stack.kit.topic_prefix + "actions.proposed", s.encode(event), key=task_id.encode())
        guesses.append(action_id)

    async with mallory, spy:
        # B knows the task id before A submits it: it takes every id of the form the planner used to give.
        for step in (1, 2, 3, 4):
            for guess in (f"{task_id}:{step}", f"{task_id}:{step}.{'0' * 20}"):
                await squat(guess)
        await wait_for(lambda: all(stack.collector.decided(g) for g in guesses), timeout=30, what="B's decisions on its guesses")
        await stack.send("tasks", s.encode(genuine), key=task_id)
        # B reads A's first decision on the shared topic and derives the next ids from the one it saw.
        seen = None
        while seen is None:
            record = await asyncio.wait_for(spy.getone(), timeout=30)
            event = json.loads(record.value)
            if event["tenantid"] == "acme" and event["data"]["task_id"] == task_id:
                seen = event["data"]["action_id"]
        tag = seen.rsplit(".", 1)[1]
        for step in (2, 3):
            await squat(f"{task_id}:{step}.{tag}")
        outcome = await wait_for(lambda: stack.collector.outcome(task_id), timeout=60, what="A's task outcome")
    assert outcome.type == "tidegate.task.completed"
    assert outcome.data.counts.proposed == outcome.data.counts.succeeded == 3
    mine = {e.data.action_id for e in stack.collector.events["actions.results"] if e.data.task_id == task_id and e.tenantid == "acme"}
    assert len(mine) == 3
    assert not mine & set(guesses)
    assert not [
        d
        for d in stack.collector.events["deadletter"]
        if d.data.code == "action_id_reused" and task_id in d.data.raw_value and '"acme"' in d.data.raw_value
    ]
    for guess in guesses:
        assert {d.tenantid for d in stack.collector.decided(guess)} <= {"globex"}


async def test_a_stolen_service_login_replays_genuine_signatures_onto_other_actions_and_tenants(stack: Stack, wait_for: Any) -> None:
    """bindattack: the executor's, then the planner's Kafka login (their `.properties`, no signing key) on the topics they write.

    Each republishes what its service genuinely signed with the action or the tenant changed (a success for another action, a
    result moved to another tenant, a proposal for a new action): the bytes the signature covers changed, so every consumer
    dead-letters them `signature_invalid`; nothing is settled, decided or run for the action or tenant they now name.
    """
    executor_key, planner_key = service_key(stack.kit, "executor"), service_key(stack.kit, "planner")
    victim = f"a-{uuid.uuid4().hex[:8]}"
    result = {"action_id": f"a-{uuid.uuid4().hex[:8]}", "task_id": "t-attack", "tenant_id": "acme", "tool": "issue_refund"}
    genuine = sign_event(
        s.ActionSucceeded.build(
            s.ActionResultData(**result, status="succeeded", attempts=1, duration_ms=1.0, result={"ok": True}), source="tidegate/executor"
        ),
        executor_key,
    )
    proposal = s.ActionProposedData(
        action_id=f"a-{uuid.uuid4().hex[:8]}", task_id="t-attack", tenant_id="acme", step=1, tool="issue_refund",
        args={"payee_id": "cus_1001", "amount_usd": 40.0, "order_id": "O-1"}, proposer="tidegate/planner", mode="autonomous",
        requested_by="alice@acme.example",
    )  # fmt: skip
    proposed = sign_event(s.ActionProposed.build(proposal, source="tidegate/planner"), planner_key)

    def edited(event: Any, needle: str, **data: Any) -> bytes:
        document = json.loads(s.encode(event))
        document["data"] |= data
        document["source"] = needle  # found again in the dead letter's raw value
        if "tenant_id" in data:
            document["tenantid"] = data["tenant_id"]
        return json.dumps(document).encode()

    attempts = {
        "executor": [
            ("actions.results", edited(genuine, "needle-other-action", action_id=victim), "needle-other-action"),
            ("actions.results", edited(genuine, "needle-other-tenant", tenant_id="globex"), "needle-other-tenant"),
        ],
        "planner": [("actions.proposed", edited(proposed, "needle-new-action", action_id=victim), "needle-new-action")],
    }
    for principal, sends in attempts.items():
        thief = AIOKafkaProducer(bootstrap_servers=stack.kit.kafka_bootstrap, acks="all", **kafka_options(stack.kit, principal))
        await thief.start()
        try:
            for topic, raw, _ in sends:  # the broker lets it write these topics: its own
                await thief.send_and_wait(stack.kit.topic_prefix + topic, raw, key=b"t-attack")
        finally:
            await thief.stop()
    for sends in attempts.values():
        for _, _, needle in sends:
            await stack.refused(wait_for, needle, "signature_invalid")
    assert not stack.collector.decided(victim)
    assert not stack.collector.authorized(victim)
