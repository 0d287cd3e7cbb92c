"""Small SQL helpers the demo systems share."""

from __future__ import annotations

from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

__all__ = ["Connection", "delete_child", "insert_once"]

Connection = asyncpg.Connection | PoolConnectionProxy
"""A plain connection or one borrowed from a pool."""


async def insert_once(conn: Connection, table: str, id_col: str, cols: dict[str, Any], key: str, tenant_id: str) -> tuple[int, bool]:
    """Insert a row unless one with this idempotency key exists; returns (row id, created now)."""
    names = [*cols, "tenant_id", "idempotency_key"]
    values = [*cols.values(), tenant_id, key]
    placeholders = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    new_id = await conn.fetchval(
        f"INSERT INTO {table} ({', '.join(names)}) VALUES ({placeholders}) "
        f"ON CONFLICT (tenant_id, idempotency_key) DO NOTHING RETURNING {id_col}",
        *values,
    )
    if new_id is not None:
        return new_id, True
    old = await conn.fetchval(f"SELECT {id_col} FROM {table} WHERE tenant_id = $1 AND idempotency_key = $2", tenant_id, key)
    return old, False


async def delete_child(
    conn: Connection, table: str, id_col: str, row_id: int, tenant_id: str, parent: tuple[str, str], *, returning: str
) -> Any:
    """Delete the row `row_id` of `table` that belongs to the tenant and to `parent` (column, value); its `returning` column, or None."""
    parent_col, parent_id = parent
    return await conn.fetchval(
        f"DELETE FROM {table} WHERE tenant_id = $1 AND {parent_col} = $2 AND {id_col} = $3 RETURNING {returning}",
        tenant_id,
        parent_id,
        row_id,
    )
