"""Create (migrate) the schemas of the demo systems of record."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from servicekit import apply_migrations

__all__ = ["SYSTEMS", "install"]

SYSTEMS = ("helpdesk", "payments", "mail", "crm", "code")
MIGRATIONS = Path(__file__).parent / "migrations"


async def install(pool: asyncpg.Pool) -> None:
    """Apply every system's migrations to its own schema; idempotent and safe to run concurrently."""
    for system in SYSTEMS:
        await apply_migrations(pool, system, MIGRATIONS / system)
