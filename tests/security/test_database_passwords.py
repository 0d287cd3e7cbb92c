"""Database passwords, tested as the monitoring role that reads `pg_stat_statements` and as a service whose password is rotated.

`tidegate db migrate` sets each service's password as a SCRAM-SHA-256 verifier computed on the client, so no statement text
the server keeps holds a password; a service reads its passfile at each new connection, so the documented rotation needs no
restart before its pool reconnects.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from servicekit import KitSettings
from servicekit.db import create_pool
from servicekit.dbroles import credentials_file, scram_verifier, service_database_url, service_role, with_database, with_login
from tidegate.database import migrate

pytestmark = pytest.mark.integration

SERVICES = ("planner", "policy", "approval", "executor", "audit", "systems")


def _kit(infra: Any) -> KitSettings:
    return KitSettings(database_url=infra.database_url, db_credentials_dir=infra.db_credentials_dir)


def _password(infra: Any, service: str) -> str:
    return str(json.loads(credentials_file(infra.db_credentials_dir, service).read_text())["password"])


@pytest.fixture
async def monitor(infra: Any) -> AsyncIterator[asyncpg.Connection]:
    """A monitoring exporter's login (`pg_monitor`, so `pg_read_all_stats`), over TCP, on the database that has the view."""
    admin = await asyncpg.connect(with_database(infra.admin_database_url, "postgres"))
    role, password = f"tidegate_t_monitor_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    try:
        if "pg_stat_statements" not in await admin.fetchval("SHOW shared_preload_libraries"):
            pytest.skip("this cluster does not load pg_stat_statements (infra/infra.sh's does)")
        await admin.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")  # as an operator who follows the docs does
        # Set as a verifier computed here, as `provision` does: logging in over TCP (scram-sha-256) proves it is the right one.
        await admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{scram_verifier(password)}' IN ROLE pg_monitor")
        conn = await asyncpg.connect(with_login(with_database(infra.database_url, "postgres"), role, password))
        try:
            yield conn
        finally:
            await conn.close()
    finally:
        await admin.execute(f"DROP ROLE IF EXISTS {role}")
        await admin.close()


async def test_a_migration_leaves_no_password_in_pg_stat_statements(infra: Any, monitor: asyncpg.Connection) -> None:
    credentials_file(infra.db_credentials_dir, "audit").unlink()  # a rotation: `db migrate` makes and sets a new one
    await migrate(_kit(infra), role_prefix=infra.role_prefix)
    passwords = [_password(infra, service) for service in SERVICES]
    texts = [row["query"] for row in await monitor.fetch("SELECT query FROM pg_stat_statements")]
    rotated = f'ALTER ROLE "{service_role("audit", infra.role_prefix)}" LOGIN PASSWORD'
    assert any(rotated in text for text in texts), "the migration's statements were not seen"
    assert not [text for text in texts for password in passwords if password in text]
    for service in SERVICES:  # each login still works, now checked against the verifier
        conn = await asyncpg.connect(service_database_url(_kit(infra), service))
        await conn.close()


async def test_a_rotated_password_is_used_by_the_next_connection_of_an_open_pool(infra: Any) -> None:
    kit = _kit(infra)
    pool = await create_pool(service_database_url(kit, "planner"), max_size=1)
    admin = await asyncpg.connect(infra.admin_database_url)
    try:
        before = await pool.fetchval("SELECT pg_backend_pid()")
        # The rotation of docs/security/database.md, with the service still running.
        credentials_file(infra.db_credentials_dir, "planner").unlink()
        await migrate(kit, role_prefix=infra.role_prefix)
        # Its connection drops (a restart, a failover, an idle timeout): the pool's next connection must log in anew.
        await admin.execute("SELECT pg_terminate_backend($1)", before)
        await pool.expire_connections()
        assert await pool.fetchval("SELECT current_user") == service_role("planner", infra.role_prefix)
        assert await pool.fetchval("SELECT pg_backend_pid()") != before
    finally:
        await admin.close()
        await pool.close()
