"""Who calls the approval service: an API token or a one-time link made a `Session`, a token rotated, who may decide what.

Part of `ApprovalService` (`services.approval.service` composes it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from schemas import ApprovalCredential
from services.approval import auth, domain
from services.approval._groups_counted import counted_groups, disagreement
from services.approval._service_base import ServiceBase, log
from services.approval.domain import ApprovalRecord, Approver, Refusal
from services.approval.repository import TokenInfo

__all__ = ["AuthError", "People", "Session"]


UNKNOWN = "unknown, revoked or expired token"  # what a token no row holds (a typo, a guess) is told


def _utc(at: datetime) -> str:
    """`at` as the page and the CLI show times: `2026-12-07 21:03 UTC`."""
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


class AuthError(Exception):
    """A credential that does not authenticate anyone (HTTP 401)."""


@dataclass(frozen=True)
class Session:
    """An authenticated caller: the approver and, for a one-time link, its claims (for a token, its id)."""

    approver: Approver
    link: auth.LinkClaims | None = None
    token_id: str | None = None
    token_lifetime: timedelta | None = None
    """For a token: how long it was made to live (`expires_at - created_at`); a rotation gives its successor no longer."""


class People(ServiceBase):
    """Credentials made sessions, a token rotated, and who may decide a request (the groups the policy counts)."""

    async def authenticate(self, credential: str | None) -> Session:
        """The caller behind an API token or a one-time link; raises AuthError."""
        if not credential:
            raise AuthError("no credential: send `Authorization: Bearer <token>` (or open your one-time link)")
        if credential.startswith(auth.LINK_PREFIX):
            try:
                now = self.clock()
                retired = [] if self.authority is None else self.authority.service_keys_in_grace("approval", now.timestamp())
                ended = [] if self.authority is None else self.authority.service_keys_past_grace("approval", now.timestamp())
                claims = auth.verify_link(self.key, credential, now=now, retired=retired, past_grace=ended)
            except auth.LinkError as exc:
                raise AuthError(str(exc)) from exc
            groups = await self.repo.groups_of(claims.approver, claims.tenant_id)
            if not groups:  # revoked or expired since the message went out: the link dies with the person's tokens
                raise AuthError("the link's approver holds no live token in its tenant any more")
            proof = ApprovalCredential(kind="link", id=claims.link_id, issued_by=auth.link_signer(self.key, credential, retired))
            who = Approver(approver=claims.approver, tenant_id=claims.tenant_id, groups=frozenset(groups), via="link", credential=proof)
            return Session(who, claims)
        info = await self.repo.token(auth.hash_token(credential))
        # The store judges a token's life at the database's clock; it is judged at this service's too (the later of its
        # host's and the broker's): a database whose clock is behind kept an expired token valid that much longer.
        if info is None or (info.expires_at is not None and info.expires_at <= self.clock()):
            raise AuthError(await self._why_not_live(credential))
        proof = ApprovalCredential(
            kind="api_token", id=info.token_id, issued_by=info.key_id, issued_at=info.created_at, operator=info.operator
        )
        who = Approver(
            approver=info.approver, tenant_id=info.tenant_id, groups=frozenset(info.groups), operator=info.operator, credential=proof
        )
        lifetime = info.expires_at - info.created_at if info.expires_at is not None else None
        return Session(who, token_id=info.token_id, token_lifetime=lifetime)

    async def _why_not_live(self, token: str) -> str:
        """Why a token signs nobody in, told to whoever holds it: replaced, revoked or expired, and when.

        Bob's page said "unknown, revoked or expired token" after his token was rotated: a typo or a rotation? Only a
        token once made matches a row (a guess never does: a token is 256 random bits), so a guesser still reads
        `UNKNOWN`, and its holder learns when it ended, never whose it was, its tenant, nor anything of the new one.
        """
        ended = await self.repo.token_row(auth.hash_token(token))
        if ended is None or ended.unproven is not None:
            return UNKNOWN
        if ended.revoked_at is not None:
            if await self.repo.is_registered(ended.approver, ended.tenant_id):  # its approver holds a newer one: rotated
                return f"this token was replaced at {_utc(ended.revoked_at)}; use the new one, or ask whoever gave you this one for it"
            return f"this token was revoked at {_utc(ended.revoked_at)}; ask your tenant's admin for a new one"
        if ended.expires_at is not None and ended.expires_at <= self.clock():
            return f"this token expired at {_utc(ended.expires_at)}; ask your tenant's admin for a new one"
        return UNKNOWN

    async def rotate_token(self, session: Session, ttl_days: float | None = None) -> tuple[str, TokenInfo] | Refusal | None:
        """A new token for the caller's own token (same approver, tenant, groups); the old one is revoked at once.

        The new token lives at most as long as the one it replaces was made to live (by default the setting's
        lifetime, or that one's if shorter): a token, stolen or not, is never widened over HTTP; a longer one is
        the operator's (`tidegate approvals token create`). None: the caller is not a token.
        """
        if session.token_id is None:
            return None
        if session.approver.operator:  # the service signs a tenant's tokens only: an operator token is the operator key's
            return Refusal(
                code="operator_token",
                status=403,
                message="an operator token is rotated by the operator: `tidegate approvals token rotate <token id>`",
            )
        lifetime = timedelta(days=self.settings.token_ttl_days) if ttl_days is None else timedelta(days=ttl_days)
        if session.token_lifetime is not None:
            if ttl_days is not None and lifetime > session.token_lifetime + timedelta(seconds=1):
                most = session.token_lifetime / timedelta(days=1)
                return Refusal(
                    code="lifetime_too_long",
                    status=422,
                    message=f"a rotated token lives at most as long as the one it replaces ({most:g} days); an operator makes longer ones",
                )
            lifetime = min(lifetime, session.token_lifetime)
        token = auth.new_token()
        expires_at = self.issued_now() + lifetime
        info = await self.repo.rotate_token(session.token_id, auth.hash_token(token), expires_at)
        return (token, info) if info is not None else None

    def access(self, record: ApprovalRecord, who: Approver, *, rejecting: bool = False) -> Refusal | None:
        """`domain.check_access` with this service's groups file and the groups the tenant's settings count (`counted`)."""
        return domain.check_access(record, who, self.groups, rejecting=rejecting, counted=self.counted(record))

    def counted(self, record: ApprovalRecord) -> frozenset[str]:
        """The groups whose approvals of `record` the policy counts (empty: anyone's); a disagreement with the groups file is told once."""
        counted = counted_groups(self.control, record.tenant_id, record.risk)
        told = disagreement(self.groups, record.tenant_id, record.risk, counted)
        if told is not None and told not in self._disagreements_told:
            self._disagreements_told.add(told)
            log.warning("%s", told)
        return counted

    async def link_spent(self, session: Session) -> bool:
        """Whether the session's one-time link is spent, read from the store: by this replica or any other on its database."""
        return session.link is not None and await self.repo.link_spent(session.link.link_id)
