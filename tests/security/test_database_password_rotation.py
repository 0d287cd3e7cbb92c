"""`tidegate db rotate`: a service's PostgreSQL password rotated under a running service, as the operator and as the thief.

The thief holds the executor's former password and a session opened with it. The documented rotation before this
(delete the login file, `tidegate db migrate`) refused new logins with the former password but left that session open
for as long as the thief liked: after a suspected leak the old credential must stop working now. The service itself
must lose nothing: its pool reconnects with the new password from its `.pgpass` (docs/security/database.md).
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import pytest

from servicekit import KitSettings
from servicekit.db import create_pool
from servicekit.dbroles import credentials_file, rotate_logins, service_database_url, service_role, with_login

pytestmark = pytest.mark.integration


def _kit(infra: Any) -> KitSettings:
    return KitSettings(database_url=infra.database_url, db_credentials_dir=infra.db_credentials_dir)


def _password(infra: Any, service: str) -> str:
    return str(json.loads(credentials_file(infra.db_credentials_dir, service).read_text())["password"])


async def _thief(infra: Any, service: str, password: str) -> asyncpg.Connection:
    return await asyncpg.connect(with_login(infra.database_url, service_role(service, infra.role_prefix), password))


async def test_a_leaked_password_rotated_with_leaked_cuts_its_holder_off_now_and_the_service_reconnects(infra: Any) -> None:
    kit = _kit(infra)
    former = _password(infra, "executor")
    thief = await _thief(infra, "executor", former)
    service = await create_pool(service_database_url(kit, "executor"), max_size=2)  # the running executor's pool
    try:
        assert await thief.fetchval("SELECT count(*) FROM executor.actions") is not None

        [login] = await rotate_logins(
            infra.database_url, ["executor"], infra.db_credentials_dir, end_sessions=True, role_prefix=infra.role_prefix
        )

        assert login.role == service_role("executor", infra.role_prefix)
        assert login.sessions_ended >= 2  # the thief's and the service's
        assert login.old_password_refused is True
        assert login.sessions_left == 0
        assert _password(infra, "executor") != former
        with pytest.raises((asyncpg.PostgresConnectionError, asyncpg.InterfaceError, ConnectionError)):
            await thief.fetchval("SELECT count(*) FROM executor.actions")  # the open session: cut off
        with pytest.raises(asyncpg.InvalidPasswordError):
            await _thief(infra, "executor", former)  # and no new one
        # The service: its pool connects anew with the new password from its .pgpass (a query that meets its ended
        # connection is a transient error its retrying layer answers by dropping the pool's connections, then retries).
        try:
            await service.fetchval("SELECT 1")
        except (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, ConnectionError):
            await service.expire_connections()  # servicekit.db.discard_broken_connections
        assert await service.fetchval("SELECT count(*) FROM executor.actions") is not None
    finally:
        await service.close()
        if not thief.is_closed():
            thief.terminate()


async def test_a_routine_rotation_refuses_the_former_password_and_leaves_open_sessions_alone(infra: Any) -> None:
    """The 90-day rotation: nothing is interrupted, new logins need the new password, and the command says so."""
    kit = _kit(infra)
    former = _password(infra, "planner")
    service = await create_pool(service_database_url(kit, "planner"), max_size=1)
    try:
        before = await service.fetchval("SELECT pg_backend_pid()")
        [login] = await rotate_logins(infra.database_url, ["planner"], infra.db_credentials_dir, role_prefix=infra.role_prefix)
        assert login.old_password_refused is True
        assert login.sessions_ended == 0
        assert await service.fetchval("SELECT pg_backend_pid()") == before  # the same session, uninterrupted
        with pytest.raises(asyncpg.InvalidPasswordError):
            await _thief(infra, "planner", former)
        conn = await asyncpg.connect(service_database_url(kit, "planner"))  # a new connection reads the new password
        await conn.close()
    finally:
        await service.close()
