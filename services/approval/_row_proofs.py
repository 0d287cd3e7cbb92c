"""The approval schema's rows that grant authority, and the seals that prove them (`servicekit.row_proofs`).

An approver token authenticates a person, an approval already given counts toward a decision, a webhook endpoint says
where messages go and who decides through it: each row carries an Ed25519 signature over what it grants, made by
whoever rightfully wrote it (the service, or an operator's CLI), and is verified each time it is read as authority
against the deployment's public keys (`servicekit.authority.Authority`), so what a key signed before `tidegate keys
rotate` still verifies (its public key is kept, retired), while a denied operator's key (`tidegate keys
deny-operator`) proves nothing any more. A row that fails is refused, logged and counted (`tidegate_rows_refused_total`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from servicekit import SigningKey
from servicekit.authority import OPERATOR, Principal
from servicekit.row_proofs import KeyHolders, Proof, RowSeal, operator_not_denied
from servicekit.vault import Vault
from services.approval._pins import RowPins

__all__ = ["KeyHolders", "Proof", "RowSeal", "Seals", "approval_seals", "micros", "operator_or_service", "service_only"]

_SERVICE = "approval"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def micros(at: datetime) -> int:
    """`at` as whole microseconds since the epoch: what a signature covers of a time, the same read back from PostgreSQL."""
    return (at - _EPOCH) // timedelta(microseconds=1)


def operator_or_service(*, service_may: Callable[[dict[str, Any]], bool]) -> Callable[[Principal, dict[str, Any]], bool]:
    """A `may_sign` for rows an operator writes (any) or the approval service writes (when `service_may` says so).

    An operator's key that was denied (retired without grace) proves nothing any more: its holder could sign
    anything with it. A rotated key (retired with grace) had its private key deleted, so what it signed stands.
    """

    def may_sign(principal: Principal, claims: dict[str, Any]) -> bool:
        if principal.kind == OPERATOR:
            return operator_not_denied(principal, claims)
        return principal.kind == "service" and principal.name == _SERVICE and service_may(claims)

    return may_sign


def service_only(principal: Principal, claims: dict[str, Any]) -> bool:
    """A `may_sign` for rows only the approval service writes."""
    return principal.kind == "service" and principal.name == _SERVICE


TOKEN_DOMAIN = b"tidegate-approver-token\n"
BALLOT_DOMAIN = b"tidegate-approval-ballot\n"
ENDPOINT_DOMAIN = b"tidegate-webhook-endpoint\n"
MESSAGE_DOMAIN = b"tidegate-webhook-message\n"


def _service_may_mint(claims: dict[str, Any]) -> bool:
    """The service mints a tenant's tokens only (an approver's rotation of their own): never an operator token."""
    return not claims.get("operator") and claims.get("tenant_id") != "*"


@dataclass(frozen=True)
class Seals:
    """The seals of the approval schema's rows that grant, and of the webhook messages it queues.

    Approver tokens, approvals already given (ballots), webhook endpoints; `messages`: each queued webhook message
    (what a receiver takes as the service's own, signed with the endpoint's secret when it is sent).

    `vault` seals and opens endpoints' secrets (`services.approval._endpoint_rows`); None: none is written nor opened here.
    `pins`: the `directory` records that say which endpoint row is current and which tokens are revoked
    (`services.approval._pins`); None: none is checked nor published (a store of a test's own, an older tool).
    """

    tokens: RowSeal
    ballots: RowSeal
    endpoints: RowSeal
    messages: RowSeal
    vault: Vault | None = None
    pins: RowPins | None = None


def approval_seals(
    holders: KeyHolders | None,
    *,
    service_key: SigningKey | None = None,
    operator_key: SigningKey | None = None,
    vault: Vault | None = None,
    pins: RowPins | None = None,
) -> Seals:
    """The seals a process uses: the service signs with its own key; the operator's CLI signs tokens with the operator's.

    `holders` None (and no key): a store that writes nothing and trusts no row, what a repository gets by default.
    Endpoints are signed by the service (its API) or an operator; their secrets sealed with `vault` (the service's).
    """
    return Seals(
        tokens=RowSeal(
            _SERVICE,
            "approver_tokens",
            TOKEN_DOMAIN,
            operator_key or service_key,
            holders,
            operator_or_service(service_may=_service_may_mint),
        ),
        # a request is read at every listing: a dropped approval is told once, counted at each read
        ballots=RowSeal(_SERVICE, "approvals", BALLOT_DOMAIN, service_key, holders, service_only, log_once=True),
        endpoints=RowSeal(
            _SERVICE,
            "webhook_endpoints",
            ENDPOINT_DOMAIN,
            operator_key or service_key,
            holders,
            operator_or_service(service_may=lambda claims: True),
        ),
        # a message is read at each attempt: a refused one is told once, counted at each
        messages=RowSeal(_SERVICE, "webhook_deliveries", MESSAGE_DOMAIN, service_key, holders, service_only, log_once=True),
        vault=vault,
        pins=pins,
    )
