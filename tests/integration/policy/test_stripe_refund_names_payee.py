"""Acting as the agent of money9 F1 on the real broker and database: a Stripe refund must name its payee.

Charge `ch_O5008` (1,260 USD, paid by `cus_1008`); a per-payee daily threshold of 500. The agent refunds 400 USD naming
`cus_1008`, then sends 400 USD pieces without `payee_id`, each in a new task after reading the charge (so the record
bounds it): before, such pieces counted toward no payee and each ran (1,200 USD more, no human). Now each is denied
`invalid_args` (the catalog requires `payee_id`) and none is authorized, and a piece naming the payee escalates
`cumulative_threshold` on the 400 USD paid before.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
from bus_helpers import Collector, Producer

from schemas import ActionDecided, ActionResultData, ActionSucceeded
from servicekit import KitSettings
from services.policy.app import build
from tests.integration.policy.test_policy_repeat_flood import _as_agent
from tidegate.commands.tenant import publish_tenant

SETTINGS = {"allow_autonomous": True, "refund_threshold_usd": 500, "known_payees": ["cus_1008"]}
CHARGE = {
    "charge_id": "ch_O5008", "amount_usd": 1260.0, "amount_refunded_usd": 0.0, "amount_refundable_usd": 1260.0, "currency": "usd",
    "status": "succeeded", "paid": True, "refunded": False, "customer": "cus_1008", "payment_intent": None,
}  # fmt: skip


async def test_the_probes_stripe_refunds_without_a_payee_are_denied_and_the_next_named_piece_escalates(
    kit: KitSettings, collector: Collector, producer: Producer, wait_for: Any, make_proposal: Any
) -> None:
    tenant = f"m9f1-{uuid.uuid4().hex[:8]}"
    await publish_tenant(kit, tenant=tenant, record=SETTINGS, set_by="ops@tidegate.example")

    async def decided(proposal: Any) -> ActionDecided:
        await _as_agent(kit, [proposal])
        [one] = await wait_for(lambda: collector.decided(proposal.data.action_id), what=f"the decision on {proposal.data.task_id}")
        return one  # type: ignore[no-any-return]

    async def read_charge(task_id: str) -> None:
        """The task reads the charge (`stripe_get_charge`, allowed) and the executor publishes what Stripe said."""
        read = make_proposal("stripe_get_charge", {"charge_id": "ch_O5008"}, tenant=tenant, task_id=task_id)
        assert (await decided(read)).data.outcome == "allow"
        result = ActionResultData(
            action_id=read.data.action_id, task_id=task_id, tenant_id=tenant, tool="stripe_get_charge", status="succeeded",
            result=CHARGE, attempts=1, duration_ms=2.0,
        )  # fmt: skip
        await producer.send("actions.results", ActionSucceeded.build(result, source="tidegate/executor"))

    async def tenants_table(query: str) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(kit.database_url)
        try:
            return await conn.fetch(query, tenant)
        finally:
            await conn.close()

    async def every_charge_read() -> bool:
        return len(await tenants_table("SELECT task_id FROM policy.records WHERE tenant_id = $1")) == len(tasks)

    async def piece(task_id: str, payee: str | None) -> tuple[Any, ActionDecided]:
        """400 USD of ch_O5008 in a task of its own that read the charge; naming `payee` or no payee at all."""
        args: dict[str, Any] = {"charge_id": "ch_O5008", "amount_usd": 400.0, "reason": "requested_by_customer"}
        if payee is not None:
            args["payee_id"] = payee
        proposal = make_proposal("stripe_refund", args, tenant=tenant, task_id=task_id)
        return proposal, await decided(proposal)

    tasks = [f"t-{uuid.uuid4().hex[:8]}" for _ in range(5)]  # a task per piece: the named one, three unnamed, the named again
    svc = build(kit=kit)
    await svc.start()
    try:
        for task_id in tasks:
            await read_charge(task_id)
        await wait_for(every_charge_read, what="each task's read of the charge")
        named, allowed = await piece(tasks[0], "cus_1008")
        assert (allowed.data.outcome, [r.code.value for r in allowed.data.reasons]) == ("allow", ["within_threshold"])
        await wait_for(lambda: collector.authorized(named.data.action_id), what="the named piece's authorization")

        unnamed = [await piece(task_id, None) for task_id in tasks[1:4]]
        for _, denied in unnamed:
            assert (denied.data.outcome, [r.code.value for r in denied.data.reasons]) == ("deny", ["invalid_args"])
            assert "payee_id" in denied.data.reasons[0].message

        again, escalated = await piece(tasks[4], "cus_1008")
        assert (escalated.data.outcome, [r.code.value for r in escalated.data.reasons]) == ("escalate", ["cumulative_threshold"])
        assert escalated.data.facts["paid_payee_usd"] == 400.0
        # None of the unnamed pieces was authorized; the tenant paid out only the named piece, to its payee.
        assert [collector.authorized(p.data.action_id) for p, _ in unnamed] == [[], [], []]
        assert collector.authorized(again.data.action_id) == []
        paid = await tenants_table("SELECT action_id, payee, amount_usd FROM policy.payouts WHERE tenant_id = $1")
        assert [(r["action_id"], r["payee"], float(r["amount_usd"])) for r in paid] == [(named.data.action_id, "cus_1008", 400.0)]
    finally:
        await svc.stop()
