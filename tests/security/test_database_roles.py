"""The database as a trust boundary, tested as the attacker: logged in as each service's own role.

A service (or a tool running inside the executor) that is taken over can do in PostgreSQL only what
its role may: never touch the audit trail but append to it, never read another service's secrets,
never write another service's state, never create a role or a schema, never become the owner.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from servicekit import KitSettings, SchemaNotReady, check_migrations
from servicekit.dbroles import credentials_file, owner_role, service_database_url, with_login

pytestmark = pytest.mark.integration

SERVICES = ("planner", "policy", "approval", "executor", "audit", "systems")

# What a taken-over service would try first against the audit trail (each must be refused by PostgreSQL itself).
AUDIT_ATTACKS = {
    "disable the append-only trigger": "ALTER TABLE audit.log DISABLE TRIGGER log_append_only",
    "disable every trigger of the checkpoints": "ALTER TABLE audit.checkpoints DISABLE TRIGGER ALL",
    "drop the trigger": "DROP TRIGGER log_append_only ON audit.log",
    "replace the trigger function": (
        "CREATE OR REPLACE FUNCTION audit.reject_change() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$"
    ),
    "rewrite a row": "UPDATE audit.log SET valid = NOT valid",
    "delete rows": "DELETE FROM audit.log",
    "truncate": "TRUNCATE audit.log",
    "delete a checkpoint": "DELETE FROM audit.checkpoints",
    "skip triggers for the session": "SET session_replication_role = replica",
    "take the table over": "ALTER TABLE audit.log OWNER TO CURRENT_USER",
}

ESCALATIONS = {
    "create a role": "CREATE ROLE tidegate_evil LOGIN PASSWORD 'x'",
    "create a schema": "CREATE SCHEMA evil",
    "create a table in public": "CREATE TABLE public.evil (x int)",
    "grant itself the owner role": "GRANT {owner} TO CURRENT_USER",
    "become the owner": "SET ROLE {owner}",
}

# Another service's state or secrets, as (who attacks, what it runs).
TRESPASSES = [
    ("executor", "SELECT token_sha256 FROM approval.approver_tokens"),
    ("executor", "SELECT secret FROM approval.webhook_endpoints"),
    ("systems", "SELECT secret FROM approval.webhook_endpoints"),
    ("planner", "SELECT * FROM approval.approver_tokens"),
    ("policy", "INSERT INTO approval.approver_tokens (token_id) VALUES ('forged')"),
    ("planner", "INSERT INTO policy.known_payees (tenant_id, payee) VALUES ('acme', 'attacker')"),
    ("approval", "UPDATE policy.reservations SET status = 'released'"),
    ("planner", "DELETE FROM executor.actions"),
    ("executor", "INSERT INTO payments.payees (tenant_id, payee_id) VALUES ('acme', 'attacker')"),
    ("systems", "UPDATE executor.actions SET status = 'succeeded'"),
    ("audit", "UPDATE planner.tasks SET status = 'completed'"),
    ("policy", "SELECT * FROM planner.tasks"),
]


def _kit(infra: Any) -> KitSettings:
    return KitSettings(database_url=infra.database_url, db_credentials_dir=infra.db_credentials_dir)


@pytest.fixture
async def login(infra: Any) -> AsyncIterator[Any]:
    """Connect as a service's own role (its DSN exactly as the service builds it)."""
    opened: list[asyncpg.Connection] = []

    async def connect(service: str) -> asyncpg.Connection:
        conn = await asyncpg.connect(service_database_url(_kit(infra), service))
        opened.append(conn)
        return conn

    yield connect
    for conn in opened:
        await conn.close()


async def _refused(conn: asyncpg.Connection, sql: str) -> str:
    with pytest.raises(asyncpg.InsufficientPrivilegeError) as raised:
        await conn.execute(sql)
    return str(raised.value)


@pytest.mark.parametrize("service", SERVICES)
async def test_no_service_can_alter_erase_or_bypass_the_audit_trail(login: Any, infra: Any, service: str) -> None:
    conn = await login(service)
    for what, sql in AUDIT_ATTACKS.items():
        assert await _refused(conn, sql), what
    admin = await asyncpg.connect(infra.admin_database_url)
    try:
        enabled = await admin.fetch(
            "SELECT tgname, tgenabled::text FROM pg_trigger WHERE tgrelid IN ('audit.log'::regclass, 'audit.checkpoints'::regclass)"
            " AND NOT tgisinternal"  # a foreign key's own triggers (audit.restores references checkpoints) are PostgreSQL's
        )
    finally:
        await admin.close()
    assert {(r["tgname"], r["tgenabled"]) for r in enabled} == {("log_append_only", "O"), ("checkpoints_append_only", "O")}


@pytest.mark.parametrize("service", SERVICES)
async def test_no_service_can_create_roles_or_schemas_or_become_the_owner(login: Any, infra: Any, service: str) -> None:
    conn = await login(service)
    for what, sql in ESCALATIONS.items():
        assert await _refused(conn, sql.format(owner=owner_role(infra.role_prefix))), what
    me = await conn.fetchrow("SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls FROM pg_roles WHERE rolname = current_user")
    assert tuple(me.values()) == (False, False, False, False)


@pytest.mark.parametrize(("service", "sql"), TRESPASSES)
async def test_a_service_cannot_read_or_write_another_services_schema(login: Any, service: str, sql: str) -> None:
    conn = await login(service)
    message = await _refused(conn, sql)
    assert "permission denied" in message


async def test_the_audit_role_can_only_append(login: Any) -> None:
    conn = await login("audit")
    assert await conn.fetchval("SELECT count(*) >= 0 FROM audit.log")  # it reads the chain heads
    assert await conn.fetchval("SELECT has_table_privilege('audit.log', 'INSERT')")
    for privilege in ("UPDATE", "DELETE", "TRUNCATE", "TRIGGER", "REFERENCES"):
        assert not await conn.fetchval(f"SELECT has_table_privilege('audit.log', '{privilege}')"), privilege
        assert not await conn.fetchval(f"SELECT has_table_privilege('audit.checkpoints', '{privilege}')"), privilege


async def test_the_owner_of_every_schema_cannot_log_in_and_owns_the_audit_tables(infra: Any) -> None:
    owner = owner_role(infra.role_prefix)
    admin = await asyncpg.connect(infra.admin_database_url)
    try:
        assert await admin.fetchval("SELECT rolcanlogin FROM pg_roles WHERE rolname = $1", owner) is False
        owners = await admin.fetch(
            "SELECT c.relname, pg_get_userbyid(c.relowner) AS owner FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'audit' AND c.relkind IN ('r', 'p')"
        )
    finally:
        await admin.close()
    assert {r["relname"] for r in owners} >= {"log", "checkpoints", "schema_migrations"}
    assert {r["owner"] for r in owners} == {owner}
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError):
        await asyncpg.connect(with_login(infra.database_url, owner, "anything"))


@pytest.mark.parametrize("service", SERVICES)
async def test_each_service_works_in_its_own_schema_only_and_its_password_file_is_private(login: Any, infra: Any, service: str) -> None:
    conn = await login(service)
    schemas = {r["nspname"] for r in await conn.fetch("SELECT nspname FROM pg_namespace WHERE has_schema_privilege(oid, 'USAGE')")}
    ours = {"helpdesk", "payments", "mail", "crm", "code"} if service == "systems" else {service}
    assert schemas - {"public", "pg_catalog", "information_schema"} - {s for s in schemas if s.startswith("pg_")} == ours
    assert credentials_file(Path(infra.db_credentials_dir), service).stat().st_mode & 0o077 == 0


async def test_a_service_refuses_to_start_on_a_schema_older_than_its_code(infra: Any, tmp_path: Path) -> None:
    from tidegate.database import SCHEMAS

    planner = next(s for s in SCHEMAS if s.name == "planner")
    newer = tmp_path / "migrations"
    newer.mkdir()
    for path in planner.migrations.glob("*.sql"):
        (newer / path.name).write_text(path.read_text())
    (newer / "999_next.sql").write_text("ALTER TABLE tasks ADD COLUMN later text;")
    pool = await asyncpg.create_pool(service_database_url(_kit(infra), "planner"), min_size=1, max_size=1)
    try:
        await check_migrations(pool, "planner", planner.migrations)  # at this code's version: starts
        with pytest.raises(SchemaNotReady, match=r"999_next\.sql not applied.*tidegate db migrate"):
            await check_migrations(pool, "planner", newer)
    finally:
        await pool.close()


async def test_migrating_again_applies_nothing_and_keeps_every_login(infra: Any, login: Any) -> None:
    from tidegate.database import migrate

    files = sorted(Path(infra.db_credentials_dir).glob("*/*.json"))
    assert len(files) == 6  # one folder per login: the five services and the tools' `systems`
    before = {f.name: f.read_text() for f in files}
    applied = await migrate(_kit(infra), role_prefix=infra.role_prefix)
    assert len(applied) == 10
    assert not any(applied.values())
    assert {f.name: f.read_text() for f in files} == before
    conn = await login("executor")
    assert await conn.fetchval("SELECT count(*) >= 0 FROM executor.actions")
