"""Small SQL helpers the demo systems share."""

from __future__ import annotations

from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

__all__ = ["Connection", "delete_child", "insert_child_once", "insert_once"]

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


async def insert_child_once(
    conn: Connection, table: str, id_col: str, cols: dict[str, Any], key: str, tenant_id: str, parent: tuple[str, str]
) -> tuple[int, bool] | None:
    """`insert_once` for a row of the tenant's `parent` row (its table and id column, whose value `cols` holds): None when no such parent.

    A new row costs one statement: the parent is read by the INSERT itself, no transaction around it.
    """
    parent_table, parent_col = parent
    names = [*cols, "tenant_id", "idempotency_key"]
    values = [*cols.values(), tenant_id, key]
    n = len(values)
    new_id = await conn.fetchval(
        f"INSERT INTO {table} ({', '.join(names)}) SELECT {', '.join(f'${i}' for i in range(1, n + 1))} FROM {parent_table} "
        f"WHERE tenant_id = ${n - 1} AND {parent_col} = ${names.index(parent_col) + 1} "
        f"ON CONFLICT (tenant_id, idempotency_key) DO NOTHING RETURNING {id_col}",
        *values,
    )
    if new_id is not None:
        return new_id, True
    row = await conn.fetchrow(
        f"SELECT (SELECT {id_col} FROM {table} WHERE tenant_id = $1 AND idempotency_key = $2) AS kept, "
        f"EXISTS (SELECT FROM {parent_table} WHERE tenant_id = $1 AND {parent_col} = $3) AS parent",
        tenant_id,
        key,
        cols[parent_col],
    )
    assert row is not None  # a SELECT without FROM: one row
    return (row["kept"], False) if row["kept"] is not None or row["parent"] else None


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
