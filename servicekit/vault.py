"""Sealing secrets a service keeps in its database so that only that service can read them.

Each secret is sealed with HPKE (RFC 9180: X25519, HKDF-SHA256, AES-256-GCM, from `cryptography`) to the
owning service's public key, bound to its purpose and its row (tenant, and the connector or endpoint). Whoever
seals needs only the public key; only the holder of the private key (the owner) can open it. The executor seals
tenants' connector credentials (`connectors.Vault`), the approval service its webhook endpoints' secrets
(`services.approval._endpoint_rows.webhook_vault`). A key pair is generated on first use under the git-ignored
keys directory: the private key in the owner's own folder (`<keys_dir>/<owner>/<key name>.key`, beside its signing
key, the one folder only that service mounts), the public key at the top with the other public keys. After a
rotation the old private keys stay, named by key id, until every stored secret has been sealed again.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from servicekit.private_files import write_at_once, write_private

__all__ = ["Sealed", "Vault", "VaultError"]

_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)


class VaultError(ValueError):
    """A secret that cannot be sealed or opened: no key pair, an unknown key id, sealed for another row or purpose, or altered."""


@dataclass(frozen=True)
class Sealed:
    """A sealed secret and the id of the key pair it was sealed to."""

    key_id: str
    ciphertext: bytes


def _key_id(public: X25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _info(purpose: str, tenant_id: str, row: str) -> bytes:
    # Binds the ciphertext to its purpose and row: a secret copied to another tenant's row, or another row, does not open.
    return f"tidegate/{purpose}/v1\x00{tenant_id}\x00{row}".encode()


def _write_private(path: Path, private: X25519PrivateKey, *, exclusive: bool = False) -> None:
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    write_private(path, pem, exclusive=exclusive)


def _write_public(path: Path, public: X25519PublicKey) -> None:
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    write_at_once(path, pem, mode=0o644)  # whole or not at all: a reader sealing a secret never finds it empty


def _load_private(path: Path) -> X25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, X25519PrivateKey):
        raise VaultError(f"{path} is not an X25519 private key")
    return key


class Vault:
    """A service's key pair(s) for sealing secrets under `keys_dir`: the current one seals, any known one opens.

    `owner`: the service that opens (its key folder holds the private keys). `key_name`: the key pair's file name.
    `purpose`: what a ciphertext is bound to besides its row, so a secret of one purpose never opens as another's.
    `made_by`: how the key pair is first made, said when its public key is missing.
    """

    def __init__(self, keys_dir: Path, *, owner: str, key_name: str, purpose: str, made_by: str = "") -> None:
        self.keys_dir = keys_dir
        self.owner, self.key_name, self.purpose = owner, key_name, purpose
        self.made_by = made_by or f"start the {owner} service once"

    @property
    def private_dir(self) -> Path:
        """The owner's own key folder, where the private keys sit."""
        return self.keys_dir / self.owner

    @property
    def private_path(self) -> Path:
        """The current private key (0600): only the owner's host should hold it."""
        return self.private_dir / f"{self.key_name}.key"

    @property
    def public_path(self) -> Path:
        """The current public key: all that whoever seals a secret needs."""
        return self.keys_dir / f"{self.key_name}.pub"

    def ensure(self) -> str:
        """Create the key pair on first run (safe when the owner and a CLI race to do it); return the current key id."""
        self._adopt_flat_keys()
        if self.public_path.exists() and not self.private_path.exists():
            return self.current_key_id()  # an operator's machine: the public key only
        self.private_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not self.private_path.exists():
            with contextlib.suppress(FileExistsError):  # refuses to replace a key another process just made
                _write_private(self.private_path, X25519PrivateKey.generate(), exclusive=True)
        public = _load_private(self.private_path).public_key()
        pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        if not self.public_path.exists() or self.public_path.read_bytes() != pem:
            _write_public(self.public_path, public)  # always the private key's own (never written when it already is: a read-only mount)
        return _key_id(public)

    def _adopt_flat_keys(self) -> None:
        """Move private keys of the former flat layout (`<keys_dir>/<key name>*.key`) into the owner's folder."""
        flat = list(self.keys_dir.glob(f"{self.key_name}*.key"))
        if flat:
            self.private_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for path in flat:
            if not (self.private_dir / path.name).exists():
                os.replace(path, self.private_dir / path.name)

    def _install(self, private: X25519PrivateKey) -> None:
        _write_private(self.private_path, private)
        _write_public(self.public_path, private.public_key())

    def _public(self) -> X25519PublicKey:
        if not self.public_path.exists():
            raise VaultError(f"no {self.public_path}: {self.made_by} to create it")
        key = serialization.load_pem_public_key(self.public_path.read_bytes())
        if not isinstance(key, X25519PublicKey):
            raise VaultError(f"{self.public_path} is not an X25519 public key")
        return key

    def current_key_id(self) -> str:
        """Id of the key pair new secrets are sealed to."""
        return _key_id(self._public())

    def seal(self, secret: str, tenant_id: str, row: str) -> Sealed:
        """Seal `secret` for (tenant, row: a connector, an endpoint id) to the current public key."""
        public = self._public()
        return Sealed(_key_id(public), _SUITE.encrypt(secret.encode(), public, info=_info(self.purpose, tenant_id, row)))

    def _private_by_id(self) -> dict[str, X25519PrivateKey]:
        keys: dict[str, X25519PrivateKey] = {}
        for path in sorted(self.private_dir.glob(f"{self.key_name}*.key")):
            private = _load_private(path)
            keys[_key_id(private.public_key())] = private
        return keys

    def open(self, sealed: Sealed, tenant_id: str, row: str) -> str:
        """The secret; raises VaultError when no known key opens it for this tenant and row."""
        private = self._private_by_id().get(sealed.key_id)
        if private is None:
            raise VaultError(f"sealed to key {sealed.key_id}, which the {self.owner} service does not hold (not in {self.private_dir})")
        try:
            return _SUITE.decrypt(sealed.ciphertext, private, info=_info(self.purpose, tenant_id, row)).decode()
        except Exception as exc:  # cryptography raises InvalidTag (or a ValueError for a malformed one)
            raise VaultError(f"sealed {self.purpose} for {tenant_id}/{row} does not open with key {sealed.key_id}") from exc

    def rotate(self) -> tuple[str, str]:
        """Make a new current key pair; the old private key stays as `<name>.<old id>.key` to open what is not resealed yet.

        Returns (old key id, new key id). Reseal every stored secret, then `retire` the old id.
        """
        old = _load_private(self.private_path)
        old_id = _key_id(old.public_key())
        _write_private(self.private_dir / f"{self.key_name}.{old_id}.key", old)
        new = X25519PrivateKey.generate()
        self._install(new)
        return old_id, _key_id(new.public_key())

    def retire(self, key_id: str) -> None:
        """Delete a former private key once no stored secret is sealed to it."""
        path = self.private_dir / f"{self.key_name}.{key_id}.key"
        if path.exists():
            path.unlink()
