"""Two copies of the policy service deciding for one tenant at once, on the real database: the budget holds exactly.

Each copy decides its batch on a snapshot of the history, outside the tenant's lock, and checks it
again under the lock; a copy whose snapshot went stale (the other copy reserved in between) must
take its decisions again, so that the tenant's last dollar is spent once.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from prometheus_client import REGISTRY

from schemas import ActionProposed, ActionProposedData
from services.policy.service import PolicyService

BUDGET_USD = 0.105  # ten refunds at the catalog's 0.01 USD each, not eleven


def _refunds(tenant: str, copy: int, round_: int, n: int = 6) -> list[ActionProposed]:
    return [
        ActionProposed.build(
            ActionProposedData(
                action_id=f"{tenant}-r{round_}-c{copy}-{i}",
                task_id=f"{tenant}-task-{round_}-{copy}-{i}",  # a task each: only the tenant's budget binds
                tenant_id=tenant,
                step=0,
                tool="issue_refund",
                args={"payee_id": "cus_1001", "amount_usd": 10.0, "order_id": f"O-{i}"},
                proposer="test",
                mode="autonomous",
            ),
            source="test",
        )
        for i in range(n)
    ]


def _retaken(tenant: str) -> float:
    return REGISTRY.get_sample_value("tidegate_policy_decisions_retaken_total", {"tenant": tenant}) or 0.0


async def _both_waiting_on_the_lock(conn: asyncpg.Connection) -> None:
    for _ in range(500):
        if await conn.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted") >= 2:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the two copies never both waited on the tenant's lock")


async def test_two_copies_never_spend_a_tenants_budget_twice(
    pools: list[asyncpg.Pool], infra: Any, tmp_path: Path, policy_on: Callable[..., PolicyService]
) -> None:
    tenant = f"race-{uuid.uuid4().hex[:8]}"
    settings = {"allow_autonomous": True, "budget_usd": BUDGET_USD, "known_payees": ["cus_1001"]}
    copies = [policy_on(pool, tenant, settings, tmp_path) for pool in pools]
    admin = await asyncpg.connect(infra.database_url)
    try:
        # Round 0, made deterministic: hold the tenant's lock until both copies have decided on the same
        # snapshot and wait for it; the second one in must find its snapshot stale.
        await admin.execute("SELECT pg_advisory_lock(hashtext('policy-budget:' || $1))", tenant)
        first = [asyncio.create_task(c.on_proposed_batch(_refunds(tenant, i, 0), traced=False)) for i, c in enumerate(copies)]
        await _both_waiting_on_the_lock(admin)
        await admin.execute("SELECT pg_advisory_unlock(hashtext('policy-budget:' || $1))", tenant)
        outcomes = [r.outcome for batch in await asyncio.gather(*first) for r in batch]
        assert _retaken(tenant) >= 1
        for round_ in range(1, 4):  # then free-running: both copies decide a batch at the same moment
            batches = await asyncio.gather(*(c.on_proposed_batch(_refunds(tenant, i, round_), traced=False) for i, c in enumerate(copies)))
            outcomes += [r.outcome for batch in batches for r in batch]

        assert len(outcomes) == 48
        assert outcomes.count("allow") == 10  # the budget is spent exactly: no more, and none of it lost
        assert outcomes.count("deny") == 38
        spent = await admin.fetchval("SELECT amount_usd FROM policy.spend WHERE tenant_id = $1 AND task_id = '*'", tenant)
        held = await admin.fetchval("SELECT count(*) FROM policy.reservations WHERE tenant_id = $1 AND status = 'reserved'", tenant)
        reasons = await admin.fetch(
            "SELECT decided_event::jsonb -> 'data' -> 'reasons' -> 0 ->> 'code' AS code FROM policy.decisions"
            " WHERE tenant_id = $1 AND outcome = 'deny'",
            tenant,
        )
    finally:
        await admin.close()
    assert float(spent) == pytest.approx(0.10)
    assert held == 10
    assert {r["code"] for r in reasons} == {"budget_exceeded"}
