"""An operator's signature over a whole connector grant: what makes a row of `executor.connector_grants` trusted.

The executor's database login may write the grants it reads, so nothing in the row is believed on its own:
`tidegate connectors` signs the canonical grant (tenant, connector, enabled, every tool, every account setting,
the sealed credential's key id and SHA-256) with the operator's Ed25519 key, and the executor verifies it
against the operators' allow-list on disk (`Authority`, `TIDEGATE_OPERATOR_KEYS_DIR`) before it opens the
credential. A re-pointed `base_url`, an added tool, or a credential swapped in from elsewhere no longer verifies;
the call is refused before anything leaves the process. The signing and the check are the kit's row seal
(`servicekit.row_proofs.RowSeal`), as for every row that grants; the bytes are this module's (`grant_message`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from connectors._store import Grant, GrantProof
from servicekit.authority import Authority
from servicekit.row_proofs import NOT_ALLOWED, UNKNOWN_KEY, UNSIGNED, RowSeal, operator_named, operator_not_denied
from servicekit.signing import SigningKey

__all__ = [
    "GRANT_ROLLED_BACK",
    "GRANT_TAMPERED",
    "GRANT_UNPINNED",
    "GRANT_UNSIGNED",
    "GrantRefused",
    "GrantSigner",
    "GrantVerifier",
    "Pins",
    "grant_claims",
    "grant_digest",
    "grant_message",
]

# No signature of a trusted operator: a row from before grants were signed, or signed by an operator since denied.
# An operator may check such a row and sign it (`tidegate connectors sign`).
GRANT_UNSIGNED = "grant_unsigned"
# A signature that does not hold: the row was changed after it was signed, or it is not an operator's key. Reset, never signed over.
GRANT_TAMPERED = "grant_tampered"
# Signed and intact, but not the grant an operator made current last on `control`: an older row put back.
GRANT_ROLLED_BACK = "grant_rolled_back"
# Signed and intact, but no `control` record names any grant of (tenant, connector), where the executor requires one.
GRANT_UNPINNED = "grant_unpinned"
_DOMAIN = b"tidegate/connector-grant/v1\n"  # what the bytes are: a grant's signature is never anything else's


class GrantRefused(Exception):
    """A grant the executor does not trust, with its code (`grant_unsigned`, `grant_tampered`) and why, for the operator."""

    def __init__(self, code: str, why: str) -> None:
        super().__init__(why)
        self.code = code


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def grant_claims(grant: Grant, proof: GrantProof) -> dict[str, Any]:
    """What an operator signs of `grant`: all of it, and who signs, with which key, when (not the signature)."""
    sealed = grant.sealed
    credential = None if sealed is None else {"key_id": sealed.key_id, "sha256": hashlib.sha256(sealed.ciphertext).hexdigest()}
    return {
        "tenant_id": grant.tenant_id,
        "connector": grant.connector,
        "enabled": grant.enabled,
        "tools": sorted(grant.tools),
        "connection": grant.connection,
        "credential": credential,
        "key_id": proof.key_id,
        "signed_by": proof.signed_by,
        "signed_at": _ts(proof.signed_at),
    }


def _seal(authority: Authority | None = None, key: SigningKey | None = None) -> RowSeal:
    return RowSeal("executor", "connector_grants", _DOMAIN, key, authority, operator_not_denied, operator_named("signed_by"))


def grant_message(grant: Grant, proof: GrantProof) -> bytes:
    """The bytes an operator signs for `grant`: the domain, then the canonical JSON of `grant_claims`."""
    return _seal().message(grant_claims(grant, proof))


def grant_digest(grant: Grant) -> str:
    """SHA-256 (hex) of the bytes the operator signed for `grant`: what its `control` record names. The grant must be signed."""
    assert grant.proof is not None, "only a signed grant has a digest"
    return hashlib.sha256(grant_message(grant, grant.proof)).hexdigest()


# (tenant, connector) -> the digest of the grant an operator made current last, None when no record names one.
Pins = Callable[[str, str], str | None]


@dataclass(frozen=True)
class GrantSigner:
    """An operator's key (`servicekit.operator_key`) signing each grant `tidegate connectors` writes."""

    key: SigningKey
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    def sign(self, grant: Grant) -> Grant:
        """`grant` with a fresh proof by this operator."""
        at = self.clock()
        proof = _seal(key=self.key).sign(lambda key_id: grant_claims(grant, GrantProof(key_id, "", self.key.name, at)))
        return replace(grant, proof=GrantProof(proof.key_id, proof.signature, self.key.name, at))


@dataclass(frozen=True)
class GrantVerifier:
    """Trusts a grant only under a valid signature by an operator on the allow-list whose key was not taken away.

    A key the operator rotated (`tidegate keys rotate operator`) still verifies what it signed; a key denied
    (`tidegate keys deny-operator`) does not, since a grant carries no time its signer could not have chosen:
    another operator signs those grants again (`tidegate connectors sign`).

    With `pins` (what `control` says is current), a signed grant must also be the one named there
    (`grant_rolled_back` otherwise); one no record names passes unless `require_pin` (`grant_unpinned`).
    """

    authority: Authority
    pins: Pins | None = None
    require_pin: bool = False

    def unpinned(self, grant: Grant) -> bool:
        """True when pins are checked and no `control` record names a grant of (tenant, connector) yet."""
        return self.pins is not None and self.pins(grant.tenant_id, grant.connector) is None

    def check(self, grant: Grant) -> None:
        """Return if `grant` is trusted; else raise `GrantRefused` saying why and what the operator runs."""
        where = f"the {grant.connector} grant of tenant {grant.tenant_id}"
        proof = grant.proof
        if proof is None:
            raise GrantRefused(
                GRANT_UNSIGNED,
                f"{where} carries no operator's signature (written before grants were signed, or not by `tidegate connectors`): "
                f"check it with `tidegate connectors list --tenant {grant.tenant_id}`, then "
                f"`tidegate connectors sign {grant.connector} --tenant {grant.tenant_id}`",
            )
        unproven = _seal(self.authority).check(grant_claims(grant, proof), proof.key_id, proof.signature)
        if unproven is None:
            self._check_current(grant, where)
            return
        if unproven.reason == UNKNOWN_KEY or (unproven.reason == UNSIGNED and not proof.key_id):
            raise GrantRefused(GRANT_TAMPERED, f"{where} is signed with key {proof.key_id!r}, which is no operator's on the allow-list")
        if unproven.reason == NOT_ALLOWED:
            raise GrantRefused(
                GRANT_UNSIGNED,
                f"{where} is signed by {proof.signed_by}, whose key was taken away (`tidegate keys deny-operator`): an operator "
                f"on the allow-list checks and signs it again (`tidegate connectors sign {grant.connector} --tenant {grant.tenant_id}`)",
            )
        raise GrantRefused(  # ALTERED, or an empty signature: the row was changed
            GRANT_TAMPERED,
            f"{where} does not match the signature of {proof.signed_by} ({proof.key_id}): it was changed after the operator "
            f"signed it; nothing was sent. Check it (`tidegate connectors list --tenant {grant.tenant_id}`) and write it again "
            f"(`tidegate connectors disable {grant.connector} --tenant {grant.tenant_id} --forget-credential`, then enable it)",
        )

    def _check_current(self, grant: Grant, where: str) -> None:
        if self.pins is None:
            return
        pinned = self.pins(grant.tenant_id, grant.connector)
        if pinned is None:
            if self.require_pin:
                raise GrantRefused(
                    GRANT_UNPINNED,
                    f"{where} is signed, but no operator's `control` record names it as current (a grant written before "
                    f"grants were pinned) and this executor requires one: check it (`tidegate connectors list --tenant "
                    f"{grant.tenant_id}`), then `tidegate connectors pin {grant.connector} --tenant {grant.tenant_id}`",
                )
            return
        if pinned != grant_digest(grant):
            assert grant.proof is not None
            raise GrantRefused(
                GRANT_ROLLED_BACK,
                f"{where} is signed by {grant.proof.signed_by} but is not the grant an operator made current last "
                f"(control names sha256 {pinned[:12]}…, the row is {grant_digest(grant)[:12]}…): an older grant was put back "
                "in executor.connector_grants (a restored backup, or a writer of the table); nothing was sent. Check it "
                f"(`tidegate connectors list --tenant {grant.tenant_id}`), then write the grant you want again (`tidegate "
                f"connectors enable|disable|set-credential`), or make this one current (`tidegate connectors sign "
                f"{grant.connector} --tenant {grant.tenant_id}`)",
            )
