"""Acting as the agent of security6 F3 on the real broker and database: a refund split across tasks escalates.

The agent (the broker's `agent` login, its tenant's client key) pays one customer 300 + 300 USD with a new task id per
piece, under a threshold of 500. The second piece escalates `cumulative_threshold`: what the tenant paid that payee over
24 hours in any task (`policy.payouts`) counts against its per-payee daily threshold. A piece paid more than 24 hours
ago no longer counts, and a tenant that raised the bound lets the next piece run.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
from bus_helpers import Collector

from schemas import ActionDecided, ActionFailed, ActionResultData, ActionUnknown, ErrorInfo
from servicekit import KitSettings
from services.policy.app import build
from tests.integration.policy.test_policy_repeat_flood import _as_agent
from tidegate.commands.tenant import publish_tenant

SETTINGS = {"allow_autonomous": True, "refund_threshold_usd": 500, "known_payees": ["cus_1002"]}


async def test_the_probes_two_tasks_300_and_300_to_one_payee_escalate_the_second(
    kit: KitSettings, infra: Any, collector: Collector, wait_for: Any, make_proposal: Any
) -> None:
    tenant = f"f3-{uuid.uuid4().hex[:8]}"
    await publish_tenant(kit, tenant=tenant, record=SETTINGS, set_by="ops@tidegate.example")

    def piece(n: int) -> Any:  # 300 USD to cus_1002, each piece in a task of its own
        return make_proposal("issue_refund", {"payee_id": "cus_1002", "amount_usd": 300.0, "order_id": f"O-{n}"}, tenant=tenant)

    async def decided(proposal: Any) -> ActionDecided:
        await _as_agent(kit, [proposal])
        [one] = await wait_for(lambda: collector.decided(proposal.data.action_id), what=f"the decision on {proposal.data.task_id}")
        return one  # type: ignore[no-any-return]

    svc = build(kit=kit)
    await svc.start()
    try:
        first, second = piece(1), piece(2)
        allowed, escalated = await decided(first), await decided(second)
        assert (allowed.data.outcome, [r.code.value for r in allowed.data.reasons]) == ("allow", ["within_threshold"])
        assert (escalated.data.outcome, [r.code.value for r in escalated.data.reasons]) == ("escalate", ["cumulative_threshold"])
        assert (escalated.data.facts["paid_task_usd"], escalated.data.facts["paid_payee_usd"]) == (0.0, 300.0)
        assert "300.00 USD the tenant paid this payee over the last 24 hours" in escalated.data.reasons[0].message
        await wait_for(lambda: collector.authorized(first.data.action_id), what="the first piece's authorization")
        assert collector.authorized(second.data.action_id) == []

        # The first piece, paid more than 24 hours ago, no longer counts: the next piece runs (and now counts).
        admin = await asyncpg.connect(infra.admin_database_url)
        try:
            moved = await admin.execute(
                "UPDATE policy.payouts SET allowed_at = allowed_at - interval '25 hours' WHERE tenant_id = $1 AND action_id = $2",
                tenant,
                first.data.action_id,
            )
        finally:
            await admin.close()
        assert moved == "UPDATE 1"
        later = await decided(piece(3))
        assert (later.data.outcome, later.data.facts["paid_payee_usd"]) == ("allow", 0.0)

        # The tenant raises its per-payee daily threshold: a fourth piece (600 USD today with it) runs.
        await publish_tenant(kit, tenant=tenant, record=SETTINGS | {"payee_daily_threshold_usd": 2000}, set_by="ops@tidegate.example")

        def raised() -> bool:
            record = svc.control.tenants.get(tenant) if svc.control is not None else None
            return record is not None and record.settings.get("payee_daily_threshold_usd") == 2000

        await wait_for(raised, what="the tenant's raised setting")
        fourth = await decided(piece(4))
        assert (fourth.data.outcome, fourth.data.facts["paid_payee_usd"]) == ("allow", 300.0)
    finally:
        await svc.stop()


async def test_a_piece_that_failed_paid_nothing_and_the_next_runs(
    kit: KitSettings, infra: Any, collector: Collector, wait_for: Any, make_proposal: Any, producer: Any
) -> None:
    """A refund the system of record refused counts toward no bound (the platform probe: an approver read "the tenant paid this
    payee 1,105.48 USD" where 0.48 USD had been paid); one whose outcome is unknown still counts. On the real database."""
    tenant = f"f3-{uuid.uuid4().hex[:8]}"
    await publish_tenant(kit, tenant=tenant, record=SETTINGS, set_by="ops@tidegate.example")

    def piece(n: int) -> Any:
        return make_proposal("issue_refund", {"payee_id": "cus_1002", "amount_usd": 300.0, "order_id": f"O-{n}"}, tenant=tenant)

    async def decided(proposal: Any) -> ActionDecided:
        await _as_agent(kit, [proposal])
        [one] = await wait_for(lambda: collector.decided(proposal.data.action_id), what=f"the decision on {proposal.data.task_id}")
        return one  # type: ignore[no-any-return]

    async def ended(proposal: Any, status: str) -> None:
        data = ActionResultData(
            action_id=proposal.data.action_id, task_id=proposal.data.task_id, tenant_id=tenant, step=1, tool="issue_refund",
            status=status, attempts=1, duration_ms=5.0,  # type: ignore[arg-type]
            error=ErrorInfo(type="refund_exceeds_order", message="over what the order paid"),
        )  # fmt: skip
        await producer.send(
            "actions.results", (ActionFailed if status == "failed" else ActionUnknown).build(data, source="tidegate/executor")
        )

    async def failed_at(proposal: Any) -> Any:
        admin = await asyncpg.connect(infra.admin_database_url)
        try:
            return await admin.fetchval("SELECT failed_at FROM policy.payouts WHERE action_id = $1", proposal.data.action_id)
        finally:
            await admin.close()

    svc = build(kit=kit)
    await svc.start()
    try:
        first = piece(1)
        assert (await decided(first)).data.outcome == "allow"
        await ended(first, "failed")
        await wait_for(lambda: failed_at(first), what="the failed piece marked as paying nothing")
        second = piece(2)
        allowed = await decided(second)
        assert (allowed.data.outcome, allowed.data.facts["paid_payee_usd"]) == ("allow", 0.0)  # it escalated, "paid 300"
        await ended(second, "unknown")  # it may have been paid: it keeps counting
        third = await decided(piece(3))
        assert (third.data.outcome, third.data.facts["paid_payee_usd"]) == ("escalate", 300.0)
    finally:
        await svc.stop()
