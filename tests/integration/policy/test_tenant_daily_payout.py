"""Acting as the compromised agent of red team F5 on the real database: refunds fanned out across known payees escalate at the
call that would take what the tenant paid out over 24 hours without a human over its daily payout bound, however they
arrive (one at a time, in one batch, to two copies of the service at once). A grant's payout does not count; a failed one
frees its share; one paid more than 24 hours ago no longer counts.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg

from schemas import ActionFailed, ActionProposed, ActionProposedData, ActionResultData, ErrorInfo
from servicekit import SigningKey
from services.policy.service import PolicyService

PAYEES = [f"cus_10{n:02d}" for n in range(1, 9)]
# acme's threshold and known payees; no daily bound set: twice the threshold, 1,000 USD.
SETTINGS = {"allow_autonomous": True, "refund_threshold_usd": 500, "known_payees": PAYEES}


def _refund(tenant: str, payee: str, amount: float) -> ActionProposed:
    """One refund in a task of its own, as the agent sends each piece."""
    n = uuid.uuid4().int % 10**8
    data = ActionProposedData(
        action_id=f"{tenant}-a-{n}", task_id=f"{tenant}-t-{n}", tenant_id=tenant, step=1, tool="issue_refund",
        args={"payee_id": payee, "amount_usd": amount, "order_id": f"O-{n}"}, proposer="agent", mode="autonomous",
        requested_by="mallory@acme.example",
    )  # fmt: skip
    return ActionProposed.build(data, source="agent")


def _codes(result: Any) -> tuple[str, list[str]]:
    return result.outcome, [r.code.value for r in result.decided.data.reasons]


async def test_the_red_teams_fan_out_escalates_the_piece_over_the_bound_and_a_day_later_runs(
    pools: list[asyncpg.Pool], infra: Any, tmp_path: Path, policy_on: Callable[..., PolicyService]
) -> None:
    tenant = f"f5-{uuid.uuid4().hex[:8]}"
    policy = policy_on(pools[0], tenant, SETTINGS, tmp_path)
    amounts = (499.99, 499.99, 120)
    pieces = [await policy.on_proposed(_refund(tenant, payee, amount)) for payee, amount in zip(PAYEES[:3], amounts, strict=True)]
    assert [_codes(r) for r in pieces] == [("allow", ["within_threshold"])] * 2 + [("escalate", ["daily_payout_bound"])]
    facts = pieces[2].decided.data.facts
    assert (facts["paid_tenant_usd"], facts["paid_payee_usd"], facts["paid_task_usd"]) == (999.98, 0.0, 0.0)
    assert "999.98 USD the tenant paid out over the last 24 hours without a human" in pieces[2].decided.data.reasons[0].message

    # The two allowed pieces, paid more than 24 hours ago, no longer count: the next one runs.
    admin = await asyncpg.connect(infra.admin_database_url)
    try:
        moved = await admin.execute("UPDATE policy.payouts SET allowed_at = allowed_at - interval '25 hours' WHERE tenant_id = $1", tenant)
    finally:
        await admin.close()
    assert moved == "UPDATE 2"
    later = await policy.on_proposed(_refund(tenant, PAYEES[3], 120))
    assert (_codes(later), later.decided.data.facts["paid_tenant_usd"]) == (("allow", ["within_threshold"]), 0.0)


async def test_a_batch_and_two_copies_at_once_let_out_no_more_than_the_bound(
    pools: list[asyncpg.Pool], tmp_path: Path, policy_on: Callable[..., PolicyService]
) -> None:
    # Six pieces of 300 USD to six payees in one batch (more than are decided under the lock at once: the snapshot path too).
    tenant = f"f5-{uuid.uuid4().hex[:8]}"
    batch = await policy_on(pools[0], tenant, SETTINGS, tmp_path).on_proposed_batch(
        [_refund(tenant, payee, 300) for payee in PAYEES[:6]], traced=False
    )
    assert [_codes(r) for r in batch] == [("allow", ["within_threshold"])] * 3 + [("escalate", ["daily_payout_bound"])] * 3

    # Two copies of the service, each deciding two pieces of 400 USD to payees of their own, at once: 800 USD run, not 1,600.
    tenant = f"f5-{uuid.uuid4().hex[:8]}"
    copies = [policy_on(pool, tenant, SETTINGS, tmp_path) for pool in pools]
    batches = await asyncio.gather(
        *(c.on_proposed_batch([_refund(tenant, PAYEES[2 * k + i], 400) for i in range(2)], traced=False) for k, c in enumerate(copies))
    )
    assert sorted(r.outcome for b in batches for r in b) == ["allow", "allow", "escalate", "escalate"]
    paid = await pools[0].fetchval("SELECT sum(amount_usd) FROM policy.payouts WHERE tenant_id = $1 AND NOT approved", tenant)
    assert float(paid) == 800.0


async def test_a_granted_payout_does_not_count_and_a_failed_one_frees_its_share(
    pools: list[asyncpg.Pool], tmp_path: Path, policy_on: Callable[..., PolicyService], make_grant: Callable[..., Any]
) -> None:
    tenant = f"f5-{uuid.uuid4().hex[:8]}"
    policy = policy_on(pools[0], tenant, SETTINGS, tmp_path)
    escalated = await policy.on_proposed(_refund(tenant, PAYEES[0], 900))
    assert _codes(escalated) == ("escalate", ["needs_human_approval"])
    granted = await policy.on_approval(make_grant(escalated.decided, SigningKey.load_or_create(tmp_path, "approval")))
    assert granted is not None
    assert granted.outcome == "allow"
    row = await pools[0].fetchrow("SELECT amount_usd, approved FROM policy.payouts WHERE action_id = $1", granted.action_id)
    assert (float(row["amount_usd"]), row["approved"]) == (900.0, True)

    first, second = [await policy.on_proposed(_refund(tenant, payee, 499.99)) for payee in PAYEES[1:3]]
    assert [_codes(r) for r in (first, second)] == [("allow", ["within_threshold"])] * 2  # the granted 900 is not on the day
    assert second.decided.data.facts["paid_tenant_usd"] == 499.99

    # The first piece failed (the payments system refused it): nothing was paid, so the next piece fits under the bound.
    data = ActionResultData(
        action_id=first.decided.data.action_id, task_id=first.decided.data.task_id, tenant_id=tenant, step=1, tool="issue_refund",
        status="failed", attempts=1, duration_ms=5.0, error=ErrorInfo(type="refund_exceeds_order", message="over what was paid"),
    )  # fmt: skip
    await policy.on_results([ActionFailed.build(data, source="tidegate/executor")])
    third = await policy.on_proposed(_refund(tenant, PAYEES[3], 120))
    assert (_codes(third), third.decided.data.facts["paid_tenant_usd"]) == (("allow", ["within_threshold"]), 499.99)
