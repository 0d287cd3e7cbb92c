"""Only genuine, unexpired authorizations run, once: every refusal is dead-lettered with its reason code."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from signers import as_operator

import schemas as s
from servicekit import ADMIN, Bus, ServiceProcess, SigningKey, kafka_options

NOISE = 20_000
REFUND = {"payee_id": "cus_1001", "amount_usd": 10.0, "order_id": "O-5001"}


async def refunds(pool: asyncpg.Pool, tenant: str) -> list[asyncpg.Record]:
    return await pool.fetch("SELECT * FROM payments.refunds WHERE tenant_id = $1 ORDER BY created_at", tenant)


async def test_a_genuine_authorization_runs_once_and_reports_attempts_duration_cost(
    executor: ServiceProcess, publisher: Bus, listener: Any, authorize: Any, pool: asyncpg.Pool, tenant: str, wait_for: Any
) -> None:
    event = authorize(tenant, "issue_refund", REFUND)
    await publisher.publish("actions.authorized", event)
    [result] = await wait_for(lambda: listener.for_action(event.data.action_id), what="the refund's result")
    assert result.type == "tidegate.action.succeeded"
    assert result.data.attempts == 1
    assert result.data.cost.usd == 0.01
    assert result.data.idempotency_key == event.data.action_id
    assert result.data.duration_ms > 0
    [row] = await refunds(pool, tenant)
    assert row["idempotency_key"] == event.data.action_id
    assert result.data.result["refund_id"] == row["refund_id"]
    claim = await pool.fetchrow("SELECT * FROM executor.actions WHERE action_id = $1", event.data.action_id)
    assert (claim["status"], claim["attempts"], claim["event_id"]) == ("succeeded", 1, event.id)


async def test_forged_tampered_unknown_key_and_mis_digested_authorizations_never_execute(
    executor: ServiceProcess,
    publisher: Bus,
    listener: Any,
    authorize: Any,
    resign: Any,
    pool: asyncpg.Pool,
    tenant: str,
    wait_for: Any,
    tmp_path: Any,
) -> None:
    attacker = SigningKey.load_or_create(tmp_path / "attacker", "policy")  # same name, another key
    unknown_key = authorize(tenant, "issue_refund", REFUND, key=attacker)

    genuine = authorize(tenant, "issue_refund", REFUND)
    forged_sig = genuine.data.authorization.model_copy(update={"signature": attacker.sign(b"anything")})
    forged = s.ActionAuthorized.build(genuine.data.model_copy(update={"authorization": forged_sig}), source="attacker")

    original = authorize(tenant, "issue_refund", REFUND)
    more = {**REFUND, "amount_usd": 30.0, "payee_id": "cus_1002"}
    tampered = s.ActionAuthorized.build(original.data.model_copy(update={"args": more}), source="attacker")

    # Signed by the real key, but the digest is not the one of the call (a policy-side bug must not run).
    mis_digested = resign(authorize(tenant, "issue_refund", REFUND), action_digest="0" * 64)

    cases = [
        (unknown_key, "unknown_key"),
        (forged, "signature_invalid"),
        (tampered, "signature_invalid"),
        (mis_digested, "digest_mismatch"),
    ]
    for event, _ in cases:
        await publisher.publish("actions.authorized", event)
    await wait_for(lambda: len([d for d in listener.dead if d.data.service == "executor"]) >= len(cases), what="four dead letters")
    for event, code in cases:
        assert listener.dead_codes(event.data.action_id) == [code], event.data.action_id
        assert listener.for_action(event.data.action_id) == []
    assert await refunds(pool, tenant) == []
    assert await pool.fetchval("SELECT count(*) FROM executor.actions WHERE tenant_id = $1", tenant) == 0
    assert executor.executor.calls == 0


async def test_an_expired_authorization_is_refused_and_the_planner_learns_it_failed(
    executor: ServiceProcess, publisher: Bus, listener: Any, authorize: Any, pool: asyncpg.Pool, tenant: str, wait_for: Any
) -> None:
    event = authorize(tenant, "issue_refund", REFUND, ttl_s=-1)
    await publisher.publish("actions.authorized", event)
    [result] = await wait_for(lambda: listener.for_action(event.data.action_id), what="the failure")
    await wait_for(lambda: listener.dead_codes(event.data.action_id), what="the dead letter")
    assert result.type == "tidegate.action.failed"
    assert (result.data.error.type, result.data.attempts) == ("authorization_expired", 0)
    assert listener.dead_codes(event.data.action_id) == ["authorization_expired"]
    assert await refunds(pool, tenant) == []


async def test_a_replayed_authorization_is_answered_from_the_record_and_never_runs_again(
    executor: ServiceProcess, publisher: Bus, listener: Any, authorize: Any, pool: asyncpg.Pool, tenant: str, wait_for: Any
) -> None:
    event = authorize(tenant, "issue_refund", REFUND)
    await publisher.publish("actions.authorized", event)
    await wait_for(lambda: listener.for_action(event.data.action_id), what="the first result")

    await publisher.publish("actions.authorized", event)  # the same event again: an ordinary redelivery
    copy = event.model_copy(update={"id": "copy-" + event.id})  # the same signed authorization, another event
    await publisher.publish("actions.authorized", copy)
    results = await wait_for(lambda: (r := listener.for_action(event.data.action_id)) and len(r) == 3 and r, what="three answers")
    await wait_for(lambda: listener.dead_codes(event.data.action_id), what="the replay's dead letter")

    assert {r.type for r in results} == {"tidegate.action.succeeded"}
    assert len({r.data.result["refund_id"] for r in results}) == 1
    assert len({r.id for r in results}) == 1  # re-sent as first published: no second result for a cost sum to count
    assert listener.dead_codes(event.data.action_id) == ["authorization_replayed"]
    assert len(await refunds(pool, tenant)) == 1
    assert executor.executor.calls == 1


async def test_an_unknown_tool_is_refused(
    executor: ServiceProcess, publisher: Bus, listener: Any, authorize: Any, tenant: str, wait_for: Any
) -> None:
    event = authorize(tenant, "wire_money", {"to": "attacker", "usd": 1000})
    await publisher.publish("actions.authorized", event)
    [result] = await wait_for(lambda: listener.for_action(event.data.action_id), what="the failure")
    await wait_for(lambda: listener.dead_codes(event.data.action_id), what="the dead letter")
    assert (result.type, result.data.error.type) == ("tidegate.action.failed", "unknown_tool")
    assert listener.dead_codes(event.data.action_id) == ["unknown_tool"]


async def test_the_kill_switch_stops_the_call_right_before_it_and_the_planner_is_told(
    executor: ServiceProcess, publisher: Bus, listener: Any, authorize: Any, pool: asyncpg.Pool, tenant: str, wait_for: Any
) -> None:
    switch = s.ControlKillswitch.build(
        s.ControlKillswitchData(
            tenant_id=tenant, tool="issue_refund", active=True, reason="refund fraud wave", set_by="oncall@acme.example"
        ),
        source="tidegate/cli",
    )
    await publisher.publish("control", switch)
    await wait_for(lambda: executor.control.killed(tenant, "issue_refund"), what="the switch to arrive")  # type: ignore[union-attr]
    stopped = authorize(tenant, "issue_refund", REFUND)
    other_tool = authorize(tenant, "tag_ticket", {"ticket_id": "T-1001", "tags": ["refund"]})
    await publisher.publish("actions.authorized", stopped)
    await publisher.publish("actions.authorized", other_tool)
    [result] = await wait_for(lambda: listener.for_action(stopped.data.action_id), what="the refusal")
    [tagged] = await wait_for(lambda: listener.for_action(other_tool.data.action_id), what="the tag result")
    assert (result.type, result.data.error.type, result.data.attempts) == ("tidegate.action.failed", "kill_switch", 0)
    assert "refund fraud wave" in result.data.error.message
    assert tagged.type == "tidegate.action.succeeded"
    assert await refunds(pool, tenant) == []


async def test_a_kill_switch_set_while_the_executor_was_down_holds_for_its_whole_backlog(
    kit: Any, publisher: Bus, listener: Any, authorize: Any, pool: asyncpg.Pool, tenant: str, wait_for: Any
) -> None:
    from services.executor.app import build

    # Other tenants' control records first, so that reading `control` to its end takes the executor a while.
    noise = AIOKafkaProducer(bootstrap_servers=publisher.bootstrap, linger_ms=20, max_batch_size=1 << 20, **kafka_options(kit, ADMIN))
    await noise.start()
    try:
        sent = [
            await noise.send(
                publisher.topic("control"),
                s.encode(
                    as_operator(
                        s.ControlKillswitch.build(
                            s.ControlKillswitchData(tenant_id=f"other-{n}", tool="tag_ticket", active=True, reason="noise", set_by="ops"),
                            source="tidegate/cli",
                        ),
                        kit,
                    )
                ),
                key=f"killswitch:other-{n}:tag_ticket".encode(),
            )
            for n in range(NOISE)
        ]
        await asyncio.gather(*sent)
    finally:
        await noise.stop()
    switch = s.ControlKillswitchData(tenant_id=tenant, tool="issue_refund", active=True, reason="fraud wave", set_by="oncall@acme.example")
    await publisher.publish("control", s.ControlKillswitch.build(switch, source="tidegate/cli"))
    backlog = [authorize(tenant, "issue_refund", {**REFUND, "amount_usd": 1.0 + n}) for n in range(20)]
    for event in backlog:
        await publisher.publish("actions.authorized", event)

    executor = build(kit=kit)
    await executor.start()
    try:
        for event in backlog:
            [result] = await wait_for(lambda e=event: listener.for_action(e.data.action_id), what="each refusal")
            assert (result.type, result.data.error.type, result.data.attempts) == ("tidegate.action.failed", "kill_switch", 0)
    finally:
        await executor.stop()
    assert await refunds(pool, tenant) == []
