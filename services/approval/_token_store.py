"""Where approver credentials are kept: API tokens (their hashes, expiry, groups) and spent one-time links.

Part of the approval service's repository (`services.approval.repository` composes it): a Protocol,
the asyncpg part and the in-memory twin's part.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

import asyncpg

from servicekit.people import approver_name, person, same_person

__all__ = ["DEFAULT_TOKEN_TTL", "InMemoryTokenStore", "PgTokenStore", "TokenInfo", "TokenStore"]

DEFAULT_TOKEN_TTL = timedelta(days=30)  # what the schema gives a token inserted without an expiry (migration 002)


@dataclass(frozen=True)
class TokenInfo:
    """An approver token as stored (never the token itself)."""

    token_id: str
    approver: str
    tenant_id: str
    groups: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None
    expires_at: datetime | None = None
    operator: bool = False


class TokenStore(Protocol):
    """Approver tokens and spent links."""

    async def add_token(
        self,
        token_sha256: str,
        approver: str,
        tenant_id: str,
        groups: Sequence[str],
        *,
        expires_at: datetime | None = None,
        operator: bool = False,
    ) -> TokenInfo:
        """Store a token's hash for an approver, expiring at `expires_at` (None: 30 days from now); an operator token is tenant `*`.

        The name is stored normalised (`servicekit.people.approver_name`); ValueError for one that is not a plain email or login.
        """
        ...

    async def token(self, token_sha256: str) -> TokenInfo | None:
        """The live (not revoked, not expired) token with this hash; marks it used."""
        ...

    async def rotate_token(self, token_id: str, new_sha256: str, expires_at: datetime) -> TokenInfo | None:
        """Revoke a live token and store its successor (same person, under their normalised name; same tenant, groups) at once.

        None when not live.
        """
        ...

    async def is_registered(self, approver: str, tenant_id: str) -> bool:
        """Whether `approver` (the person, in any spelling: `servicekit.people`) holds a live token of exactly this tenant."""
        ...

    async def tokens(self) -> list[TokenInfo]:
        """Every token."""
        ...

    async def revoke_token(self, token_id: str) -> bool:
        """Revoke a token; False when unknown or already revoked."""
        ...

    async def groups_of(self, approver: str, tenant_id: str) -> set[str]:
        """Union of the groups of the live tokens of `approver` (the person, in any spelling) in a tenant (empty: not registered)."""
        ...

    async def spend_link(self, link_id: str, approval_id: str, approver: str) -> bool:
        """Record a link as used; False when it was used before."""
        ...

    async def link_spent(self, link_id: str) -> bool:
        """Whether a link was used already (by this process or any other on the same database)."""
        ...


def _new_token_owner(approver: str, tenant_id: str, operator: bool) -> str:
    """The approver's name as a new token stores it; ValueError, one line, for a bad name or tenant."""
    if operator != (tenant_id == "*"):
        raise ValueError("an operator token is tenant '*', and only an operator token is")
    return approver_name(approver)


def _token(row: asyncpg.Record) -> TokenInfo:
    return TokenInfo(
        token_id=row["token_id"],
        approver=row["approver"],
        tenant_id=row["tenant_id"],
        groups=tuple(row["groups"]),
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
        last_used_at=row["last_used_at"],
        expires_at=row["expires_at"],
        operator=row["operator"],
    )


class PgTokenStore(TokenStore):
    """The PostgreSQL part (tables `approver_tokens`, `used_links`); the repository sets `pool` and `s`."""

    pool: asyncpg.Pool
    s: str

    async def add_token(
        self,
        token_sha256: str,
        approver: str,
        tenant_id: str,
        groups: Sequence[str],
        *,
        expires_at: datetime | None = None,
        operator: bool = False,
    ) -> TokenInfo:
        """Store a token's hash for an approver (an operator token is tenant `*`)."""
        approver = _new_token_owner(approver, tenant_id, operator)
        async with self.pool.acquire() as conn:
            return await self._add_token(conn, token_sha256, approver, tenant_id, groups, expires_at, operator)

    async def _add_token(
        self, conn: Any, sha: str, approver: str, tenant_id: str, groups: Sequence[str], expires_at: datetime | None, operator: bool
    ) -> TokenInfo:
        row = await conn.fetchrow(
            f"INSERT INTO {self.s}.approver_tokens (token_id, token_sha256, approver, tenant_id, groups, expires_at, operator) "
            f"VALUES ($1, $2, $3, $4, $5, COALESCE($6, now() + interval '{DEFAULT_TOKEN_TTL.days} days'), $7) RETURNING *",
            "tok_" + secrets.token_hex(6),
            sha,
            approver,
            tenant_id,
            list(groups),
            expires_at,
            operator,
        )
        assert row is not None  # RETURNING of a successful INSERT
        return _token(row)

    async def token(self, token_sha256: str) -> TokenInfo | None:
        """The live (not revoked, not expired) token with this hash; marks it used."""
        row = await self.pool.fetchrow(
            f"UPDATE {self.s}.approver_tokens SET last_used_at = now() WHERE token_sha256 = $1 AND revoked_at IS NULL "
            "AND expires_at > now() RETURNING *",
            token_sha256,
        )
        return _token(row) if row else None

    async def rotate_token(self, token_id: str, new_sha256: str, expires_at: datetime) -> TokenInfo | None:
        """Revoke a live token and store its successor (same approver, tenant, groups) in one transaction."""
        async with self.pool.acquire() as conn, conn.transaction():
            old = await conn.fetchrow(
                f"UPDATE {self.s}.approver_tokens SET revoked_at = now() WHERE token_id = $1 AND revoked_at IS NULL "
                "AND expires_at > now() RETURNING *",
                token_id,
            )
            if old is None:
                return None
            return await self._add_token(
                conn, new_sha256, person(old["approver"]), old["tenant_id"], old["groups"], expires_at, old["operator"]
            )

    async def is_registered(self, approver: str, tenant_id: str) -> bool:
        """Whether `approver` (in any spelling) holds a live token of exactly this tenant."""
        rows = await self.pool.fetch(
            f"SELECT approver FROM {self.s}.approver_tokens WHERE tenant_id = $1 AND revoked_at IS NULL AND expires_at > now()",
            tenant_id,
        )
        return any(same_person(r["approver"], approver) for r in rows)

    async def tokens(self) -> list[TokenInfo]:
        """Every token."""
        return [_token(r) for r in await self.pool.fetch(f"SELECT * FROM {self.s}.approver_tokens ORDER BY created_at")]

    async def revoke_token(self, token_id: str) -> bool:
        """Revoke a token; False when unknown or already revoked."""
        done = await self.pool.fetchval(
            f"UPDATE {self.s}.approver_tokens SET revoked_at = now() WHERE token_id = $1 AND revoked_at IS NULL RETURNING token_id",
            token_id,
        )
        return done is not None

    async def groups_of(self, approver: str, tenant_id: str) -> set[str]:
        """Union of the groups of an approver's (in any spelling) live tokens in a tenant."""
        rows = await self.pool.fetch(  # every live token of the tenant: one person's may be stored in several spellings (made before)
            f"SELECT approver, groups FROM {self.s}.approver_tokens WHERE tenant_id IN ($1, '*') AND revoked_at IS NULL "
            "AND expires_at > now()",
            tenant_id,
        )
        return {g for r in rows if same_person(r["approver"], approver) for g in r["groups"]}

    async def spend_link(self, link_id: str, approval_id: str, approver: str) -> bool:
        """Record a link as used; False when it was used before."""
        done = await self.pool.fetchval(
            f"INSERT INTO {self.s}.used_links (link_id, approval_id, approver) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING "
            "RETURNING link_id",
            link_id,
            approval_id,
            approver,
        )
        return done is not None

    async def link_spent(self, link_id: str) -> bool:
        """Whether a link was used already (its row in `used_links`)."""
        found = await self.pool.fetchval(f"SELECT 1 FROM {self.s}.used_links WHERE link_id = $1", link_id)
        return found is not None


@dataclass
class InMemoryTokenStore(TokenStore):
    """The in-memory twin's part."""

    token_rows: dict[str, tuple[str, TokenInfo]] = field(default_factory=dict)
    links: set[str] = field(default_factory=set)
    clock: Any = None

    async def add_token(
        self,
        token_sha256: str,
        approver: str,
        tenant_id: str,
        groups: Sequence[str],
        *,
        expires_at: datetime | None = None,
        operator: bool = False,
    ) -> TokenInfo:
        """Store a token's hash."""
        approver = _new_token_owner(approver, tenant_id, operator)
        return self._store(token_sha256, approver, tenant_id, groups, expires_at, operator)

    def _store(
        self, token_sha256: str, approver: str, tenant_id: str, groups: Sequence[str], expires_at: datetime | None, operator: bool
    ) -> TokenInfo:
        info = TokenInfo(
            "tok_" + secrets.token_hex(6), approver, tenant_id, tuple(groups), self._now(), expires_at=expires_at, operator=operator
        )
        self.token_rows[info.token_id] = (token_sha256, info)
        return info

    async def token(self, token_sha256: str) -> TokenInfo | None:
        """The live token with this hash."""
        return next((info for h, info in self.token_rows.values() if h == token_sha256 and self._live(info)), None)

    async def rotate_token(self, token_id: str, new_sha256: str, expires_at: datetime) -> TokenInfo | None:
        """Revoke a live token and store its successor."""
        if token_id not in self.token_rows or not self._live(self.token_rows[token_id][1]):
            return None
        h, old = self.token_rows[token_id]
        self.token_rows[token_id] = (h, replace(old, revoked_at=self._now()))
        return self._store(new_sha256, person(old.approver), old.tenant_id, old.groups, expires_at, old.operator)

    async def is_registered(self, approver: str, tenant_id: str) -> bool:
        """Whether `approver` holds a live token of exactly this tenant."""
        return any(same_person(i.approver, approver) and i.tenant_id == tenant_id and self._live(i) for _, i in self.token_rows.values())

    async def tokens(self) -> list[TokenInfo]:
        """Every token."""
        return [info for _, info in self.token_rows.values()]

    async def revoke_token(self, token_id: str) -> bool:
        """Revoke a token."""
        if token_id not in self.token_rows or self.token_rows[token_id][1].revoked_at is not None:
            return False
        h, info = self.token_rows[token_id]
        self.token_rows[token_id] = (h, replace(info, revoked_at=self._now()))
        return True

    async def groups_of(self, approver: str, tenant_id: str) -> set[str]:
        """Union of the groups of an approver's live tokens in a tenant."""
        return {
            g
            for _, info in self.token_rows.values()
            if same_person(info.approver, approver) and info.tenant_id in (tenant_id, "*") and self._live(info)
            for g in info.groups
        }

    async def spend_link(self, link_id: str, approval_id: str, approver: str) -> bool:
        """Record a link as used."""
        if link_id in self.links:
            return False
        self.links.add(link_id)
        return True

    async def link_spent(self, link_id: str) -> bool:
        """Whether a link was used already."""
        return link_id in self.links

    def _now(self) -> datetime:
        from schemas import utcnow

        return self.clock() if self.clock is not None else utcnow()

    def _live(self, info: TokenInfo) -> bool:
        return info.revoked_at is None and (info.expires_at is None or info.expires_at > self._now())
