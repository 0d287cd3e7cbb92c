"""Acting as the agent of security5 F1 on the real database: a refund split into pieces under the threshold escalates at the
piece that reaches it, however the pieces arrive (one at a time, in one batch, to two copies of the service at once)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path

import asyncpg

from schemas import ActionProposed, ActionProposedData
from services.policy.service import PolicyService

# The per-task bound alone (its tasks pay one payee): the per-payee daily one is off here, test_split_across_tasks.py shows it.
SETTINGS = {
    "allow_autonomous": True,
    "refund_threshold_usd": 500,
    "known_payees": ["cus_1008", "cus_1002"],
    "payee_daily_threshold_usd": "off",
}


def _piece(tenant: str, task: str, n: str, amount: float, payee: str = "cus_1008") -> ActionProposed:
    data = ActionProposedData(
        action_id=f"{tenant}-{task}-{n}",
        task_id=f"{tenant}-{task}",
        tenant_id=tenant,
        step=1,
        tool="issue_refund",
        args={"payee_id": payee, "amount_usd": amount, "order_id": "O-5008"},
        proposer="agent",
        mode="autonomous",
    )
    return ActionProposed.build(data, source="agent")


async def test_the_probes_split_escalates_one_at_a_time_and_in_a_batch(
    pools: list[asyncpg.Pool], tmp_path: Path, policy_on: Callable[..., PolicyService]
) -> None:
    tenant = f"split-{uuid.uuid4().hex[:8]}"
    policy = policy_on(pools[0], tenant, SETTINGS, tmp_path)
    one_at_a_time = [await policy.on_proposed(_piece(tenant, "t1", str(i), amount)) for i, amount in enumerate((1260, 420, 420, 420))]
    assert [r.outcome for r in one_at_a_time] == ["escalate", "allow", "escalate", "escalate"]
    codes = [[c.code.value for c in r.decided.data.reasons] for r in one_at_a_time]
    assert codes == [["needs_human_approval"], ["within_threshold"], ["cumulative_threshold"], ["cumulative_threshold"]]
    # Six pieces of 100 USD in one batch (more than are decided under the lock at once: the snapshot path too).
    batch = await policy.on_proposed_batch([_piece(tenant, "t2", str(i), 100) for i in range(6)], traced=False)
    assert [r.outcome for r in batch] == ["allow"] * 4 + ["escalate"] * 2
    # Small refunds of another task stay under it together, and see what their task alone paid out; the tenant's
    # figure for the payee counts every task's (over 24 hours).
    small = [await policy.on_proposed(_piece(tenant, "t3", str(i), 45)) for i in range(3)]
    assert [r.outcome for r in small] == ["allow"] * 3
    assert (small[2].decided.data.facts["paid_task_usd"], small[2].decided.data.facts["paid_payee_usd"]) == (90.0, 420 + 400 + 90.0)
    paid = await pools[0].fetchval("SELECT sum(amount_usd) FROM policy.payouts WHERE tenant_id = $1", tenant)
    assert float(paid) == 420 + 400 + 135


async def test_two_copies_deciding_pieces_of_one_task_at_once_allow_one(
    pools: list[asyncpg.Pool], tmp_path: Path, policy_on: Callable[..., PolicyService]
) -> None:
    tenant = f"split-{uuid.uuid4().hex[:8]}"
    copies = [policy_on(pool, tenant, SETTINGS, tmp_path) for pool in pools]
    batches = await asyncio.gather(
        *(c.on_proposed_batch([_piece(tenant, "t1", f"{k}-{i}", 420) for i in range(2)], traced=False) for k, c in enumerate(copies))
    )
    assert sorted(r.outcome for batch in batches for r in batch) == ["allow", "escalate", "escalate", "escalate"]
