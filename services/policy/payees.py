"""Proof that the policy itself learned a payee: a `policy.known_payees` row counts only with its policy key's signature.

A known payee lifts `new_payee_blocked`, so the row is authority, and the policy's database login can write the
table: the row carries the Ed25519 signature of the policy's signing key over (tenant, payee), a key the database
does not hold, and is checked each time a decision reads it (`servicekit.row_proofs.RowSeal`, against the policy's
own keys). A row without a valid one (forged by that login, or written before migration 012) counts as an unknown
payee: logged once per row, counted every time (`tidegate_rows_refused_total{service="policy",table="known_payees"}`).
A key retired by `tidegate keys rotate` still verifies what it signed (its public key stays in the keys directory).
Signature checks are remembered by content, so a payee known before costs no signature check per decision.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from servicekit.authority import Principal
from servicekit.row_proofs import UNSIGNED, Proof, RowSeal, ServiceKeys
from servicekit.signing import SigningKey

__all__ = ["PayeeProof", "PayeeSeal", "payee_message"]

_PURPOSE = "tidegate.policy.known_payee/1"
_RELOAD_S = 5.0  # an unknown key id reloads the keys directory at most this often (a forged id must not read the disk each time)
_FIX = (
    "counted as a new payee. The policy did not write it (or wrote it before migration 012); a payment to it that settles "
    "proves it again, or list it in the tenant's known_payees (`tidegate tenant set {tenant} --payee ...`, or its directory)"
)

PayeeProof = Proof  # a known payee's proof as stored beside it: the id of the key that signed and the signature (base64url)


def payee_message(tenant_id: str, payee: str) -> bytes:
    """What a known payee's proof signs: its purpose, tenant and payee, as JSON (unambiguous whatever the strings hold)."""
    return json.dumps([_PURPOSE, tenant_id, payee]).encode()


def _encoded(claims: dict[str, Any]) -> bytes:
    return payee_message(claims["tenant_id"], claims["payee"])


def _the_policy(principal: Principal, claims: dict[str, Any]) -> bool:
    """Any key of the policy's, current or retired: what a retired key signed was the policy's own."""
    return principal.kind == "service" and principal.name == "policy"


class PayeeSeal:
    """Signs the payees the policy learns and checks the proof of every stored one it reads."""

    def __init__(self, signer: SigningKey, keys_dir: Path, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        keys = ServiceKeys(keys_dir, signer.name, signer=signer, reload_s=_RELOAD_S, monotonic=monotonic)
        self._seal = RowSeal("policy", "known_payees", b"", signer, keys, _the_policy, encode=_encoded, log_once=True)

    def prove(self, tenant_id: str, payee: str) -> PayeeProof:
        """The proof of a payee the tenant has paid (a settled financial call)."""
        return self._seal.sign({"tenant_id": tenant_id, "payee": payee})

    def known(self, tenant_id: str, payee: str, key_id: str | None, signature: str | None) -> bool:
        """Whether a stored row proves `payee` known to `tenant_id`; a row that does not is logged (once) and counted."""
        unproven = self._seal.check({"tenant_id": tenant_id, "payee": payee}, key_id, signature)
        if unproven is None:
            return True
        why = "has no proof" if unproven.reason == UNSIGNED else f"has a proof that does not verify (key {key_id!r})"
        what = f"known payee {payee!r} of tenant {tenant_id} in policy.known_payees"
        self._seal.refused(
            what, why, _FIX.format(tenant=tenant_id), counted_as=unproven.counted_as, row=(tenant_id, payee, key_id, signature)
        )
        return False
