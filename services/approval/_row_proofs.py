"""Proof on the approval schema's rows that grant authority: a signature by a key the database does not hold.

The service's database login can insert and alter any row of its schema, but it cannot sign. So a row
that authenticates a person (an approver token) or counts toward a decision (an approval already given)
carries an Ed25519 signature over what it grants, made by whoever rightfully wrote it, and is verified
each time it is read as authority. Signatures are checked against the deployment's public keys
(`servicekit.authority.Authority`), so what a key signed before `tidegate keys rotate` still verifies
(its public key is kept, retired), while a denied operator's key (`tidegate keys deny-operator`) proves
nothing any more. A row that fails is refused, logged and counted (`tidegate_rows_refused_total`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from schemas import canonical_json
from servicekit import SigningKey
from servicekit.authority import OPERATOR, Principal
from servicekit.metrics import observe_row_refused
from servicekit.signing import unb64url, verifies

if TYPE_CHECKING:
    from connectors import Vault

__all__ = ["KeyHolders", "Proof", "RowSeal", "Seals", "approval_seals", "micros", "operator_or_service", "service_only"]

log = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def micros(at: datetime) -> int:
    """`at` as whole microseconds since the epoch: what a signature covers of a time, the same read back from PostgreSQL."""
    return (at - _EPOCH) // timedelta(microseconds=1)


class KeyHolders(Protocol):
    """Who holds a public key, by key id (`servicekit.authority.Authority` is one)."""

    def principals(self, key_id: str) -> list[Principal]:
        """Holders of `key_id`; empty when it is not trusted."""
        ...


@dataclass(frozen=True)
class Proof:
    """A row's proof: the id of the key that signed it and the signature (base64url)."""

    key_id: str
    signature: str


@functools.lru_cache(maxsize=8192)
def _verifies(public_raw: bytes, signature: str, message: bytes) -> bool:
    """A signature check, remembered by content: a token is read on every API call, and its row rarely changes."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        return verifies(Ed25519PublicKey.from_public_bytes(public_raw), unb64url(signature), message)
    except ValueError:
        return False


@dataclass(frozen=True)
class RowSeal:
    """Signs the rows of one kind that this process writes, and verifies those it reads.

    `domain` keeps the signatures of one kind of row apart from every other thing the same key signs.
    `signer`: the key this process writes with (None: it writes none of these rows). `holders`: whose keys are
    trusted (None: none, every row is refused). `may_sign(principal, claims)`: whether that holder may have
    written a row with these claims (an operator any token; the service no operator token).
    """

    table: str
    domain: bytes
    signer: SigningKey | None = None
    holders: KeyHolders | None = None
    may_sign: Callable[[Principal, dict[str, Any]], bool] = lambda principal, claims: False

    def message(self, claims: dict[str, Any]) -> bytes:
        """The bytes a row's signature covers: the domain, then the canonical JSON of its claims."""
        return self.domain + canonical_json(claims)

    def sign(self, claims: dict[str, Any]) -> Proof:
        """This process's proof of a row it writes; RuntimeError when it holds no key to write such rows with."""
        if self.signer is None:
            raise RuntimeError(f"{self.table}: this process holds no key to sign these rows with")
        key_id = self.signer.key_id  # read first: the signature matches the id beside it, across a rotation
        return Proof(key_id, self.signer.sign(self.message(claims)))

    def why_not(self, claims: dict[str, Any], key_id: str | None, signature: str | None) -> str | None:
        """Why a row with these claims and this proof grants nothing (None: it is proven)."""
        if not key_id or not signature:
            return "unsigned"
        holders = self.holders.principals(key_id) if self.holders is not None else []
        if not holders:
            return f"signed by key {key_id}, which is not trusted"
        message = self.message(claims)
        signers = [p for p in holders if _verifies(p.public.public_bytes_raw(), signature, message)]
        if not signers:
            return f"its signature by {key_id} does not verify (the row was changed after it was signed)"
        if not any(self.may_sign(p, claims) for p in signers):
            who = ", ".join(f"{p.kind} {p.name}" for p in signers)
            return f"{who} may not sign it"
        return None

    def refused(self, what: str, why: str, fix: str) -> None:
        """Tell the operator a row was refused: one log line naming it and how to mend it, and the metric."""
        log.warning("approval: %s refused: %s; %s", what, why, fix)
        observe_row_refused("approval", self.table, "unsigned" if why == "unsigned" else "invalid")


def operator_or_service(*, service_may: Callable[[dict[str, Any]], bool]) -> Callable[[Principal, dict[str, Any]], bool]:
    """A `may_sign` for rows an operator writes (any) or the approval service writes (when `service_may` says so).

    An operator's key that was denied (retired without grace) proves nothing any more: its holder could sign
    anything with it. A rotated key (retired with grace) had its private key deleted, so what it signed stands.
    """

    def may_sign(principal: Principal, claims: dict[str, Any]) -> bool:
        if principal.kind == OPERATOR:
            return principal.retired_at is None or principal.grace
        return principal.kind == "service" and principal.name == "approval" and service_may(claims)

    return may_sign


def service_only(principal: Principal, claims: dict[str, Any]) -> bool:
    """A `may_sign` for rows only the approval service writes."""
    return principal.kind == "service" and principal.name == "approval"


TOKEN_DOMAIN = b"tidegate-approver-token\n"
BALLOT_DOMAIN = b"tidegate-approval-ballot\n"
ENDPOINT_DOMAIN = b"tidegate-webhook-endpoint\n"


def _service_may_mint(claims: dict[str, Any]) -> bool:
    """The service mints a tenant's tokens only (an approver's rotation of their own): never an operator token."""
    return not claims.get("operator") and claims.get("tenant_id") != "*"


@dataclass(frozen=True)
class Seals:
    """The seals of the approval schema's rows that grant: approver tokens, approvals already given (ballots), webhook endpoints.

    `vault` seals and opens endpoints' secrets (`services.approval._endpoint_rows`); None: none is written nor opened here.
    """

    tokens: RowSeal
    ballots: RowSeal
    endpoints: RowSeal
    vault: Vault | None = None


def approval_seals(
    holders: KeyHolders | None,
    *,
    service_key: SigningKey | None = None,
    operator_key: SigningKey | None = None,
    vault: Vault | None = None,
) -> Seals:
    """The seals a process uses: the service signs with its own key; the operator's CLI signs tokens with the operator's.

    `holders` None (and no key): a store that writes nothing and trusts no row, what a repository gets by default.
    Endpoints are signed by the service (its API) or an operator; their secrets sealed with `vault` (the service's).
    """
    return Seals(
        tokens=RowSeal(
            "approver_tokens", TOKEN_DOMAIN, operator_key or service_key, holders, operator_or_service(service_may=_service_may_mint)
        ),
        ballots=RowSeal("approvals", BALLOT_DOMAIN, service_key, holders, service_only),
        endpoints=RowSeal(
            "webhook_endpoints", ENDPOINT_DOMAIN, operator_key or service_key, holders, operator_or_service(service_may=lambda claims: True)
        ),
        vault=vault,
    )
