"""Only genuine, unexpired authorizations run, once: every refusal is dead-lettered with its reason code."""

from __future__ import annotations

from typing import Any

import asyncpg

import schemas as s
from servicekit import Bus, ServiceProcess, SigningKey

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
    assert executor.executor.calls == 0  # type: ignore[attr-defined]
