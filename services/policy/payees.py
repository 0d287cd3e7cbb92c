"""Proof that the policy itself learned a payee: a `policy.known_payees` row counts only with its policy key's signature.

A known payee lifts `new_payee_blocked`, so the row is authority, and the policy's database login can write the
table: the row carries the Ed25519 signature of the policy's signing key over (tenant, payee), a key the database
does not hold, and is checked each time a decision reads it. A row without a valid one (forged by that login, or
written before migration 012) counts as an unknown payee: logged once per row, counted every time
(`tidegate_rows_refused_total{service="policy",table="known_payees"}`). A key retired by `tidegate keys rotate` still verifies
what it signed (its public key stays in the keys directory). Verdicts are remembered by row content, so a payee
known before costs a dictionary look-up per decision, not a signature check.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from servicekit.metrics import observe_row_refused
from servicekit.signing import Keyring, SigningKey, unb64url, verifies

__all__ = ["PayeeProof", "PayeeSeal", "payee_message"]

_PURPOSE = "tidegate.policy.known_payee/1"
_CACHED = 65_536  # verdicts remembered (rows of distinct content); the oldest goes first
_RELOAD_S = 5.0  # an unknown key id reloads the keys directory at most this often (a forged id must not read the disk each time)

log = logging.getLogger(__name__)

_Row = tuple[str, str, str | None, str | None]  # (tenant, payee, key id, signature) as stored


def _remember(verdicts: dict[_Row, bool], row: _Row, verdict: bool) -> None:
    """Keep `verdict` for `row`, forgetting the oldest one kept when `_CACHED` are."""
    if len(verdicts) >= _CACHED:
        del verdicts[next(iter(verdicts))]
    verdicts[row] = verdict


def payee_message(tenant_id: str, payee: str) -> bytes:
    """What a known payee's proof signs: its purpose, tenant and payee, as JSON (unambiguous whatever the strings hold)."""
    return json.dumps([_PURPOSE, tenant_id, payee]).encode()


@dataclass(frozen=True)
class PayeeProof:
    """A known payee's proof as stored beside it: the id of the key that signed and the signature (base64url)."""

    key_id: str
    signature: str


class PayeeSeal:
    """Signs the payees the policy learns and checks the proof of every stored one it reads."""

    def __init__(self, signer: SigningKey, keys_dir: Path, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._signer, self._keys_dir, self._monotonic = signer, keys_dir, monotonic
        self._keyring = Keyring.load(keys_dir, signer.name)
        self._loaded_at = monotonic()
        self._verdicts: dict[_Row, bool] = {}
        self._told: dict[_Row, bool] = {}  # refused rows already logged

    def prove(self, tenant_id: str, payee: str) -> PayeeProof:
        """The proof of a payee the tenant has paid (a settled financial call)."""
        key_id = self._signer.key_id  # read before signing: the signature matches the id beside it (`SigningKey`)
        return PayeeProof(key_id, self._signer.sign(payee_message(tenant_id, payee)))

    def known(self, tenant_id: str, payee: str, key_id: str | None, signature: str | None) -> bool:
        """Whether a stored row proves `payee` known to `tenant_id`; a row that does not is logged (once) and counted."""
        row = (tenant_id, payee, key_id, signature)
        verdict = self._verdicts.get(row)
        if verdict is None:
            verdict = self._check(tenant_id, payee, key_id, signature)
            if verdict or (key_id is not None and self._keyring.knows(key_id)):  # an unknown key may be known after a reload
                _remember(self._verdicts, row, verdict)
            if not verdict and row not in self._told:
                _remember(self._told, row, True)
                why = "has no proof" if not key_id or not signature else f"has a proof that does not verify (key {key_id!r})"
                log.warning(
                    "policy: known payee %r of tenant %s in policy.known_payees %s: counted as a new payee. The policy did not "
                    "write it (or wrote it before migration 012); a payment to it that settles proves it again, or list it in the "
                    "tenant's known_payees (`tidegate tenant set %s --payee ...`, or its directory)",
                    payee,
                    tenant_id,
                    why,
                    tenant_id,
                )
        if not verdict:
            observe_row_refused("policy", "known_payees", "unsigned" if not key_id or not signature else "invalid")
        return verdict

    def _check(self, tenant_id: str, payee: str, key_id: str | None, signature: str | None) -> bool:
        if not key_id or not signature:
            return False
        message = payee_message(tenant_id, payee)
        if key_id == self._signer.key_id:
            try:
                return verifies(self._signer.private.public_key(), unb64url(signature), message)
            except ValueError:  # not base64
                return False
        if not self._keyring.knows(key_id) and self._monotonic() - self._loaded_at >= _RELOAD_S:
            self._keyring = Keyring.load(self._keys_dir, self._signer.name)  # rotated since start: the retired key is there now
            self._loaded_at = self._monotonic()
        return self._keyring.verify(key_id, message, signature)
