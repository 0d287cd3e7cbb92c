"""Migrations apply once per schema, refuse edited history, and the services' role can write and read."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from servicekit import apply_migrations, create_pool


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
    with pytest.raises(ConnectionError, match=r"cannot reach PostgreSQL at 127\.0\.0\.1:1/"):
        await create_pool("postgresql://tidegate:tidegate@127.0.0.1:1/tidegate")
