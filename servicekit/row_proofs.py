"""Proof on a service's rows that grant authority: a signature by a key the database does not hold.

A service's own database login can insert and alter any row of its schema, but it cannot sign. So a row that
grants (an approver token, a counted approval, a webhook endpoint, a payee the policy knows, a connector grant, an
undo plan) carries an Ed25519 signature over the canonical bytes of what it grants, made by whoever rightfully
wrote it with a key of the deployment, and is verified each time it is read as authority against the deployment's
public keys (`servicekit.authority.Authority`, or one service's own keys: `ServiceKeys`). A key retired by
`tidegate keys rotate` keeps its public key, so what it signed still verifies; whether a retired or denied holder
still counts is each seal's `may_sign`. Signature checks are remembered by content (public key, signature, bytes).
A row that fails is refused: one log line naming it and how to mend it, and `tidegate_rows_refused_total{service,table}`.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from schemas import canonical_json
from servicekit.authority import OPERATOR, Principal
from servicekit.metrics import observe_row_refused
from servicekit.signing import SigningKey, key_id_of, load_public, retired_at, unb64url, verifies

__all__ = [
    "ALTERED",
    "NOT_ALLOWED",
    "UNKNOWN_KEY",
    "UNSIGNED",
    "KeyHolders",
    "Proof",
    "RowSeal",
    "ServiceKeys",
    "Unproven",
    "any_holder",
    "operator_named",
    "operator_not_denied",
    "row_refused",
]

log = logging.getLogger(__name__)

# Why a row's proof grants nothing (`Unproven.reason`).
UNSIGNED = "unsigned"  # no key id or no signature: a row from before its table was signed, or one the login inserted
UNKNOWN_KEY = "unknown_key"  # signed by a key the deployment does not trust (for this row)
ALTERED = "altered"  # no trusted holder's signature over these bytes: the row was changed after it was signed
NOT_ALLOWED = "not_allowed"  # the signature holds, but its holder may not sign such a row (a denied operator, another service)

_CHECKS_KEPT = 16_384  # signature checks remembered (the oldest used goes first)
_TOLD_KEPT = 65_536  # rows remembered as already logged, for seals that log a row once


class KeyHolders(Protocol):
    """Who holds a public key, by key id (`servicekit.authority.Authority` and `ServiceKeys` are such)."""

    def principals(self, key_id: str) -> list[Principal]:
        """Holders of `key_id`; empty when it is not trusted."""
        ...


@dataclass(frozen=True)
class Proof:
    """A row's proof as stored beside it: the id of the key that signed it and the signature (base64url)."""

    key_id: str
    signature: str


@dataclass(frozen=True)
class Unproven:
    """Why a row grants nothing: `reason` (`UNSIGNED`, `UNKNOWN_KEY`, `ALTERED`, `NOT_ALLOWED`), said for the operator in `why`.

    `signers`: the holders whose signature held, when the reason is `NOT_ALLOWED`.
    """

    reason: str
    why: str
    signers: tuple[Principal, ...] = ()

    @property
    def counted_as(self) -> str:
        """The `reason` label of `tidegate_rows_refused_total`: `unsigned` or `invalid`."""
        return "unsigned" if self.reason == UNSIGNED else "invalid"


@functools.lru_cache(maxsize=_CHECKS_KEPT)
def _verifies(public_raw: bytes, signature: str, message: bytes) -> bool:
    """A signature check, remembered by content: a row is read on every use, and rarely changes."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        return verifies(Ed25519PublicKey.from_public_bytes(public_raw), unb64url(signature), message)
    except ValueError:  # not base64url
        return False


def any_holder(principal: Principal, claims: dict[str, Any]) -> bool:
    """A `trusts` or `may_sign` that lets every holder count."""
    return True


def operator_named(field: str) -> Callable[[Principal, dict[str, Any]], bool]:
    """A `trusts` for rows an operator signs: only the key of the operator the claims name (`claims[field]`) counts.

    Whoever else holds a key of that id (another operator, a service) proves nothing for such a row.
    """

    def named(principal: Principal, claims: dict[str, Any]) -> bool:
        return principal.kind == OPERATOR and principal.name == claims[field]

    return named


def operator_not_denied(principal: Principal, claims: dict[str, Any]) -> bool:
    """A `may_sign` for rows an operator signs: not by a key taken away (`tidegate keys deny-operator`).

    Such a row carries no time its signer could not have chosen, so a denied key (retired without grace) proves none of
    them; a rotated key (retired with grace, its private key deleted) still proves what it signed.
    """
    return principal.retired_at is None or principal.grace


def row_refused(service: str, table: str, what: str, why: str, fix: str, *, counted_as: str) -> None:
    """Tell the operator that a row of `service`'s `table` was refused: one log line naming it and how to mend it, and the metric."""
    log.warning("%s: %s refused: %s; %s", service, what, why, fix)
    observe_row_refused(service, table, counted_as)


@dataclass(frozen=True)
class RowSeal:
    """Signs the rows of one table that this process writes, and verifies those it reads.

    `service`, `table`: whose rows (the metric's labels). `domain`: what the bytes are, so the signatures of one kind
    of row are never taken for anything else the same key signs; the signed bytes are `domain + encode(claims)`
    (canonical JSON by default). `signer`: the key this process writes with (None: it writes none of these rows).
    `holders`: whose keys are trusted (None: none, every row is refused). `trusts(principal, claims)`: whether that
    holder's key counts for such a row at all, before its signature is checked (default: every holder).
    `may_sign(principal, claims)`: whether a holder whose signature holds may have written a row with these claims
    (an operator not denied; the service itself only for some rows). `log_once`: log a refused row once, not at
    every read (it is still counted at every read).
    """

    service: str
    table: str
    domain: bytes
    signer: SigningKey | None = None
    holders: KeyHolders | None = None
    may_sign: Callable[[Principal, dict[str, Any]], bool] = lambda principal, claims: False
    trusts: Callable[[Principal, dict[str, Any]], bool] = any_holder
    encode: Callable[[dict[str, Any]], bytes] = canonical_json
    log_once: bool = False
    _told: dict[Hashable, None] = field(default_factory=dict, init=False, repr=False, compare=False)

    def message(self, claims: dict[str, Any]) -> bytes:
        """The bytes a row's signature covers: the domain, then its claims encoded."""
        return self.domain + self.encode(claims)

    def sign(self, claims: dict[str, Any] | Callable[[str], dict[str, Any]]) -> Proof:
        """This process's proof of a row it writes; RuntimeError when it holds no key to write such rows with.

        `claims` may be a function of the signing key's id, for a row whose claims name the key that signs them.
        """
        if self.signer is None:
            raise RuntimeError(f"{self.table}: this process holds no key to sign these rows with")
        key_id = self.signer.key_id  # read first: the signature matches the id beside it, across a rotation
        return Proof(key_id, self.signer.sign(self.message(claims(key_id) if callable(claims) else claims)))

    def check(self, claims: dict[str, Any], key_id: str | None, signature: str | None) -> Unproven | None:
        """Why a row with these claims and this proof grants nothing (None: it is proven)."""
        if not key_id or not signature:
            return Unproven(UNSIGNED, "unsigned")
        holders = [p for p in (self.holders.principals(key_id) if self.holders is not None else []) if self.trusts(p, claims)]
        if not holders:
            return Unproven(UNKNOWN_KEY, f"signed by key {key_id}, which is not trusted")
        message = self.message(claims)
        signers = tuple(p for p in holders if _verifies(p.public.public_bytes_raw(), signature, message))
        if not signers:
            return Unproven(ALTERED, f"its signature by {key_id} does not verify (the row was changed after it was signed)")
        if not any(self.may_sign(p, claims) for p in signers):
            who = ", ".join(f"{p.kind} {p.name}" for p in signers)
            return Unproven(NOT_ALLOWED, f"{who} may not sign it", signers)
        return None

    def why_not(self, claims: dict[str, Any], key_id: str | None, signature: str | None) -> str | None:
        """Why a row with these claims and this proof grants nothing, for the operator (None: it is proven)."""
        unproven = self.check(claims, key_id, signature)
        return None if unproven is None else unproven.why

    def refused(self, what: str, why: str, fix: str, *, counted_as: str | None = None, row: Hashable = None) -> None:
        """Tell the operator a row was refused (`row_refused`); with `log_once`, the line only the first time `row` is.

        `counted_as`: the metric's reason (default: `unsigned` when `why` is, else `invalid`).
        """
        counted = counted_as or ("unsigned" if why == UNSIGNED else "invalid")
        key = (what, why) if row is None else row
        if self.log_once and key in self._told:
            observe_row_refused(self.service, self.table, counted)
            return
        if self.log_once:
            if len(self._told) >= _TOLD_KEPT:
                del self._told[next(iter(self._told))]
            self._told[key] = None
        row_refused(self.service, self.table, what, why, fix, counted_as=counted)


class ServiceKeys:
    """One service's own public keys (`<name>.pub` and the retired `<name>.<hash>.pub` in `keys_dir`), as `KeyHolders`.

    What a seal that trusts only its own service reads: the keys directory is read at start and again when an
    unknown key id arrives, at most every `reload_s` (a forged id must not read the disk each time), so a key
    rotated since start is found. `signer`'s current key is always known, without reading the disk.
    """

    def __init__(
        self,
        keys_dir: Path,
        name: str,
        *,
        signer: SigningKey | None = None,
        reload_s: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._keys_dir, self._name, self._signer = keys_dir, name, signer
        self._reload_s, self._monotonic = reload_s, monotonic
        self._keys = self._load()
        self._loaded_at = monotonic()

    def _load(self) -> dict[str, Principal]:
        keys: dict[str, Principal] = {}
        for path in sorted([self._keys_dir / f"{self._name}.pub", *self._keys_dir.glob(f"{self._name}.*.pub")]):
            public = load_public(path) if path.exists() else None
            if public is not None:
                keys[key_id_of(self._name, public)] = Principal("service", self._name, public, retired_at=retired_at(path))
        return keys

    def principals(self, key_id: str) -> list[Principal]:
        """The service's key with this id (current, retired, or the signer's own), or none."""
        if self._signer is not None and key_id == self._signer.key_id and key_id not in self._keys:
            self._keys[key_id] = Principal("service", self._name, self._signer.private.public_key())
        if key_id not in self._keys and self._monotonic() - self._loaded_at >= self._reload_s:
            self._keys, self._loaded_at = self._load(), self._monotonic()  # rotated since start: the retired key is there now
        principal = self._keys.get(key_id)
        return [] if principal is None else [principal]
