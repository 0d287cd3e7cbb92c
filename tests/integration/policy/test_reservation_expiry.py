"""On the real database: a reservation whose call never ran is released after its expiry, the spend views follow."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from schemas import ActionProposed, ActionProposedData, ActionResultData, ActionSucceeded, ActionUnknown, ResultCost
from servicekit import REPO_ROOT, ControlState, SigningKey, ToolCatalog
from servicekit.db import apply_migrations, create_pool
from services.policy._pg_repository import PgPolicyRepository
from services.policy.pack import PackSource, compile_pack
from services.policy.service import PolicyService

CATALOG = ToolCatalog.load(REPO_ROOT / "catalog" / "tools")


async def test_expired_reservations_are_released_once_and_a_late_result_is_spend_again(infra: Any, tmp_path: Path) -> None:
    tenant = f"exp-{uuid.uuid4().hex[:8]}"
    source = PackSource.from_dir(REPO_ROOT / "policies" / "default")
    settings = source.settings | {
        "tenants": source.settings["tenants"] | {tenant: {"allow_autonomous": True, "known_payees": ["cus_1001"]}}
    }

    async def nowhere(records: Any) -> None:
        pass

    pool = await create_pool(infra.database_url, max_size=2)
    try:
        await apply_migrations(pool, "policy", REPO_ROOT / "services" / "policy" / "migrations")
        service = PolicyService(
            catalog=CATALOG, pack=compile_pack(PackSource(files=source.files, settings=settings), CATALOG), repo=PgPolicyRepository(pool),
            signer=SigningKey.load_or_create(tmp_path, "policy"), keys_dir=tmp_path, control=ControlState(), publish_many=nowhere,
        )  # fmt: skip
        ids = {name: f"{tenant}-{name}" for name in ("never-ran", "unknown", "ran")}
        for action_id in ids.values():
            data = ActionProposedData(
                action_id=action_id, task_id=f"{tenant}-task", tenant_id=tenant, step=1, tool="issue_refund",
                args={"payee_id": "cus_1001", "amount_usd": 10.0, "order_id": "O-1"}, proposer="test", mode="autonomous",
            )  # fmt: skip
            await service.on_proposed(ActionProposed.build(data, source="test"))

        async def spend() -> float:
            return float(await pool.fetchval("SELECT amount_usd FROM policy.spend WHERE tenant_id = $1 AND task_id = '*'", tenant))

        assert await spend() == 0.03
        result = {"task_id": f"{tenant}-task", "tenant_id": tenant, "tool": "issue_refund", "attempts": 1, "duration_ms": 1.0}
        await service.on_result(ActionUnknown.build(ActionResultData(action_id=ids["unknown"], status="unknown", **result), source="x"))
        ok = ActionResultData(action_id=ids["ran"], status="succeeded", cost=ResultCost(usd=0.005), **result)
        await service.on_result(ActionSucceeded.build(ok, source="x"))
        assert await spend() == 0.025

        # Made two days ago (a day-old cutoff leaves every other test's reservations alone).
        await pool.execute("UPDATE policy.reservations SET created_at = now() - interval '2 days' WHERE starts_with(action_id, $1)", tenant)
        day_ago = datetime.now(UTC) - timedelta(days=1)
        released = await service.repo.release_expired(day_ago, limit=100_000)  # type: ignore[union-attr]
        assert [a for a in released if a.startswith(tenant)] == [ids["never-ran"]]
        assert await spend() == 0.015
        assert await pool.fetchval(
            "SELECT amount_usd FROM policy.spend WHERE tenant_id = $1 AND task_id = $2", tenant, f"{tenant}-task"
        ) == (await pool.fetchval("SELECT amount_usd FROM policy.spend WHERE tenant_id = $1 AND task_id = '*'", tenant))
        assert [a for a in await service.repo.release_expired(day_ago, limit=100_000) if a.startswith(tenant)] == []  # type: ignore[union-attr]

        late = ActionResultData(action_id=ids["never-ran"], status="succeeded", cost=ResultCost(usd=0.004), **result)
        await service.on_result(ActionSucceeded.build(late, source="x"))
        assert await spend() == 0.019
        status = await pool.fetchval("SELECT status FROM policy.reservations WHERE action_id = $1", ids["never-ran"])
        assert status == "settled"
    finally:
        await pool.close()
