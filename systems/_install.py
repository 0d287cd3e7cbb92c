"""The schemas of the demo systems of record: their migrations (run by the migrator) and the tools' pool."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from servicekit import apply_migrations, check_migrations, create_pool

__all__ = ["MIGRATIONS", "SYSTEMS", "connect", "install"]

SYSTEMS = ("helpdesk", "payments", "mail", "crm", "code")
MIGRATIONS = Path(__file__).parent / "migrations"


async def connect(dsn: str, *, max_size: int = 10) -> asyncpg.Pool:
    """The pool the in-process tools work with (the systems' own role), once every system's schema is migrated."""
    pool = await create_pool(dsn, max_size=max_size)
    try:
        for system in SYSTEMS:
            await check_migrations(pool, system, MIGRATIONS / system)
    except BaseException:
        await pool.close()
        raise
    return pool


async def install(pool: asyncpg.Pool) -> None:
    """Apply every system's migrations as the pool's role (the migrator's; a no-op once `tidegate db migrate` ran)."""
    for system in SYSTEMS:
        await apply_migrations(pool, system, MIGRATIONS / system)
