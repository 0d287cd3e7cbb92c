"""`tidegate db usage` gives the rows of a table PostgreSQL has never analysed, instead of a 0 read off missing statistics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import asyncpg

from servicekit import REPO_ROOT


async def test_a_table_never_analysed_shows_its_rows_not_0(infra: Any) -> None:
    table = "approval.schema_migrations"  # a few rows, under autovacuum's 50: never analysed
    admin = await asyncpg.connect(infra.admin_database_url)
    try:
        never_analysed = await admin.fetchval("SELECT reltuples < 0 FROM pg_class WHERE oid = $1::regclass", table)
        assert never_analysed, f"{table} was analysed: this test needs a table that never was"
        rows = await admin.fetchval(f"SELECT count(*) FROM {table}")
        assert rows > 0
        await admin.execute("SELECT pg_stat_reset_single_table_counters($1::regclass)", table)  # as after a server restart
    finally:
        await admin.close()
    env = os.environ | {"TIDEGATE_DATABASE_URL": infra.database_url}
    done = subprocess.run(
        [sys.executable, "-m", "tidegate.cli", "db", "usage", "--json"], env=env, capture_output=True, text=True, timeout=60, cwd=REPO_ROOT
    )
    assert done.returncode == 0, done.stderr
    usage = {t["table"]: t for t in map(json.loads, done.stdout.splitlines())}
    assert usage[table]["rows"] == rows
