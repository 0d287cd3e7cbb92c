"""A pooled connection broken under the service is never handed out again once the retrying layer has seen its error."""

from __future__ import annotations

from typing import Any

import asyncpg

from servicekit import create_pool
from servicekit.db import discard_broken_connections
from servicekit.intake import ErrorKind, classify


async def test_a_terminated_connection_is_retried_as_transient_and_replaced(infra: Any) -> None:
    pool = await create_pool(infra.database_url, max_size=2, min_size=2)
    admin = await asyncpg.connect(infra.admin_database_url)
    try:
        discard = discard_broken_connections(pool)
        before = {await pool.fetchval("SELECT pg_backend_pid()") for _ in range(4)}
        killed = await admin.fetchval("SELECT count(pg_terminate_backend(p)) FROM unnest($1::int[]) AS p", list(before))
        assert killed == len(before)
        kinds = []
        for _ in range(4):  # what a handler meets next, through the one retrying layer
            try:
                await pool.fetchval("SELECT 1")
            except Exception as exc:
                kinds.append(classify(exc))
                await discard(exc)
        assert set(kinds) <= {ErrorKind.TRANSIENT}  # retried, never dead-lettered
        after = {await pool.fetchval("SELECT pg_backend_pid()") for _ in range(4)}
        assert after.isdisjoint(before)  # every connection of the pool is a new backend
    finally:
        await admin.close()
        await pool.close()
