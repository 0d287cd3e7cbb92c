"""Webhook endpoint rows as the approval schema keeps them: the secret sealed, the row signed (security3 F3b).

The service's own database login can read and write every column of `webhook_endpoints`, but it holds neither the
key that opens a secret (the service's `webhook-secrets` X25519 key pair, in its own key folder beside its signing
key: `servicekit.vault.Vault`, HPKE bound to the row's tenant and endpoint id) nor a key that signs a row (`RowSeal`: the
service's Ed25519 key, or an operator's). So it can neither read a secret nor set one, nor re-point an endpoint,
nor list another approver on it: a row whose signature fails, or whose secret does not open, is no endpoint.
`tidegate keys rotate approval` changes the signing key only: what the retired key signed still verifies, and the
secrets' key pair is another file. Nor can it put back an earlier signed row: every row written is first named current
on `directory` (`services.approval._pins`), and a signed row that is not the one named is refused `rolled_back`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from servicekit.vault import Sealed, Vault, VaultError
from services.approval._pins import ROLLED_BACK, UNPINNED, RowPins
from services.approval._row_proofs import Proof, RowSeal

if TYPE_CHECKING:
    from services.approval._webhook_values import Endpoint

__all__ = [
    "REREGISTER",
    "WEBHOOK_SECRETS_KEY",
    "EndpointRows",
    "SealedSecret",
    "endpoint_claims",
    "opened_endpoint",
    "sealed_text",
    "webhook_vault",
]

WEBHOOK_SECRETS_KEY = "webhook-secrets"
REREGISTER = (
    "no webhook goes to it and no callback from it is accepted until an admin of its tenant (or an operator) checks its "
    "URL and approvers and registers it again (POST /api/v1/webhooks/endpoints)"
)


def webhook_vault(keys_dir: Path) -> Vault:
    """The approval service's key pair for endpoints' secrets: private in `<keys_dir>/approval/`, never in the database."""
    return Vault(keys_dir, owner="approval", key_name=WEBHOOK_SECRETS_KEY, purpose="webhook-secret")


@dataclass(frozen=True)
class SealedSecret:
    """An endpoint's secret as stored: the id of the key pair it is sealed to, and the HPKE ciphertext."""

    key_id: str
    ciphertext: bytes

    @property
    def digest(self) -> str:
        """What a row's signature covers of its secret: the ciphertext's SHA-256."""
        return hashlib.sha256(self.ciphertext).hexdigest()


def endpoint_claims(
    tenant_id: str, endpoint_id: str, url: str, approvers: Sequence[str], enabled: bool, source: str, secret: SealedSecret
) -> dict[str, Any]:
    """What an endpoint row's signature covers: every column that says where messages go and who may decide through it."""
    return {
        "tenant_id": tenant_id,
        "endpoint_id": endpoint_id,
        "url": url,
        "approvers": list(approvers),
        "enabled": enabled,
        "source": source,
        "secret_key_id": secret.key_id,
        "secret_sha256": secret.digest,
    }


def sealed_text(endpoint: Endpoint) -> str:
    """What is sealed of an endpoint: its secret; during a rotation's overlap, JSON with the former secret, until when, for whom.

    A secret alone is sealed as it is (`whsec_…`, as before rotations existed), so every row written before reads the same.
    The former secret, its end and its approvers are sealed with the secret: the row's signature covers them (the digest of
    the ciphertext), and the service's database login can neither read them nor lengthen the overlap.
    """
    e = endpoint
    if e.former_secret is None or e.former_until is None:
        return e.secret
    former = {"secret": e.former_secret, "until": e.former_until.isoformat(), "approvers": list(e.former_approvers)}
    return json.dumps({"secret": e.secret, "former": former}, sort_keys=True)


def opened_endpoint(endpoint: Endpoint, text: str) -> Endpoint:
    """`endpoint` with what `sealed_text` sealed put back; ValueError when the text is neither form."""
    if not text.startswith("{"):
        return replace(endpoint, secret=text)
    try:
        doc = json.loads(text)
        former = doc["former"]
        return replace(
            endpoint,
            secret=str(doc["secret"]),
            former_secret=str(former["secret"]),
            former_until=datetime.fromisoformat(str(former["until"])),
            former_approvers=tuple(str(a) for a in former["approvers"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"its sealed secret is not a secret nor a rotation: {exc}") from exc


@functools.lru_cache(maxsize=4096)
def _opened(vault: Vault, key_id: str, ciphertext: bytes, tenant_id: str, endpoint_id: str) -> str:
    """A secret opened, remembered by content: every message sent and every callback reads its endpoint's."""
    return vault.open(Sealed(key_id, ciphertext), tenant_id, endpoint_id)


@dataclass(frozen=True)
class EndpointRows:
    """Seals an endpoint's secret and signs its row when the store writes one; verifies and opens it when it reads one."""

    seal: RowSeal
    vault: Vault | None
    pins: RowPins | None = None  # the `directory` records naming each endpoint's current row (None: none checked nor published)
    # per endpoint, what its row was found proven from at the last `refused_among` (its columns, its key's holders, its pin)
    _proven: dict[tuple[str, str], tuple[object, ...]] = field(default_factory=dict, init=False, repr=False, compare=False)

    def sealed(self, tenant_id: str, endpoint_id: str, secret: str) -> SealedSecret:
        """`secret` sealed for this endpoint; RuntimeError when this process holds no key pair to seal with."""
        if self.vault is None:
            raise RuntimeError("webhook_endpoints: this process holds no key to seal endpoints' secrets with")
        sealed = self.vault.seal(secret, tenant_id, endpoint_id)
        return SealedSecret(sealed.key_id, sealed.ciphertext)

    def sealed_endpoint(self, endpoint: Endpoint) -> SealedSecret:
        """`endpoint`'s secret, with a rotation's former secret while one is kept (`sealed_text`), sealed for it."""
        return self.sealed(endpoint.tenant_id, endpoint.endpoint_id, sealed_text(endpoint))

    def sign(self, endpoint: Endpoint, secret: SealedSecret) -> Proof:
        """The proof of `endpoint` stored with `secret`."""
        e = endpoint
        return self.seal.sign(endpoint_claims(e.tenant_id, e.endpoint_id, e.url, e.approvers, e.enabled, e.source, secret))

    def digest(self, endpoint: Endpoint, secret: SealedSecret) -> str:
        """SHA-256 (hex) of the bytes a row of `endpoint` stored with `secret` is signed over: what its pin names."""
        e = endpoint
        claims = endpoint_claims(e.tenant_id, e.endpoint_id, e.url, e.approvers, e.enabled, e.source, secret)
        return hashlib.sha256(self.seal.message(claims)).hexdigest()

    async def pin(self, endpoint: Endpoint, secret: SealedSecret | None) -> None:
        """Name the row about to be written the endpoint's current one on `directory` (no row: one that no row hashes to).

        Nothing when this process publishes no records (a store of a test's own, an older tool).
        """
        if self.pins is None or not self.pins.publishes:
            return
        digest = self.digest(endpoint, secret) if secret is not None else secrets.token_hex(32)
        await self.pins.pin_endpoint(endpoint.tenant_id, endpoint.endpoint_id, digest)

    def read(
        self, endpoint: Endpoint, secret: SealedSecret | None, key_id: str | None, signature: str | None, *, check_pin: bool = True
    ) -> Endpoint:
        """`endpoint` (read with an empty secret) with its secret opened, or with `unproven` set: why the row is no endpoint.

        `check_pin` False: its signature only, not whether it is the row `directory` names current (to pin it).
        """
        e = endpoint
        if secret is None:
            return replace(e, unproven="unsigned")  # a row from before migration 011 (its clear secret was dropped)
        claims = endpoint_claims(e.tenant_id, e.endpoint_id, e.url, e.approvers, e.enabled, e.source, secret)
        why = self.seal.why_not(claims, key_id, signature)
        if why is None and self.pins is not None and check_pin:
            why = self.pins.endpoint_refusal(e.tenant_id, e.endpoint_id, self.digest(e, secret))
        if why is not None:
            return replace(e, unproven=why)
        if self.vault is None:
            return replace(e, unproven="its secret cannot be opened here (no webhook-secrets key)")
        try:
            return opened_endpoint(e, _opened(self.vault, secret.key_id, secret.ciphertext, e.tenant_id, e.endpoint_id))
        except (VaultError, OSError, ValueError) as exc:
            return replace(e, unproven=f"its secret does not open: {exc}")

    def refused_among(self, rows: Sequence[tuple[Endpoint, SealedSecret | None, str | None, str | None]]) -> list[Endpoint]:
        """Those of `rows` (each read with an empty secret, its sealed secret, key id and signature) that are refused, not told.

        What `read` says of each, without reading again a row found proven at the last call from the same columns, the
        same holders of its key id and the same pin (no signature checked, no canonical bytes nor digest made, no secret
        opened): any of them changed, the row is read again, and a refused one is read at every call. Called with every
        row each time (the owed-messages gauge's round): what it remembers is the rows of the last call only.
        """
        proven: dict[tuple[str, str], tuple[object, ...]] = {}
        refused = []
        for endpoint, secret, key_id, signature in rows:
            key = (endpoint.tenant_id, endpoint.endpoint_id)
            holders = self.seal.holders.principals(key_id) if self.seal.holders is not None and key_id else []
            pin = self.pins.pinned(*key) if self.pins is not None else None
            drawn_from = (endpoint, secret, key_id, signature, tuple(holders), pin)
            if self._proven.get(key) != drawn_from:
                read = self.read(endpoint, secret, key_id, signature)
                if read.unproven is not None:
                    refused.append(read)
                    continue
            proven[key] = drawn_from
        self._proven.clear()
        self._proven.update(proven)
        return refused

    def refused(self, endpoint: Endpoint) -> bool:
        """Whether a row read as an endpoint is refused (told: a log line naming it and how to mend it, and the metric)."""
        if endpoint.unproven is None:
            return False
        what = f"webhook endpoint {endpoint.endpoint_id} of tenant {endpoint.tenant_id} ({endpoint.url})"
        counted = next((code for code in (ROLLED_BACK, UNPINNED) if endpoint.unproven.startswith(f"{code}:")), None)
        self.seal.refused(what, endpoint.unproven, REREGISTER, counted_as=counted)
        return True
