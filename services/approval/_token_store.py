"""Where approver credentials are kept: API tokens (their hashes, expiry, groups) and spent one-time links.

Part of the approval service's repository (`services.approval.repository` composes it): a Protocol,
the asyncpg part and the in-memory twin's part.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

import asyncpg

from schemas import utcnow
from servicekit.people import approver_name, person, same_person
from services.approval._pins import ROLLED_BACK, RowPins
from services.approval._row_proofs import RowSeal, micros

__all__ = ["DEFAULT_TOKEN_TTL", "REISSUE", "InMemoryTokenStore", "PgTokenStore", "TokenInfo", "TokenStore", "token_claims"]

log = logging.getLogger(__name__)

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
    key_id: str | None = None  # the key that signed the row: an operator's (the CLI) or the approval service's (its API)
    signature: str | None = None
    unproven: str | None = field(default=None, compare=False)  # why the row grants nothing (None: its signature verifies)


REISSUE = "re-issue it with `tidegate approvals token rotate {token_id}` (the operator), after checking who it names"


def token_claims(
    token_id: str,
    token_sha256: str,
    approver: str,
    tenant_id: str,
    groups: Sequence[str],
    operator: bool,
    created_at: datetime,
    expires_at: datetime | None,
) -> dict[str, Any]:
    """What a token's signature covers: everything of its row that grants (not `last_used_at`, nor `revoked_at`)."""
    return {
        "token_id": token_id,
        "token_sha256": token_sha256,
        "approver": approver,
        "tenant_id": tenant_id,
        "groups": list(groups),
        "operator": operator,
        "created_at": micros(created_at),
        "expires_at": micros(expires_at) if expires_at is not None else None,  # None: only an in-memory twin's
    }


def _claims_of(info: TokenInfo, token_sha256: str) -> dict[str, Any]:
    return token_claims(
        info.token_id, token_sha256, info.approver, info.tenant_id, info.groups, info.operator, info.created_at, info.expires_at
    )


UNREVOKED = (
    f"{ROLLED_BACK}: a token_revoked record (on directory or control) revoked it, but its row says it is live (its revoked_at "
    "was cleared, or an older row put back)"
)
REVOKED = "revoked:"  # how the refusal of a token this process revoked but whose row it failed to write starts
UNWRITTEN = (
    f"{REVOKED} its token_revoked record is published but writing its row's revoked_at failed ({{error}}); the sweep writes it "
    "once the database answers, or revoke it again"
)
KEPT_REVOKED = "it stays revoked whatever its row says; find who wrote approval.approver_tokens (docs/security/database.md)"


def _proven(seal: RowSeal | None, info: TokenInfo, token_sha256: str, pins: RowPins | None = None) -> TokenInfo:
    """`info` with `unproven` set when its row's signature fails, or when `directory` says it was revoked and its row not.

    `seal` None: an in-memory twin without one trusts its memory; `pins` None: no revocation record is checked.
    """
    if pins is not None and info.revoked_at is None and pins.revoked(info.token_id):
        error = pins.unwritten.get(info.token_id)  # this process failed to write the row: the real failure, not a rollback
        return replace(info, unproven=UNREVOKED if error is None else UNWRITTEN.format(error=error))
    if seal is None:
        return info
    why = seal.why_not(_claims_of(info, token_sha256), info.key_id, info.signature)
    return info if why is None else replace(info, unproven=why)


def _revoked_by_record(info: TokenInfo) -> bool:
    """Whether a record on `directory` or `control` revoked the token though its row says live (rolled back, or unwritten)."""
    return info.unproven is not None and (info.unproven == UNREVOKED or info.unproven.startswith(REVOKED))


def _refused(seal: RowSeal | None, info: TokenInfo) -> bool:
    """Whether a token read as a credential or a membership is refused (told once per read: a log line and the metric)."""
    if info.unproven is None:
        return False
    if seal is not None and not info.unproven.startswith(REVOKED):  # a revocation whose row failed was told when it did
        rolled_back = info.unproven == UNREVOKED
        seal.refused(
            f"token {info.token_id} ({info.approver}, tenant {info.tenant_id})",
            info.unproven,
            KEPT_REVOKED if rolled_back else REISSUE.format(token_id=info.token_id),
            counted_as=ROLLED_BACK if rolled_back else None,
        )
    return True


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

    async def token_row(self, token_sha256: str) -> TokenInfo | None:
        """The token with this hash, live or not (revoked, expired, its row refused: `unproven`), without marking it used."""
        ...

    async def rotate_token(self, token_id: str, new_sha256: str, expires_at: datetime, *, reissue: bool = False) -> TokenInfo | None:
        """Revoke a live token and store its successor (same person, under their normalised name; same tenant, groups) at once.

        None when not live, or when its row is not proven (`reissue`: the operator re-issues a row made before tokens were
        signed, or one refused, having checked who it names).
        """
        ...

    async def is_registered(self, approver: str, tenant_id: str) -> bool:
        """Whether `approver` (the person, in any spelling: `servicekit.people`) holds a live token of exactly this tenant."""
        ...

    async def tokens(self) -> list[TokenInfo]:
        """Every token, each with `unproven` set when its row's signature fails (so that it can be seen and revoked)."""
        ...

    async def revoke_token(self, token_id: str) -> bool:
        """Revoke a token; False when unknown or already revoked."""
        ...

    async def pin_revocations(self) -> int:
        """Publish a revocation record on `directory` for every revoked token that no record names yet; how many."""
        ...

    async def write_revocations(self) -> int:
        """Write the rows of the tokens this process revoked on `directory` but failed to write (the sweep's); how many."""
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


def _token(row: asyncpg.Record, seal: RowSeal | None, pins: RowPins | None = None) -> TokenInfo:
    info = TokenInfo(
        token_id=row["token_id"],
        approver=row["approver"],
        tenant_id=row["tenant_id"],
        groups=tuple(row["groups"]),
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
        last_used_at=row["last_used_at"],
        expires_at=row["expires_at"],
        operator=row["operator"],
        key_id=row["key_id"],
        signature=row["signature"],
    )
    return _proven(seal, info, row["token_sha256"], pins)


def _new_row(
    seal: RowSeal | None,
    sha: str,
    approver: str,
    tenant_id: str,
    groups: Sequence[str],
    expires_at: datetime | None,
    operator: bool,
    now: datetime,
) -> TokenInfo:
    """A new token's row: a fresh id, made `now`, expiring at `expires_at`, signed by `seal`'s key (if any)."""
    info = TokenInfo("tok_" + secrets.token_hex(6), approver, tenant_id, tuple(groups), now, expires_at=expires_at, operator=operator)
    if seal is None:
        return info
    proof = seal.sign(_claims_of(info, sha))
    return replace(info, key_id=proof.key_id, signature=proof.signature)


class PgTokenStore(TokenStore):
    """The PostgreSQL part (tables `approver_tokens`, `used_links`); the repository sets `pool`, `s` and `token_seal`.

    Every row it writes is signed by `token_seal`'s key, and every row it reads as a credential or a membership is
    verified: the schema's own login can write rows, not signatures (`services.approval._row_proofs`). Every revocation
    is first published on `directory` (`token_pins`, `services.approval._pins`): a token it names stays revoked, whatever
    the login writes in `revoked_at`.
    """

    pool: asyncpg.Pool
    s: str
    token_seal: RowSeal
    token_pins: RowPins | None = None

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
        """Store a token's hash for an approver (an operator token is tenant `*`), signed by this process's key."""
        approver = _new_token_owner(approver, tenant_id, operator)
        async with self.pool.acquire() as conn:
            return await self._add_token(conn, token_sha256, approver, tenant_id, groups, expires_at, operator)

    async def _add_token(
        self, conn: Any, sha: str, approver: str, tenant_id: str, groups: Sequence[str], expires_at: datetime | None, operator: bool
    ) -> TokenInfo:
        now = utcnow()
        new = _new_row(self.token_seal, sha, approver, tenant_id, groups, expires_at or now + DEFAULT_TOKEN_TTL, operator, now)
        row = await conn.fetchrow(
            f"INSERT INTO {self.s}.approver_tokens (token_id, token_sha256, approver, tenant_id, groups, created_at, expires_at, "
            "operator, key_id, signature) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING *",
            new.token_id,
            sha,
            approver,
            tenant_id,
            list(groups),
            new.created_at,
            new.expires_at,
            operator,
            new.key_id,
            new.signature,
        )
        assert row is not None  # RETURNING of a successful INSERT
        return _token(row, self.token_seal, self.token_pins)

    async def token(self, token_sha256: str) -> TokenInfo | None:
        """The live (not revoked, not expired) token with this hash, if its row is proven; marks it used."""
        row = await self.pool.fetchrow(
            f"UPDATE {self.s}.approver_tokens SET last_used_at = now() WHERE token_sha256 = $1 AND revoked_at IS NULL "
            "AND expires_at > now() RETURNING *",
            token_sha256,
        )
        info = _token(row, self.token_seal, self.token_pins) if row else None
        return None if info is None or _refused(self.token_seal, info) else info

    async def token_row(self, token_sha256: str) -> TokenInfo | None:
        """The token with this hash, live or not, as stored (`unproven` set when its row is refused)."""
        row = await self.pool.fetchrow(f"SELECT * FROM {self.s}.approver_tokens WHERE token_sha256 = $1", token_sha256)
        return _token(row, self.token_seal, self.token_pins) if row else None

    async def rotate_token(self, token_id: str, new_sha256: str, expires_at: datetime, *, reissue: bool = False) -> TokenInfo | None:
        """Revoke a live token and store its successor (same approver, tenant, groups) in one transaction, if its row is proven."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"SELECT * FROM {self.s}.approver_tokens WHERE token_id = $1 AND revoked_at IS NULL AND expires_at > now() FOR UPDATE",
                token_id,
            )
            if row is None:
                return None
            old = _token(row, self.token_seal, self.token_pins)
            if _revoked_by_record(old) and _refused(self.token_seal, old):  # revoked for good: no successor, even re-issued
                return None
            if not reissue and _refused(self.token_seal, old):  # its groups or tenant may be another's: never signed over
                return None
            await self._publish_revocation(token_id, old.tenant_id)
            try:
                await conn.execute(f"UPDATE {self.s}.approver_tokens SET revoked_at = now() WHERE token_id = $1", token_id)
                return await self._add_token(conn, new_sha256, person(old.approver), old.tenant_id, old.groups, expires_at, old.operator)
            except Exception as exc:  # the record is out: the token is revoked, and its row's failure is what is told
                self._row_unwritten(token_id, old.tenant_id, exc)
                raise

    async def _live_proven(self, tenant_ids: Sequence[str]) -> list[TokenInfo]:
        """The live tokens of these tenants whose rows are proven (the others are told, and left out)."""
        rows = await self.pool.fetch(
            f"SELECT * FROM {self.s}.approver_tokens WHERE tenant_id = ANY($1::text[]) AND revoked_at IS NULL AND expires_at > now()",
            list(tenant_ids),
        )
        return [info for info in (_token(r, self.token_seal, self.token_pins) for r in rows) if not _refused(self.token_seal, info)]

    async def is_registered(self, approver: str, tenant_id: str) -> bool:
        """Whether `approver` (in any spelling) holds a live, proven token of exactly this tenant."""
        return any(same_person(info.approver, approver) for info in await self._live_proven([tenant_id]))

    async def tokens(self) -> list[TokenInfo]:
        """Every token, each with `unproven` set when its row's signature fails."""
        rows = await self.pool.fetch(f"SELECT * FROM {self.s}.approver_tokens ORDER BY created_at")
        return [_token(r, self.token_seal, self.token_pins) for r in rows]

    async def _publish_revocation(self, token_id: str, tenant_id: str) -> None:
        """Say on `directory` that the token is revoked, before its row says so (nothing when this process publishes none)."""
        if self.token_pins is not None and self.token_pins.publishes and not self.token_pins.revoked(token_id):
            await self.token_pins.revoke_token(token_id, tenant_id)

    def _row_unwritten(self, token_id: str, tenant_id: str, error: BaseException) -> None:
        if self.token_pins is not None and self.token_pins.revoked(token_id):
            self.token_pins.row_unwritten(token_id, tenant_id, error)

    async def write_revocations(self) -> int:
        """Write `revoked_at` in each row whose revocation this process published but failed to write; how many.

        Each round of the sweep, until the database takes it (an error here ends the round: the sweep's outage guard).
        """
        if self.token_pins is None:
            return 0
        written = list(self.token_pins.unwritten)
        for token_id in written:
            await self.pool.execute(
                f"UPDATE {self.s}.approver_tokens SET revoked_at = now() WHERE token_id = $1 AND revoked_at IS NULL", token_id
            )
            self.token_pins.unwritten.pop(token_id, None)
            log.info("approval: token %s's row now says revoked too (its revocation's row write had failed)", token_id)
        return len(written)

    async def pin_revocations(self) -> int:
        """Publish a revocation record for every proven revoked row no record names yet (revoked before this release); how many."""
        if self.token_pins is None or not self.token_pins.publishes:
            return 0
        rows = await self.pool.fetch(f"SELECT * FROM {self.s}.approver_tokens WHERE revoked_at IS NOT NULL ORDER BY created_at")
        # a row whose signature fails grants nothing whatever its revoked_at says: only the proven ones need a record
        unnamed = [info for info in (_token(r, self.token_seal) for r in rows) if info.unproven is None]
        unnamed = [info for info in unnamed if not self.token_pins.revoked(info.token_id)]
        for info in unnamed:
            await self.token_pins.revoke_token(info.token_id, info.tenant_id)
        return len(unnamed)

    async def revoke_token(self, token_id: str) -> bool:
        """Revoke a token (said on `directory` first); False when unknown or already revoked."""
        tenant_id = await self.pool.fetchval(f"SELECT tenant_id FROM {self.s}.approver_tokens WHERE token_id = $1", token_id)
        if tenant_id is None:
            return False
        await self._publish_revocation(token_id, tenant_id)
        try:
            done = await self.pool.fetchval(
                f"UPDATE {self.s}.approver_tokens SET revoked_at = now() WHERE token_id = $1 AND revoked_at IS NULL RETURNING token_id",
                token_id,
            )
        except Exception as exc:  # the record is out: the token is revoked, and its row's failure is what is told
            self._row_unwritten(token_id, tenant_id, exc)
            raise
        if self.token_pins is not None:
            self.token_pins.unwritten.pop(token_id, None)
        return done is not None

    async def groups_of(self, approver: str, tenant_id: str) -> set[str]:
        """Union of the groups of an approver's (in any spelling) live, proven tokens in a tenant."""
        # every live token of the tenant: one person's may be stored in several spellings (made before)
        return {g for info in await self._live_proven([tenant_id, "*"]) if same_person(info.approver, approver) for g in info.groups}

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
    """The in-memory twin's part: with a `token_seal` it signs and verifies as the PostgreSQL part does; else it trusts its memory."""

    token_rows: dict[str, tuple[str, TokenInfo]] = field(default_factory=dict)
    links: set[str] = field(default_factory=set)
    clock: Any = None
    token_seal: RowSeal | None = None

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
        info = _new_row(self.token_seal, token_sha256, approver, tenant_id, groups, expires_at, operator, self._now())
        self.token_rows[info.token_id] = (token_sha256, info)
        return info

    def _read(self, token_sha256: str, info: TokenInfo) -> TokenInfo:
        return _proven(self.token_seal, info, token_sha256)

    async def token(self, token_sha256: str) -> TokenInfo | None:
        """The live token with this hash, if proven."""
        found = next((self._read(h, i) for h, i in self.token_rows.values() if h == token_sha256 and self._live(i)), None)
        return None if found is None or _refused(self.token_seal, found) else found

    async def token_row(self, token_sha256: str) -> TokenInfo | None:
        """The token with this hash, live or not."""
        return next((self._read(h, i) for h, i in self.token_rows.values() if h == token_sha256), None)

    async def rotate_token(self, token_id: str, new_sha256: str, expires_at: datetime, *, reissue: bool = False) -> TokenInfo | None:
        """Revoke a live token and store its successor, if its row is proven."""
        if token_id not in self.token_rows or not self._live(self.token_rows[token_id][1]):
            return None
        h, old = self.token_rows[token_id]
        if not reissue and _refused(self.token_seal, self._read(h, old)):
            return None
        self.token_rows[token_id] = (h, replace(old, revoked_at=self._now()))
        return self._store(new_sha256, person(old.approver), old.tenant_id, old.groups, expires_at, old.operator)

    def _live_proven(self, tenant_ids: Sequence[str]) -> list[TokenInfo]:
        found = [self._read(h, i) for h, i in self.token_rows.values() if i.tenant_id in tenant_ids and self._live(i)]
        return [info for info in found if not _refused(self.token_seal, info)]

    async def is_registered(self, approver: str, tenant_id: str) -> bool:
        """Whether `approver` holds a live, proven token of exactly this tenant."""
        return any(same_person(i.approver, approver) for i in self._live_proven([tenant_id]))

    async def tokens(self) -> list[TokenInfo]:
        """Every token."""
        return [self._read(h, info) for h, info in self.token_rows.values()]

    async def pin_revocations(self) -> int:
        """The twin publishes no records."""
        return 0

    async def write_revocations(self) -> int:
        """The twin writes each revocation at once."""
        return 0

    async def revoke_token(self, token_id: str) -> bool:
        """Revoke a token."""
        if token_id not in self.token_rows or self.token_rows[token_id][1].revoked_at is not None:
            return False
        h, info = self.token_rows[token_id]
        self.token_rows[token_id] = (h, replace(info, revoked_at=self._now()))
        return True

    async def groups_of(self, approver: str, tenant_id: str) -> set[str]:
        """Union of the groups of an approver's live, proven tokens in a tenant."""
        return {g for info in self._live_proven([tenant_id, "*"]) if same_person(info.approver, approver) for g in info.groups}

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
        return self.clock() if self.clock is not None else utcnow()

    def _live(self, info: TokenInfo) -> bool:
        return info.revoked_at is None and (info.expires_at is None or info.expires_at > self._now())
