"""Migrations apply once per schema, refuse edited history, and the services' role can write and read."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
import warnings
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

import asyncpg
import pytest

from servicekit import UNFLUSHED, KitSettings, apply_migrations, create_pool


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


async def _wal_syncs(conn) -> int:  # type: ignore[no-untyped-def]
    """The cluster's WAL flushes so far, this session's pending statistics included."""
    await conn.execute("SELECT pg_stat_force_next_flush()")  # flushed when the session goes idle, before the next query
    return int(await conn.fetchval("SELECT wal_sync FROM pg_stat_wal"))


async def test_an_unflushed_write_commits_without_waiting_for_the_disk_and_leaves_the_session_as_it_was(infra) -> None:  # type: ignore[no-untyped-def]
    """What the executor's first claim writes, its undo records and the planner's outbox deletes rely on (`UNFLUSHED`)."""
    table = f"unflushed_{uuid.uuid4().hex[:8]}"
    pool = await create_pool(infra.database_url)
    try:
        async with pool.acquire() as conn:
            await conn.execute(f"CREATE TABLE {table} (n int)")
            assert await conn.fetchval(f"SELECT current_setting('synchronous_commit') FROM {UNFLUSHED}") == "off"
            assert await conn.fetchval("SHOW synchronous_commit") == "on"  # the statement's transaction only

            before = await _wal_syncs(conn)
            for n in range(30):
                await conn.execute(f"INSERT INTO {table} SELECT $1 FROM {UNFLUSHED}", n)
            unflushed = await _wal_syncs(conn) - before

            before = await _wal_syncs(conn)
            for n in range(30):
                await conn.execute(f"INSERT INTO {table} VALUES ($1)", n)
            flushed = await _wal_syncs(conn) - before

            assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 60  # committed all the same
            await conn.execute(f"DROP TABLE {table}")
        assert flushed >= 30  # each plain commit waits for its WAL flush
        assert unflushed < 10, unflushed  # at most the WAL writer's own flushes in the background
    finally:
        await pool.close()


async def test_catch_up_logs_in_as_the_operator_as_db_migrate_does(infra, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """security6 F2: `tidegate db catch-up` took `TIDEGATE_DATABASE_URL` as it is, without the operator's password file, and
    was refused on the deployment `infra up` makes: step 4 of the restore could not run, the services stayed down."""
    from tidegate.ops.catch_up import catch_up

    passfile = Path(parse_qs(urlsplit(infra.database_url).query)["passfile"][0])  # the session's: the password is there alone
    kit = _operator_with_passfile(infra, passfile).model_copy(update={"topic_prefix": f"t-{tmp_path.name[-8:]}."})
    done = await catch_up(kit, say=lambda line: None)  # refused before: ConnectionError, password authentication failed
    assert not any(done.counts.values())  # no topic of that prefix: nothing to write back, but it logged in and looked


async def test_a_database_that_refuses_connections_is_counted_at_each_retry() -> None:
    """An SRE probe stopped PostgreSQL: every service retried `ConnectionRefusedError`, and `tidegate_database_retries_total`
    (the `TidegateDatabaseRetrying` page) had no sample: the refusal is the OS's error, raised from asyncpg's connect."""
    import socket

    from prometheus_client import REGISTRY

    from servicekit.db import discard_broken_connections

    class Pool:
        expired = 0

        async def expire_connections(self) -> None:
            self.expired += 1

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once the block ends: a database that is down
    pool = Pool()
    discard = discard_broken_connections(pool, "sre-probe")  # type: ignore[arg-type]
    for _ in range(3):
        try:
            await asyncpg.connect(f"postgresql://nobody@127.0.0.1:{port}/none", timeout=5)
        except OSError as refused:
            await discard(refused)
    assert REGISTRY.get_sample_value("tidegate_database_retries_total", {"service": "sre-probe"}) == 3
    assert pool.expired == 3
    try:
        raise ConnectionRefusedError("a tool's own socket, not the database's")
    except OSError as other:
        await discard(other)
    assert REGISTRY.get_sample_value("tidegate_database_retries_total", {"service": "sre-probe"}) == 3
