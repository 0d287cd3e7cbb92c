"""`tidegate db rotate --operator`: the operator's own PostgreSQL password rotated, as the operator and as the thief (rotation F2).

The operator's login can alter every schema, the audit trigger included. Before, its only rotation was to delete its
passfile and run `tidegate infra up`, which left every session opened with the former password open for as long as its
holder liked. The test works on a role of its own, made as the operator's is (a passfile with one entry per address,
`pg_signal_backend`), so the session's real operator login is never changed.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from servicekit.dbroles import rotate_operator, scram_verifier, with_login, with_passfile

pytestmark = pytest.mark.integration


@pytest.fixture
async def operator(infra: Any, tmp_path: Path) -> AsyncIterator[tuple[str, Path, str]]:
    """A stand-in operator role with its passfile, as `infra up` writes it: (role, passfile, former password)."""
    role, password = f"{infra.role_prefix}operator_probe", secrets.token_urlsafe(24)
    admin = await asyncpg.connect(infra.admin_database_url)
    database = urlsplit(infra.database_url).path.lstrip("/")
    await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
    await admin.execute(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{scram_verifier(password)}'")
    await admin.execute(f'GRANT pg_signal_backend TO "{role}"')
    await admin.execute(f'GRANT CONNECT ON DATABASE "{database}" TO "{role}"')
    port = urlsplit(infra.database_url).port
    passfile = tmp_path / "tidegate.pgpass"
    passfile.write_text(
        f"# The operator role of the PostgreSQL at 127.0.0.1:{port}\n127.0.0.1:{port}:*:{role}:{password}\n"
        f"localhost:{port}:*:{role}:{password}\n"
    )
    passfile.chmod(0o600)
    try:
        yield role, passfile, password
    finally:
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1 AND pid <> pg_backend_pid()", role)
        await admin.execute(f'REVOKE CONNECT ON DATABASE "{database}" FROM "{role}"')
        await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        await admin.close()


async def test_a_leaked_operator_password_cuts_its_holder_off_now(infra: Any, operator: tuple[str, Path, str]) -> None:
    role, passfile, former = operator
    dsn = with_passfile(infra.database_url, role, passfile)
    thief = await asyncpg.connect(with_login(infra.database_url, role, former))
    try:
        assert await thief.fetchval("SELECT 1") == 1

        login = await rotate_operator(dsn, passfile, end_sessions=True)

        assert (login.role, login.old_password_refused, login.sessions_left) == (role, True, 0)
        assert login.sessions_ended >= 1
        with pytest.raises((asyncpg.PostgresConnectionError, asyncpg.InterfaceError, ConnectionError)):
            await thief.fetchval("SELECT 1")  # the open session: cut off
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(with_login(infra.database_url, role, former))  # and no new one
        text = passfile.read_text()
        assert former not in text
        assert text.startswith("# The operator role")  # the file as `infra up` wrote it, each entry with the new password
        entries = [line.rsplit(":", 1) for line in text.splitlines() if not line.startswith("#")]
        assert len(entries) == 2
        assert len({password for _, password in entries}) == 1
        assert stat.S_IMODE(os.stat(passfile).st_mode) == 0o600
        again = await asyncpg.connect(dsn)  # the operator's next command reads the new one
        await again.close()
    finally:
        if not thief.is_closed():
            thief.terminate()


async def test_a_routine_operator_rotation_interrupts_nothing(infra: Any, operator: tuple[str, Path, str]) -> None:
    role, passfile, former = operator
    dsn = with_passfile(infra.database_url, role, passfile)
    running = await asyncpg.connect(dsn)  # a migration or a backup under way
    try:
        login = await rotate_operator(dsn, passfile)
        assert (login.old_password_refused, login.sessions_ended) == (True, 0)
        assert login.sessions_left == 1  # said: a session from before is still open
        assert await running.fetchval("SELECT 1") == 1
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(with_login(infra.database_url, role, former))
    finally:
        await running.close()


async def test_a_passfile_it_cannot_write_leaves_the_former_password(
    infra: Any, operator: tuple[str, Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The operator's passfile mounted read-only (or a full disk): the rotation changes nothing, and says so.

    Before, the role's password was changed first and the file written after: the write failed, the new password existed
    nowhere, the former one was refused, and the operator's own login (owner of every schema) was locked out.
    """
    import servicekit.dbroles as dbroles

    role, passfile, former = operator
    before = passfile.read_text()

    def read_only(path: Path, text: str) -> None:
        raise OSError(30, "Read-only file system", str(path))

    monkeypatch.setattr(dbroles, "write_private", read_only)
    with pytest.raises(ValueError, match="nothing changed"):
        await rotate_operator(with_passfile(infra.database_url, role, passfile), passfile)
    assert passfile.read_text() == before
    still = await asyncpg.connect(with_login(infra.database_url, role, former))  # the operator still logs in
    await still.close()


async def test_a_passfile_of_another_role_changes_no_password(infra: Any, operator: tuple[str, Path, str], tmp_path: Path) -> None:
    """TIDEGATE_DATABASE_URL logs in as one role, the passfile holds another's entries: refused, nothing changed.

    Before, the password changed was the connection's role's, and the new one written under the other role's entries:
    the connection's role was left on a password kept nowhere.
    """
    role, _, former = operator
    port = urlsplit(infra.database_url).port
    other = tmp_path / "other.pgpass"
    other.write_text(f"127.0.0.1:{port}:*:someone_else:{secrets.token_urlsafe(24)}\n")
    other.chmod(0o600)
    with pytest.raises(ValueError, match="nothing changed"):
        await rotate_operator(with_login(infra.database_url, role, former), other)
    still = await asyncpg.connect(with_login(infra.database_url, role, former))
    await still.close()
