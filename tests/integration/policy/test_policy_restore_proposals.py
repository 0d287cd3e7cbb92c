"""`tidegate db catch-up` records a lost decision with the proposal it was taken on, never an attacker's copy of the call
(restore7 F1, brief h53).

Acting as the attacker: another client of the tenant (its own client key, its own requester) publishes a copy of an
escalated call (same action id, tenant, tool and args: the same digest) with its own proposer, rationale and a task budget
of 0.0001 USD, on a partition of `actions.proposed` read before the genuine proposal's. The restore is simulated as in
test_policy_restore.py: every row of the tenant in the policy's schema is deleted by the database's owner.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from aiokafka.structs import RecordMetadata
from bus_helpers import Collector, Producer
from restore_helpers import restored_before
from signers import signed

from schemas import ActionDecided, ActionProposed, ActionProposedData, Envelope, encode, headers_for
from servicekit import ADMIN, KitSettings, SigningKey, create_pool, kafka_options
from servicekit.bus_history import SignedEvent
from services.policy.app import build
from tidegate.commands.tenant import publish_tenant
from tidegate.ops import catch_up as catch_up_module
from tidegate.ops.catch_up import catch_up

REFUND = {"payee_id": "cus_1002", "amount_usd": 700.0, "order_id": "O-7001"}  # over the tenant's threshold: escalates
GENUINE_BUDGET = 5.0  # the task's budget as the requester's client proposed it: the refund's 0.01 USD fits


@pytest.fixture
async def pool(infra: Any) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(infra.database_url, max_size=2)
    yield p
    await p.close()


async def _send_on(kit: KitSettings, topic: str, event: Envelope, partition: int) -> RecordMetadata:
    """Publish `event`, signed by its rightful producer, on `partition` (a producer picks its partition)."""
    producer = AIOKafkaProducer(bootstrap_servers=kit.kafka_bootstrap, **kafka_options(kit, ADMIN), acks="all")
    await producer.start()
    try:
        event = signed(event, kit)
        headers = [(k, v.encode()) for k, v in headers_for(event).items()]
        name = kit.topic_prefix + topic
        return await producer.send_and_wait(name, encode(event), key=event.key, headers=headers, partition=partition)
    finally:
        await producer.stop()


async def _last_partition(kit: KitSettings, topic: str) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=kit.kafka_bootstrap, **kafka_options(kit, ADMIN))
    await producer.start()
    try:
        return max(await producer.partitions_for(kit.topic_prefix + topic))
    finally:
        await producer.stop()


def _copy_by_mallory(genuine: ActionProposed) -> ActionProposed:
    """The attacker's copy of the call: the same action id, tenant, tool and args; its own requester, proposer and budget."""
    data = genuine.data.model_copy(
        update={
            "requested_by": "mallory@acme.example",  # signed with mallory's own client key (the Authority binds the two)
            "proposer": "external:mallory",
            "rationale": "FORGED by mallory",
            "budget_usd": 0.0001,
            "confidence": 0.99,
        }
    )
    return ActionProposed.build(ActionProposedData.model_validate(data.model_dump()), source="urn:example:mallory")


async def _escalated(
    kit: KitSettings, collector: Collector, wait_for: Any, make_proposal: Any
) -> tuple[str, ActionProposed, ActionDecided, RecordMetadata]:
    """A tenant whose refund over its threshold escalated, its proposal on the last partition of `actions.proposed`."""
    tenant = f"rsp-{uuid.uuid4().hex[:8]}"
    settings = {"allow_autonomous": True, "refund_threshold_usd": 100, "known_payees": ["cus_1002"]}
    await publish_tenant(kit, tenant=tenant, record=settings, set_by="ops@tidegate.example")
    genuine = make_proposal("issue_refund", REFUND, tenant=tenant, budget_usd=GENUINE_BUDGET)
    svc = build(kit=kit)
    await svc.start()
    try:
        sent = await _send_on(kit, "actions.proposed", genuine, await _last_partition(kit, "actions.proposed"))
        [decided] = await wait_for(lambda: collector.decided(genuine.data.action_id), what="the escalation")
    finally:
        await svc.stop()
    assert decided.data.outcome == "escalate", decided.data.reasons
    return tenant, genuine, decided, sent


async def _recorded_proposal(pool: asyncpg.Pool, action_id: str) -> ActionProposedData:
    row = await pool.fetchval("SELECT proposal::text FROM policy.decisions WHERE key = $1", action_id)
    assert row is not None, f"no decision recorded for {action_id}"
    return ActionProposedData.model_validate_json(row)


@pytest.fixture
def lowest_partition_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """Have the catch-up read each topic's partitions lowest first, each in its order (as restore7's probe saw it read).

    The order partitions come in is the broker's; the attacker's copy on partition 0 is then read before the genuine proposal.
    """
    real = catch_up_module.signed_events

    async def lowest_first(*args: Any, **kwargs: Any) -> AsyncIterator[SignedEvent]:
        for event in sorted([e async for e in real(*args, **kwargs)], key=lambda e: e.partition):  # stable: each partition's order
            yield event

    monkeypatch.setattr(catch_up_module, "signed_events", lowest_first)


@pytest.mark.usefixtures("lowest_partition_first")
async def test_catch_up_records_the_planners_proposal_not_a_forged_copy_read_first_and_a_grant_is_decided_on_it(
    kit: KitSettings, collector: Collector, producer: Producer, pool: asyncpg.Pool, wait_for: Any, make_proposal: Any, make_grant: Any
) -> None:
    tenant, genuine, escalated, sent = await _escalated(kit, collector, wait_for, make_proposal)
    assert sent.partition > 0
    await _send_on(kit, "actions.proposed", _copy_by_mallory(genuine), partition=0)  # the attacker's copy: read first
    # The requester's own client publishing the call again with another task budget and confidence: not what was decided on.
    other = genuine.data.model_copy(update={"budget_usd": 0.0001, "confidence": 0.99})
    await _send_on(kit, "actions.proposed", ActionProposed.build(other, source="tests/policy"), partition=0)
    await restored_before(pool, tenant)

    done = await catch_up(kit, say=lambda _: None)
    assert done.counts["policy decisions recorded"] == 1
    kept = await _recorded_proposal(pool, genuine.data.action_id)
    assert kept == genuine.data  # requester, proposer, rationale, budget, confidence: the planner's, as it proposed them
    [note] = [n for n in done.notes if genuine.data.action_id in n]
    assert "2 copies of its call on the bus, not the proposal it was decided on" in note
    assert "keeps the proposal it was decided on" in note

    svc = build(kit=kit)
    await svc.start()
    try:
        await producer.send("approvals", make_grant(escalated, SigningKey.load_or_create(kit.keys_dir, "approval")))
        [after] = await wait_for(lambda: collector.decided(genuine.data.action_id, via="approval"), what="the re-decision")
    finally:
        await svc.stop()
    assert after.data.outcome == "allow", after.data.reasons  # not `budget_exceeded` on the forged 0.0001 USD task budget
    assert "approved_by_human" in [r.code.value for r in after.data.reasons]
    assert (after.data.requested_by, after.data.proposer) == ("alice@acme.example", "tests/policy")
    assert after.data.facts["task_budget_usd"] == GENUINE_BUDGET


async def test_with_the_genuine_proposal_gone_the_forged_copy_is_not_recorded_and_the_note_says_so(
    kit: KitSettings, collector: Collector, pool: asyncpg.Pool, wait_for: Any, make_proposal: Any
) -> None:
    tenant, genuine, escalated, sent = await _escalated(kit, collector, wait_for, make_proposal)
    admin = AIOKafkaAdminClient(bootstrap_servers=kit.kafka_bootstrap, **kafka_options(kit, ADMIN))
    await admin.start()
    try:  # the genuine proposal leaves the bus (as retention would take it)
        where = TopicPartition(sent.topic, sent.partition)
        await admin.delete_records({where: RecordsToDelete(before_offset=sent.offset + 1)})
    finally:
        await admin.close()
    await _send_on(kit, "actions.proposed", _copy_by_mallory(genuine), partition=0)  # the only copy of the call left
    await restored_before(pool, tenant)

    done = await catch_up(kit, say=lambda _: None)
    assert done.counts["policy decisions recorded"] == 1
    kept = await _recorded_proposal(pool, genuine.data.action_id)
    d = escalated.data
    assert (kept.requested_by, kept.proposer, kept.rationale) == (d.requested_by, d.proposer, d.rationale)  # the decision's word
    # Nothing of mallory's copy; what the decision's facts state of the genuine proposal is kept (its task budget), so a
    # later grant is decided under the budget it was proposed with, never without one.
    assert (kept.budget_usd, kept.tainted_args) == (d.facts["task_budget_usd"], [])
    assert kept.budget_usd == genuine.data.budget_usd
    assert kept.confidence == d.facts.get("confidence") == genuine.data.confidence
    [note] = [n for n in done.notes if genuine.data.action_id in n]
    assert "its proposal has left the bus (1 copy of its call on the bus, not the proposal it was decided on" in note
    assert "its decision keeps the call as it states it" in note
