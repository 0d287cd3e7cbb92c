"""Ed25519 signing and verification, with key files generated on first run and never committed."""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = ["Keyring", "SigningKey", "b64url", "unb64url"]


def b64url(raw: bytes) -> str:
    """URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    """Inverse of `b64url`; raises ValueError on bad input."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _key_id(name: str, public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return f"{name}-{hashlib.sha256(raw).hexdigest()[:12]}"


@dataclass(frozen=True)
class SigningKey:
    """A named Ed25519 private key; its id names the public key that verifies it."""

    name: str
    key_id: str
    private: Ed25519PrivateKey

    @classmethod
    def load_or_create(cls, keys_dir: Path, name: str) -> SigningKey:
        """Load `<keys_dir>/<name>.key`, creating it (0600) and its `.pub` on first run."""
        keys_dir.mkdir(parents=True, exist_ok=True)
        priv_path, pub_path = keys_dir / f"{name}.key", keys_dir / f"{name}.pub"
        if priv_path.exists():
            loaded = serialization.load_pem_private_key(priv_path.read_bytes(), password=None)
            if not isinstance(loaded, Ed25519PrivateKey):
                raise ValueError(f"{priv_path} is not an Ed25519 key")
            private = loaded
        else:
            private = Ed25519PrivateKey.generate()
            pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
            tmp = priv_path.with_suffix(".key.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
            try:
                os.link(tmp, priv_path)  # atomic and refuses to overwrite a key another process just made
            except FileExistsError:
                tmp.unlink()
                return cls.load_or_create(keys_dir, name)
            tmp.unlink()
        public = private.public_key()
        if not pub_path.exists():
            pub_path.write_bytes(public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        return cls(name=name, key_id=_key_id(name, public), private=private)

    def sign(self, message: bytes) -> str:
        """Signature of `message`, base64url."""
        return b64url(self.private.sign(message))


class Keyring:
    """Public keys trusted for verification, by key id; only keys of the expected name count."""

    def __init__(self, keys: dict[str, Ed25519PublicKey]) -> None:
        self._keys = keys

    @classmethod
    def load(cls, keys_dir: Path, name: str) -> Keyring:
        """Every `<name>*.pub` in `keys_dir` (current key and rotated ones)."""
        keys: dict[str, Ed25519PublicKey] = {}
        for pub_path in sorted(keys_dir.glob(f"{name}*.pub")):
            loaded = serialization.load_pem_public_key(pub_path.read_bytes())
            if isinstance(loaded, Ed25519PublicKey):
                keys[_key_id(pub_path.stem, loaded)] = loaded
        return cls(keys)

    def knows(self, key_id: str) -> bool:
        """Whether `key_id` is a trusted key."""
        return key_id in self._keys

    def verify(self, key_id: str, message: bytes, signature: str) -> bool:
        """True only if `key_id` is trusted and `signature` is its valid signature of `message`."""
        key = self._keys.get(key_id)
        if key is None:
            return False
        try:
            key.verify(unb64url(signature), message)
        except (InvalidSignature, ValueError):
            return False
        return True
