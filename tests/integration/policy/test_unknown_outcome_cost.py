"""On the real database: a human's `confirmed_done` settles an unknown outcome at the cost its `action.unknown` reported."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from schemas import ActionProposed, ActionProposedData, ActionResultData, ActionUnknown, ApprovalData, ApprovalResolved, ResultCost
from servicekit import REPO_ROOT, ControlState, SigningKey, ToolCatalog, approval_message
from servicekit.db import apply_migrations, create_pool
from services.policy._pg_repository import PgPolicyRepository
from services.policy.pack import PackSource, compile_pack
from services.policy.service import PolicyService

CATALOG = ToolCatalog.load(REPO_ROOT / "catalog" / "tools")


async def test_confirmed_done_settles_at_the_reported_cost_or_else_the_estimate(infra: Any, tmp_path: Path) -> None:
    tenant = f"unk-{uuid.uuid4().hex[:8]}"
    source = PackSource.from_dir(REPO_ROOT / "policies" / "default")
    settings = source.settings | {
        "tenants": source.settings["tenants"] | {tenant: {"allow_autonomous": True, "known_payees": ["cus_1001"]}}
    }
    key = SigningKey.load_or_create(tmp_path, "approval")
    args = {"payee_id": "cus_1001", "amount_usd": 10.0, "order_id": "O-1"}  # estimated at 0.01 USD by the catalog

    async def nowhere(records: Any) -> None:
        pass

    pool = await create_pool(infra.database_url, max_size=2)
    try:
        await apply_migrations(pool, "policy", REPO_ROOT / "services" / "policy" / "migrations")
        service = PolicyService(
            catalog=CATALOG, pack=compile_pack(PackSource(files=source.files, settings=settings), CATALOG), repo=PgPolicyRepository(pool),
            signer=SigningKey.load_or_create(tmp_path, "policy"), keys_dir=tmp_path, control=ControlState(), publish_many=nowhere,
        )  # fmt: skip

        async def unknown_then_confirmed_done(action_id: str, reported_usd: float) -> None:
            proposal = ActionProposedData(
                action_id=action_id, task_id=f"{tenant}-task", tenant_id=tenant, step=1, tool="issue_refund", args=args,
                proposer="test", mode="autonomous",
            )  # fmt: skip
            await service.on_proposed(ActionProposed.build(proposal, source="test"))
            result = ActionResultData(
                action_id=action_id, task_id=f"{tenant}-task", tenant_id=tenant, tool="issue_refund", status="unknown", attempts=3,
                duration_ms=1.0, cost=ResultCost(usd=reported_usd),
            )  # fmt: skip
            await service.on_result(ActionUnknown.build(result, source="x"))
            now = datetime.now(UTC)
            finding = ApprovalData(
                approval_id=f"fu-{action_id}", action_id=action_id, task_id=f"{tenant}-task", tenant_id=tenant, tool="issue_refund",
                args=args, action_digest="d", approver="bob", expires_at=now + timedelta(hours=1), decided_at=now, key_id=key.key_id,
                resolution="confirmed_done",
            )  # fmt: skip
            signature = key.sign(approval_message(ApprovalResolved.model_fields["type"].default, finding))
            await service.on_approval(ApprovalResolved.build(finding.model_copy(update={"signature": signature}), source="x"))

        async def settled_usd(action_id: str) -> float:
            return float(await pool.fetchval("SELECT settled_usd FROM policy.reservations WHERE action_id = $1", action_id))

        await unknown_then_confirmed_done(f"{tenant}-reported", 0.03)
        assert await settled_usd(f"{tenant}-reported") == 0.03
        await unknown_then_confirmed_done(f"{tenant}-silent", 0.0)
        assert await settled_usd(f"{tenant}-silent") == 0.01
        spent = await pool.fetchval("SELECT amount_usd FROM policy.spend WHERE tenant_id = $1 AND task_id = '*'", tenant)
        assert float(spent) == 0.04
    finally:
        await pool.close()
