"""Where tenants' connector grants live: which tools each tenant enabled, its account settings, its sealed secret.

The rows sit in the executor's own schema (`executor.connector_grants`, migration
`services/executor/migrations/005_connector_grants.sql`): every executor replica reads the same
grants, a revocation takes effect on the next call, and the secret in them is sealed to the executor's
key, so a database dump or a reader of the table learns nothing usable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Protocol

import asyncpg

from connectors._vault import Sealed

__all__ = ["Grant", "GrantStore", "InMemoryGrantStore", "PgGrantStore"]


@dataclass(frozen=True)
class Grant:
    """One tenant's use of one connector.

    Attributes:
        tenant_id: The tenant.
        connector: The connector (`stripe`, `zendesk`, ...).
        enabled: False once disabled: every call then fails with `credential_missing`.
        tools: The catalog tools the tenant enabled (its scope); read-only tools by default.
        connection: Account settings that are not secret (API base URL, account email or subdomain).
        sealed: The credential, sealed to the executor's key; None until one is set.
    """

    tenant_id: str
    connector: str
    enabled: bool = True
    tools: frozenset[str] = frozenset()
    connection: dict[str, str] = field(default_factory=dict)
    sealed: Sealed | None = field(default=None, repr=False)


class GrantStore(Protocol):
    """Reads and writes grants; PostgreSQL in production, a dict in tests."""

    async def get(self, tenant_id: str, connector: str) -> Grant | None:
        """The grant of (tenant, connector), if any."""
        ...

    async def put(self, grant: Grant) -> None:
        """Create or replace the grant of (grant.tenant_id, grant.connector)."""
        ...

    async def all(self) -> list[Grant]:
        """Every grant, by tenant then connector."""
        ...


class InMemoryGrantStore(GrantStore):
    """The in-memory twin of `PgGrantStore`."""

    def __init__(self, grants: list[Grant] | None = None) -> None:
        self.grants = {(g.tenant_id, g.connector): g for g in grants or []}

    async def get(self, tenant_id: str, connector: str) -> Grant | None:
        """The grant of (tenant, connector), if any."""
        return self.grants.get((tenant_id, connector))

    async def put(self, grant: Grant) -> None:
        """Create or replace the grant."""
        self.grants[(grant.tenant_id, grant.connector)] = replace(grant)

    async def all(self) -> list[Grant]:
        """Every grant, by tenant then connector."""
        return [self.grants[k] for k in sorted(self.grants)]


class PgGrantStore(GrantStore):
    """Grants in `executor.connector_grants`."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def get(self, tenant_id: str, connector: str) -> Grant | None:
        """The grant of (tenant, connector), if any."""
        row = await self._pool.fetchrow(
            "SELECT * FROM executor.connector_grants WHERE tenant_id = $1 AND connector = $2", tenant_id, connector
        )
        return None if row is None else _grant(row)

    async def put(self, grant: Grant) -> None:
        """Create or replace the grant."""
        sealed = grant.sealed
        await self._pool.execute(
            """
            INSERT INTO executor.connector_grants (tenant_id, connector, enabled, tools, connection, key_id, sealed_secret, updated_at)
            VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, now())
            ON CONFLICT (tenant_id, connector) DO UPDATE SET
                enabled = EXCLUDED.enabled, tools = EXCLUDED.tools, connection = EXCLUDED.connection,
                key_id = EXCLUDED.key_id, sealed_secret = EXCLUDED.sealed_secret, updated_at = now()
            """,
            grant.tenant_id,
            grant.connector,
            grant.enabled,
            sorted(grant.tools),
            json.dumps(grant.connection),
            sealed.key_id if sealed else None,
            sealed.ciphertext if sealed else None,
        )

    async def all(self) -> list[Grant]:
        """Every grant, by tenant then connector."""
        rows = await self._pool.fetch("SELECT * FROM executor.connector_grants ORDER BY tenant_id, connector")
        return [_grant(r) for r in rows]


def _grant(row: asyncpg.Record) -> Grant:
    sealed = Sealed(row["key_id"], bytes(row["sealed_secret"])) if row["sealed_secret"] is not None else None
    connection = row["connection"]
    return Grant(
        tenant_id=row["tenant_id"],
        connector=row["connector"],
        enabled=row["enabled"],
        tools=frozenset(row["tools"]),
        connection=json.loads(connection) if isinstance(connection, str) else dict(connection),
        sealed=sealed,
    )
