"""On the real database: a task's working state older than the cutoff is forgotten row by row, its task named forgotten
in the same statement and denied from then on; what is younger, held reservations, decisions and spend stay."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from schemas import (
    ActionProposed,
    ActionProposedData,
    ActionResultData,
    ActionSucceeded,
    ActionUnknown,
    TaskSubmitted,
    TaskSubmittedData,
)
from servicekit import REPO_ROOT, ControlState, KitSettings, SigningKey, ToolCatalog
from servicekit.db import create_pool
from services.policy._pg_repository import PgPolicyRepository
from services.policy.app import build
from services.policy.pack import PackSource, compile_pack
from services.policy.repository import forget_tasks
from services.policy.service import PolicyService
from services.policy.settings import PolicySettings

CATALOG = ToolCatalog.load(REPO_ROOT / "catalog" / "tools")
WORKING_STATE = {  # table → when a row was written
    "provenance": "learned_at",
    "records": "read_at",
    "call_outcomes": "seen_at",
    "tasks_learned": "learned_at",
    "reservations": "created_at",
}


async def _nowhere(records: Any) -> None:
    return None


def _service(pool: asyncpg.Pool, tenant: str, keys: Path) -> PolicyService:
    source = PackSource.from_dir(REPO_ROOT / "policies" / "default")
    settings = source.settings | {
        "tenants": source.settings["tenants"] | {tenant: {"allow_autonomous": True, "known_payees": ["cus_1001"]}}
    }
    return PolicyService(
        catalog=CATALOG, pack=compile_pack(PackSource(files=source.files, settings=settings), CATALOG), repo=PgPolicyRepository(pool),
        signer=SigningKey.load_or_create(keys, "policy"), keys_dir=keys, control=ControlState(), publish_many=_nowhere,
        settings=PolicySettings(provenance_wait_s=60), planned=lambda event: True,  # were a forgotten task to wait, this would hang
    )  # fmt: skip


async def _run_task(service: PolicyService, tenant: str, task: str) -> None:
    """The task's request, a ticket read, a charge looked up, two refunds: one that ran, one whose outcome is unknown (held for a human)."""
    request = TaskSubmittedData(
        task_id=task, tenant_id=tenant, workflow="w", input={"body": "refund"}, untrusted=["body"], requested_by="a", mode="autonomous"
    )
    await service.on_tasks([TaskSubmitted.build(request, source="client")])
    common = {"task_id": task, "tenant_id": tenant, "attempts": 1, "duration_ms": 1.0}
    read = ActionResultData(action_id=f"{task}-read", tool="get_ticket", status="succeeded", result={"body": "refund 45 USD"}, **common)
    await service.on_result(ActionSucceeded.build(read, source="tidegate/executor"))
    charge = {"charge_id": "ch_77", "amount_usd": 80.0, "amount_refunded_usd": 0.0, "amount_refundable_usd": 80.0, "currency": "usd"}
    looked_up = ActionResultData(action_id=f"{task}-charge", tool="stripe_get_charge", status="succeeded", result=charge, **common)
    await service.on_result(ActionSucceeded.build(looked_up, source="tidegate/executor"))
    for name in ("ran", "unknown"):
        await _decide(service, tenant, task, f"{task}-{name}")
    refund = {**common, "tool": "issue_refund"}
    await service.on_result(ActionSucceeded.build(ActionResultData(action_id=f"{task}-ran", status="succeeded", **refund), source="x"))
    await service.on_result(ActionUnknown.build(ActionResultData(action_id=f"{task}-unknown", status="unknown", **refund), source="x"))


async def _decide(service: PolicyService, tenant: str, task: str, action_id: str) -> Any:
    data = ActionProposedData(
        action_id=action_id, task_id=task, tenant_id=tenant, step=2, tool="issue_refund",
        args={"payee_id": "cus_1001", "amount_usd": 10.0, "order_id": "O-1"}, proposer="tidegate/planner", mode="autonomous",
    )  # fmt: skip
    decided = (await service.on_proposed(ActionProposed.build(data, source="tidegate/planner"))).decided
    assert decided is not None
    return decided.data


async def _rows(conn: asyncpg.Connection, tenant: str, task: str) -> dict[str, int]:
    counts = {}
    for table in [*WORKING_STATE, "decisions", "spend", "tasks_forgotten"]:
        counts[table] = await conn.fetchval(f"SELECT count(*) FROM policy.{table} WHERE tenant_id = $1 AND task_id = $2", tenant, task)
    return counts


async def test_old_working_state_is_forgotten_in_batches_and_its_task_is_denied(infra: Any, tmp_path: Path) -> None:
    tenant = f"forget-{uuid.uuid4().hex[:8]}"
    old, young = f"{tenant}-old", f"{tenant}-young"
    pool = await create_pool(infra.database_url, max_size=2)
    try:
        service = _service(pool, tenant, tmp_path)
        await _run_task(service, tenant, old)
        await _run_task(service, tenant, young)
        async with pool.acquire() as conn:
            before = await _rows(conn, tenant, old)
            assert all(before[t] for t in WORKING_STATE)  # every kind of working state is there to forget
            assert before["tasks_forgotten"] == 0
            for table, written_at in WORKING_STATE.items():  # written eight days ago
                await conn.execute(
                    f"UPDATE policy.{table} SET {written_at} = now() - interval '8 days' WHERE tenant_id = $1 AND task_id = $2", tenant, old
                )

            done = await forget_tasks(service.repo, datetime.now(UTC) - timedelta(days=7), batch=2)  # several rounds

            assert done.rows >= sum(before[t] for t in WORKING_STATE) - 1  # all but the held reservation
            after = await _rows(conn, tenant, old)
            assert {t: after[t] for t in WORKING_STATE} == {t: 0 for t in WORKING_STATE} | {"reservations": 1}
            held = await conn.fetchval("SELECT status FROM policy.reservations WHERE tenant_id = $1 AND task_id = $2", tenant, old)
            assert held == "reserved"  # its outcome unknown: a human still has to say whether the refund ran
            assert (after["decisions"], after["spend"], after["tasks_forgotten"]) == (before["decisions"], before["spend"], 1)
            kept = await _rows(conn, tenant, young)
            assert kept["tasks_forgotten"] == 0
            assert all(kept[t] for t in WORKING_STATE)

        reads = await service.repo.task_reads([(tenant, old), (tenant, young)])
        assert (reads[(tenant, old)].forgotten, reads[(tenant, young)].forgotten) == (True, False)
        denied = await asyncio.wait_for(_decide(service, tenant, old, f"{old}-late"), 10)  # no wait for a request never learned again
        assert (denied.outcome, [r.code.value for r in denied.reasons]) == ("deny", ["task_expired"])
        assert (await _decide(service, tenant, young, f"{young}-more")).outcome == "allow"
    finally:
        await pool.close()


async def test_the_running_policy_forgets_on_its_timer_as_its_own_login(infra: Any, kit: KitSettings) -> None:
    """The sweep runs in the service as `tidegate_policy`, which may delete its working state, and keeps the recent rows."""
    tenant = f"forget-{uuid.uuid4().hex[:8]}"
    owner = await asyncpg.connect(infra.database_url)
    try:
        await owner.execute(
            "INSERT INTO policy.provenance (tenant_id, task_id, value, trusted, source, learned_at) VALUES "
            "($1, 'old', 'id:cus_1', false, 'a ticket', now() - interval '2 hours'), ($1, 'new', 'id:cus_1', false, 'a ticket', now())",
            tenant,
        )
        policy = build(kit, PolicySettings(task_state_kept_s=3600, task_state_check_s=0.2))
        await policy.start()
        try:
            for _ in range(100):
                left = await owner.fetch("SELECT task_id FROM policy.provenance WHERE tenant_id = $1", tenant)
                if len(left) < 2:
                    break
                await asyncio.sleep(0.1)
        finally:
            await policy.stop()
        assert [r["task_id"] for r in left] == ["new"]
        forgotten = await owner.fetch("SELECT task_id FROM policy.tasks_forgotten WHERE tenant_id = $1", tenant)
        assert [r["task_id"] for r in forgotten] == ["old"]
    finally:
        await owner.close()


async def test_two_copies_sweeping_at_once_forget_each_row_once(infra: Any, tmp_path: Path) -> None:
    """Copies of the service run the sweep on their own timers: at once, each row is deleted once and no sweep fails."""
    tenant = f"forget-{uuid.uuid4().hex[:8]}"
    pool = await create_pool(infra.database_url, max_size=4)
    try:
        rows = [(tenant, f"{tenant}-{i // 30}", f"v-{i}") for i in range(3000)]  # 100 tasks of 30 values
        await pool.executemany(
            "INSERT INTO policy.provenance (tenant_id, task_id, value, trusted, source, learned_at) "
            "VALUES ($1, $2, $3, false, 'a ticket', now() - interval '8 days')",
            rows,
        )
        cutoff = datetime.now(UTC) - timedelta(days=7)
        copies = [PgPolicyRepository(pool), PgPolicyRepository(pool)]
        done = await asyncio.gather(*(forget_tasks(repo, cutoff, batch=100) for repo in copies))
        assert await pool.fetchval("SELECT count(*) FROM policy.provenance WHERE tenant_id = $1", tenant) == 0
        assert await pool.fetchval("SELECT count(*) FROM policy.tasks_forgotten WHERE tenant_id = $1", tenant) == 100
        assert sum(d.tasks for d in done) >= 100  # each task named once here (other tests' old rows may add to it)
        assert sum(d.rows for d in done) >= 3000
    finally:
        await pool.close()
