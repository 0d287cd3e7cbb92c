"""Two deployments (two CI jobs, two harness runs) migrate two databases of one PostgreSQL cluster at the same time.

Roles are cluster-wide and advisory locks are per database: each migration held its own database's lock and both
altered the same roles, and one failed now and then with `tuple concurrently updated` (auditfast F1). A migration
now waits for any other of the cluster's, whatever database it migrates.
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from servicekit import KitSettings
from servicekit.dbroles import PROVISION_LOCK, owner_role, service_role, with_database
from tidegate.database import SCHEMAS, migrate


@pytest.fixture
def two_databases(infra: Any) -> Iterator[list[tuple[str, str]]]:
    """Two fresh databases owned by the operator's role, each with a role prefix of its own: (database URL, prefix)."""
    made = [(f"tidegate_pair_{uuid.uuid4().hex[:8]}", f"tidegate_p{uuid.uuid4().hex[:8]}_") for _ in range(2)]
    for name, _ in made:
        subprocess.run(["psql", infra.admin_database_url, "-qc", f"CREATE DATABASE {name} OWNER tidegate"], check=True)
    try:
        yield [(with_database(infra.database_url, name), prefix) for name, prefix in made]
    finally:
        for name, prefix in made:
            subprocess.run(["psql", infra.admin_database_url, "-qc", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], check=False)
            roles = [owner_role(prefix), *dict.fromkeys(service_role(s.user, prefix) for s in SCHEMAS)]
            subprocess.run(["psql", infra.admin_database_url, "-qc", "; ".join(f"DROP ROLE IF EXISTS {r}" for r in roles)], check=False)


def _kit(url: str, tmp_path: Path, prefix: str) -> KitSettings:
    return KitSettings(database_url=url, db_credentials_dir=tmp_path / prefix)


async def test_a_migration_waits_for_another_databases_migration_on_the_same_cluster(
    infra: Any, two_databases: list[tuple[str, str]], tmp_path: Path
) -> None:
    """Another deployment's migration is under way (it holds the cluster's lock): this one touches no role until it ends."""
    (url, prefix), _ = two_databases
    other = await asyncpg.connect(with_database(infra.database_url, "postgres"))
    try:
        await other.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", PROVISION_LOCK)
        migrating = asyncio.create_task(migrate(_kit(url, tmp_path, prefix), role_prefix=prefix))
        await asyncio.sleep(3)
        assert not migrating.done(), "migrated while another database's migration held the cluster's lock"
        assert not await other.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", owner_role(prefix))
        await other.execute("SELECT pg_advisory_unlock(hashtextextended($1, 0))", PROVISION_LOCK)
        applied = await asyncio.wait_for(migrating, 120)
    finally:
        await other.close()
    assert all(applied.values())
    assert await _roles(infra, prefix)


async def test_two_migrations_into_two_databases_at_once_both_succeed(
    infra: Any, two_databases: list[tuple[str, str]], tmp_path: Path
) -> None:
    """Both with the same role prefix (the default `tidegate_`, as two deployments of one cluster have): the same roles."""
    shared = two_databases[0][1]
    for _ in range(2):  # a first provisioning creates the roles, the next alters them: both raced
        done = await asyncio.gather(*(migrate(_kit(url, tmp_path, shared), role_prefix=shared) for url, _ in two_databases))
        assert len(done) == 2
    assert await _roles(infra, shared)


async def _roles(infra: Any, prefix: str) -> list[str]:
    conn = await asyncpg.connect(infra.admin_database_url)
    try:
        rows = await conn.fetch("SELECT rolname FROM pg_roles WHERE starts_with(rolname, $1)", prefix)
    finally:
        await conn.close()
    return [r["rolname"] for r in rows]
