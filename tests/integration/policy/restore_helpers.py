"""What restoring a backup does to the policy's schema, for the restore and catch-up tests (shared by their modules)."""

from __future__ import annotations

import asyncpg

__all__ = ["TABLES", "restored_before"]

TABLES = ("decisions", "reservations", "spend", "payouts", "call_outcomes", "provenance", "records", "tasks_learned")


async def restored_before(pool: asyncpg.Pool, tenant: str) -> None:
    """What restoring a backup taken before the tenant's first call does to the policy's schema: every row of the tenant gone."""
    for table in TABLES:
        await pool.execute(f"DELETE FROM policy.{table} WHERE tenant_id = $1", tenant)
