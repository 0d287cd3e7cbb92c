"""Where tenants' connector grants live: which tools each tenant enabled, its account settings, its sealed secret.

The rows sit in the executor's own schema (`executor.connector_grants`, migrations
`services/executor/migrations/005_connector_grants.sql` and `008_connector_grant_proof.sql`): every executor
replica reads the same grants, a revocation takes effect on the next call, the secret in them is sealed to
the executor's key, so a database dump or a reader of the table learns nothing usable, and each row carries
the signature of the operator who wrote it (`connectors._proof`), so a writer of the table cannot widen it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Protocol

import asyncpg

from servicekit.vault import Sealed

__all__ = ["Grant", "GrantProof", "GrantStore", "InMemoryGrantStore", "PgGrantStore"]


@dataclass(frozen=True)
class GrantProof:
    """An operator's Ed25519 signature of a whole grant (`connectors._proof.grant_message`), made by `tidegate connectors`.

    Attributes:
        key_id: The operator's key (`<operator>-<hash>`), on the deployment's allow-list of operators.
        signature: base64url signature of the grant's canonical bytes.
        signed_by: The operator (the key's holder).
        signed_at: When the operator signed (their clock; shown, and signed, never trusted for order).
    """

    key_id: str
    signature: str
    signed_by: str
    signed_at: datetime


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
        proof: The operator's signature of all of the above; None on a row written before grants were signed.
    """

    tenant_id: str
    connector: str
    enabled: bool = True
    tools: frozenset[str] = frozenset()
    connection: dict[str, str] = field(default_factory=dict)
    sealed: Sealed | None = field(default=None, repr=False)
    proof: GrantProof | None = field(default=None, repr=False)


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
        sealed, proof = grant.sealed, grant.proof
        await self._pool.execute(
            """
            INSERT INTO executor.connector_grants (tenant_id, connector, enabled, tools, connection, key_id, sealed_secret,
                proof_key_id, proof_signature, signed_by, signed_at, updated_at)
            VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, $9, $10, $11, now())
            ON CONFLICT (tenant_id, connector) DO UPDATE SET
                enabled = EXCLUDED.enabled, tools = EXCLUDED.tools, connection = EXCLUDED.connection,
                key_id = EXCLUDED.key_id, sealed_secret = EXCLUDED.sealed_secret, proof_key_id = EXCLUDED.proof_key_id,
                proof_signature = EXCLUDED.proof_signature, signed_by = EXCLUDED.signed_by, signed_at = EXCLUDED.signed_at,
                updated_at = now()
            """,
            grant.tenant_id,
            grant.connector,
            grant.enabled,
            sorted(grant.tools),
            json.dumps(grant.connection),
            sealed.key_id if sealed else None,
            sealed.ciphertext if sealed else None,
            proof.key_id if proof else None,
            proof.signature if proof else None,
            proof.signed_by if proof else None,
            proof.signed_at if proof else None,
        )

    async def all(self) -> list[Grant]:
        """Every grant, by tenant then connector."""
        rows = await self._pool.fetch("SELECT * FROM executor.connector_grants ORDER BY tenant_id, connector")
        return [_grant(r) for r in rows]


def _grant(row: asyncpg.Record) -> Grant:
    sealed = Sealed(row["key_id"], bytes(row["sealed_secret"])) if row["sealed_secret"] is not None else None
    connection = row["connection"]
    proof = None
    if row["proof_signature"] is not None:
        proof = GrantProof(row["proof_key_id"], row["proof_signature"], row["signed_by"], row["signed_at"])
    return Grant(
        tenant_id=row["tenant_id"],
        connector=row["connector"],
        enabled=row["enabled"],
        tools=frozenset(row["tools"]),
        connection=json.loads(connection) if isinstance(connection, str) else dict(connection),
        sealed=sealed,
        proof=proof,
    )
