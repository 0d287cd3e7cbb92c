"""Acting as the agent of money9 F2 on the real broker and database: credit notes count toward their customer's daily bound.

Invoice `in_9001` (1,260 USD, billing `cus_1008`); a per-payee daily threshold of 500. Before, a credit note named no
payee: five notes of 499 USD, each in a task of its own, each ran (2,495 USD, no human). Now a note without `payee_id` is
denied `invalid_args`, the first named note of 300 USD runs, and the next one to the same customer in another task
escalates `cumulative_threshold`, as does a refund to them after it (credits and refunds sum under one payee).
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
from bus_helpers import Collector

from schemas import ActionDecided
from servicekit import KitSettings
from services.policy.app import build
from tests.integration.policy.test_policy_repeat_flood import _as_agent
from tidegate.commands.tenant import publish_tenant

SETTINGS = {"allow_autonomous": True, "refund_threshold_usd": 500, "known_payees": ["cus_1008"]}


async def test_the_probes_credit_notes_in_separate_tasks_are_bounded_per_customer(
    kit: KitSettings, collector: Collector, wait_for: Any, make_proposal: Any
) -> None:
    tenant = f"m9f2-{uuid.uuid4().hex[:8]}"
    await publish_tenant(kit, tenant=tenant, record=SETTINGS, set_by="ops@tidegate.example")

    async def decided(tool: str, args: dict[str, Any]) -> tuple[Any, ActionDecided]:
        """`tool` with `args` in a task of its own, proposed as the agent; its decision."""
        proposal = make_proposal(tool, args, tenant=tenant, task_id=f"t-{uuid.uuid4().hex[:8]}")
        await _as_agent(kit, [proposal])
        [one] = await wait_for(lambda: collector.decided(proposal.data.action_id), what=f"the decision on {tool}")
        return proposal, one

    def codes(decision: ActionDecided) -> tuple[str, list[str]]:
        return decision.data.outcome, [r.code.value for r in decision.data.reasons]

    note = {"invoice_id": "in_9001", "amount_usd": 300.0, "reason": "order_change"}
    svc = build(kit=kit)
    await svc.start()
    try:
        unnamed, denied = await decided("stripe_create_credit_note", note)
        assert codes(denied) == ("deny", ["invalid_args"])
        assert "payee_id" in denied.data.reasons[0].message

        first, allowed = await decided("stripe_create_credit_note", {**note, "payee_id": "cus_1008"})
        assert codes(allowed) == ("allow", ["within_threshold"])
        await wait_for(lambda: collector.authorized(first.data.action_id), what="the first note's authorization")

        second, escalated = await decided("stripe_create_credit_note", {**note, "payee_id": "cus_1008"})
        assert codes(escalated) == ("escalate", ["cumulative_threshold"])
        assert escalated.data.facts["paid_payee_usd"] == 300.0
        refund, also = await decided("issue_refund", {"payee_id": "cus_1008", "amount_usd": 300.0, "order_id": "O-9001"})
        assert codes(also) == ("escalate", ["cumulative_threshold"])

        assert [collector.authorized(p.data.action_id) for p in (unnamed, second, refund)] == [[], [], []]
        conn = await asyncpg.connect(kit.database_url)
        try:
            paid = await conn.fetch("SELECT action_id, payee, amount_usd FROM policy.payouts WHERE tenant_id = $1", tenant)
        finally:
            await conn.close()
        assert [(r["action_id"], r["payee"], float(r["amount_usd"])) for r in paid] == [(first.data.action_id, "cus_1008", 300.0)]
    finally:
        await svc.stop()
