"""Migrations apply once per schema, refuse edited history, and the services' role can write and read."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
import warnings
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from servicekit import KitSettings, apply_migrations, create_pool


async def test_migrations_apply_once_and_data_round_trips(infra, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    schema = f"m_{uuid.uuid4().hex[:8]}"
    (tmp_path / "001_init.sql").write_text("CREATE TABLE things (id int PRIMARY KEY, name text NOT NULL);")
    (tmp_path / "002_more.sql").write_text("ALTER TABLE things ADD COLUMN tags text[] NOT NULL DEFAULT '{}';")
    pool = await create_pool(infra.database_url)
    try:
        assert await apply_migrations(pool, schema, tmp_path) == ["001_init.sql", "002_more.sql"]
        assert await apply_migrations(pool, schema, tmp_path) == []
        await pool.execute(f"INSERT INTO {schema}.things (id, name, tags) VALUES (1, 'x', '{{a,b}}')")
        row = await pool.fetchrow(f"SELECT name, tags FROM {schema}.things WHERE id = 1")
        assert (row["name"], row["tags"]) == ("x", ["a", "b"])
        (tmp_path / "001_init.sql").write_text("CREATE TABLE things (id bigint PRIMARY KEY);")
        with pytest.raises(RuntimeError, match="changed after it was applied"):
            await apply_migrations(pool, schema, tmp_path)
    finally:
        await pool.close()


async def test_a_failing_migration_leaves_nothing_half_done(infra, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    schema = f"m_{uuid.uuid4().hex[:8]}"
    (tmp_path / "001_bad.sql").write_text("CREATE TABLE ok (id int); SELECT * FROM missing_table;")
    pool = await create_pool(infra.database_url)
    try:
        with pytest.raises(Exception, match="missing_table"):
            await apply_migrations(pool, schema, tmp_path)
        assert await pool.fetchval("SELECT to_regclass($1)", f"{schema}.ok") is None
    finally:
        await pool.close()


async def test_an_unreachable_database_is_a_clear_error() -> None:
    with pytest.raises(ConnectionError, match=r"cannot reach PostgreSQL at 127\.0\.0\.1:1/tidegate: "):
        await create_pool(KitSettings(pg_port=1).operator_database_url)


def _operator_with_passfile(infra, passfile: Path) -> KitSettings:  # type: ignore[no-untyped-def]
    """The session's operator DSN with no password of its own: the password comes from `passfile`."""
    parts = urlsplit(infra.database_url)
    dsn = urlunsplit(parts._replace(netloc=f"{parts.username}@{parts.netloc.rsplit('@', 1)[-1]}", query=""))
    return KitSettings(database_url=dsn, database_passfile=passfile)


@pytest.mark.parametrize(
    ("content", "mode", "says"),
    [
        (None, 0o600, "does not exist"),
        ("*:*:*:tidegate:not-the-password\n", 0o600, "the password in"),
        ("*:*:*:tidegate:not-the-password\n", 0o644, "readable by others"),
    ],
    ids=["missing", "wrong", "world-readable"],
)
async def test_a_refused_operator_login_names_the_passfile_and_infra_up(
    infra, tmp_path: Path, content: str | None, mode: int, says: str
) -> None:  # type: ignore[no-untyped-def]
    passfile = tmp_path / "tidegate.pgpass"
    if content is not None:
        passfile.write_text(content)
        passfile.chmod(mode)
    kit = _operator_with_passfile(infra, passfile)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # asyncpg warns before it ignores a world-readable passfile
        with pytest.raises(ConnectionError) as refused:
            await create_pool(kit.operator_database_url)
    message = str(refused.value)
    assert str(passfile) in message
    assert says in message
    assert "`tidegate infra up`" in message


def test_an_operator_command_without_its_password_fails_in_one_line(infra, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    kit = _operator_with_passfile(infra, tmp_path / "absent.pgpass")
    env = os.environ | {
        "TIDEGATE_DATABASE_URL": kit.database_url,
        "TIDEGATE_DATABASE_PASSFILE": str(kit.database_passfile),
        "COLUMNS": "500",  # one line, as a terminal this wide would show it
    }
    done = subprocess.run(
        [sys.executable, "-m", "tidegate.cli", "db", "migrate"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert str(tmp_path / "absent.pgpass") in done.stderr
    assert "tidegate infra up" in done.stderr
