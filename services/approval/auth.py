"""Approver credentials: API tokens (stored hashed) and signed one-time links. Pure functions.

A token is shown once, when created; only its SHA-256 is stored, so a database dump reveals no
usable token. A one-time link carries its claims (approval, approver, expiry, a fresh link id)
signed with the approval service's Ed25519 key; it is spent the first time a decision is taken
with it (the link id is recorded), so a forwarded or replayed link is refused.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, ValidationError

from servicekit import SigningKey
from servicekit.signing import b64url, key_id_of, unb64url

__all__ = ["LINK_PREFIX", "TOKEN_PREFIX", "LinkClaims", "LinkError", "hash_token", "issue_link", "link_signer", "new_token", "verify_link"]

TOKEN_PREFIX = "tga_"
LINK_PREFIX = "tgl."
_LINK_DOMAIN = b"tidegate-approval-link\n"  # keeps link signatures apart from decision signatures made with the same key


def new_token() -> str:
    """A fresh approver API token (256 bits of randomness)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """What is stored for a token: its SHA-256, hex."""
    return hashlib.sha256(token.encode()).hexdigest()


class LinkClaims(BaseModel):
    """What a one-time link asserts: this approver may decide this approval until `exp`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    link_id: str
    approval_id: str
    approver: str
    tenant_id: str
    exp: int


class LinkError(ValueError):
    """A link that is malformed, forged or expired."""


def issue_link(key: SigningKey, *, approval_id: str, approver: str, tenant_id: str, expires_at: datetime) -> str:
    """A one-time link token for `approver` on `approval_id`, valid until `expires_at`."""
    claims = LinkClaims(
        link_id=secrets.token_urlsafe(12), approval_id=approval_id, approver=approver, tenant_id=tenant_id, exp=int(expires_at.timestamp())
    )
    payload = json.dumps(claims.model_dump(), sort_keys=True, separators=(",", ":")).encode()
    return f"{LINK_PREFIX}{b64url(payload)}.{key.sign(_LINK_DOMAIN + payload)}"


def verify_link(
    key: SigningKey,
    token: str,
    *,
    now: datetime | None = None,
    retired: Sequence[Ed25519PublicKey] = (),
    past_grace: Sequence[Ed25519PublicKey] = (),
) -> LinkClaims:
    """The claims of a genuine, unexpired link; raises LinkError otherwise (single use is checked by the caller).

    `retired`: the service's keys `tidegate keys rotate approval` retired that are still within their grace
    (`Authority.service_keys_in_grace`): a link sent to a chat before the rotation opens until then, as events do.
    `past_grace`: those whose grace has ended; a link one of them signed opens nothing either, but is refused saying so
    and what the approver does instead, not as a link whose signature is not valid (which reads as forged).
    """
    if not token.startswith(LINK_PREFIX) or token.count(".") != 2:
        raise LinkError("not a one-time link")
    _, body, signature = token.split(".")
    old_key = False
    try:
        payload = unb64url(body)
        signed = unb64url(signature)
        if not any(_verifies(public, signed, _LINK_DOMAIN + payload) for public in (key.private.public_key(), *retired)):
            old_key = any(_verifies(public, signed, _LINK_DOMAIN + payload) for public in past_grace)
            raise InvalidSignature
        claims = LinkClaims.model_validate_json(payload)
    except (InvalidSignature, ValueError, ValidationError) as exc:
        if old_key:
            raise LinkError(
                "the link was sent before the approval service's key was rotated (`tidegate keys rotate approval`) and that "
                "key's grace has ended, so it opens nothing: open the request signed in with your API token (the message's "
                "page_url without the link, or `tidegate approvals show`), or use the link of a later message"
            ) from exc
        raise LinkError("the link's signature is not valid") from exc
    if (now or datetime.now(UTC)).timestamp() >= claims.exp:
        raise LinkError("the link has expired")
    return claims


def link_signer(key: SigningKey, token: str, retired: Sequence[Ed25519PublicKey] = ()) -> str | None:
    """The id of the approval service key that signed a link `verify_link` accepted (the current key's, or a retired one's)."""
    _, body, signature = token.split(".")
    payload, signed = unb64url(body), unb64url(signature)
    if _verifies(key.private.public_key(), signed, _LINK_DOMAIN + payload):
        return key.key_id
    return next((key_id_of(key.name, public) for public in retired if _verifies(public, signed, _LINK_DOMAIN + payload)), None)


def _verifies(public: Ed25519PublicKey, signature: bytes, message: bytes) -> bool:
    try:
        public.verify(signature, message)
    except InvalidSignature:
        return False
    return True
