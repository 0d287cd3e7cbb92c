"""Ed25519 signing and verification, with key files generated on first run and never committed.

Layout of a keys directory: each signer's private key alone in its own folder,
`<keys_dir>/<name>/<name>.key` (0600, only that service mounts it), and every public key at the top,
`<keys_dir>/<name>.pub` (current) and `<keys_dir>/<name>.<hash>.pub` (retired by `rotate`, still
verifying what it signed), with `<keys_dir>/<name>.<hash>.retired` beside it: when it was retired
(ISO 8601, UTC), after which live consumers refuse what it signs once a grace window has passed (at once,
when a second line says `no grace`: a key taken away rather than replaced).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import hashlib
import logging
import re
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from nacl._sodium import ffi as _sodium_ffi
from nacl._sodium import lib as _sodium_lib
from nacl.bindings import crypto_sign_BYTES
from nacl.signing import SigningKey as SodiumKey
from nacl.signing import VerifyKey

from servicekit.private_files import write_at_once, write_private

__all__ = [
    "BadKeyName",
    "Keyring",
    "SigningKey",
    "b64url",
    "checked_key_name",
    "key_id_of",
    "load_public",
    "retire",
    "retired_at",
    "retired_without_grace",
    "rotate",
    "unb64url",
    "verifies",
    "verifies_raw",
]

NO_GRACE = "no grace"
RECHECK_S = 1.0  # how long a running signer may go on with a key `rotate` replaced: its key file is read at most this often

log = logging.getLogger(__name__)


class BadKeyName(ValueError):
    """A name that cannot name a key's files: a key is `<folder>/<name>.pub`, one file name in its folder."""


def checked_key_name(what: str, name: str) -> str:
    """`name`, if it can name a key's files (or a tenant's folder of client keys); else BadKeyName saying why.

    One file name: not empty, no slash or backslash, no leading dot (`..`, and files no reader globs), nothing that does not
    print. Joined into a path as it came, a client principal `../../operators/evil` (or an absolute path) put its
    public key on the operators' allow-list (the reviewer's F3), and a requester is whatever `tidegate submit` was told.
    """
    if not name or name.startswith(".") or "/" in name or "\\" in name or not name.isprintable():
        shown = name.encode("unicode_escape").decode()
        raise BadKeyName(f"{what} {shown!r} is not one file name (no /, \\, leading dot or unprintable character): it names key files")
    return name


def b64url(raw: bytes) -> str:
    """URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")


def unb64url(text: str) -> bytes:
    """Inverse of `b64url`; raises ValueError on bad input.

    `base64.urlsafe_b64decode`'s steps (ASCII only, `-_` read as `+/`, `binascii`'s lenient decoding) without its
    Python layers: every signature checked is decoded here.
    """
    raw = text.encode("ascii") if isinstance(text, str) else bytes(text)  # not ASCII: UnicodeEncodeError, a ValueError
    return binascii.a2b_base64((raw + b"=" * (-len(raw) % 4)).translate(_FROM_URLSAFE))


def _key_id(name: str, public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return f"{name}-{hashlib.sha256(raw).hexdigest()[:12]}"


@functools.lru_cache(maxsize=4096)
def _sodium_key(raw: bytes) -> bytes:
    return bytes(VerifyKey(raw))  # checked once as a key (32 bytes), as `VerifyKey` checks it


def verifies(public: Ed25519PublicKey, signature: bytes, message: bytes) -> bool:
    """Whether `signature` is `public`'s Ed25519 signature of `message`.

    Verified by libsodium (PyNaCl): about half the CPU of OpenSSL's verification through
    `cryptography` on this project's machines (`bench.signing_bench`), and every consumer verifies
    every event. Key files are still read and written with `cryptography`.
    """
    return verifies_raw(public.public_bytes_raw(), signature, message)


def verifies_raw(public_raw: bytes, signature: bytes, message: bytes) -> bool:
    """`verifies`, given the public key's raw bytes (a caller that holds them reads them out of the key once).

    What `VerifyKey.verify` does, without its layers: a signature that is not 64 bytes verifies nothing, the
    signature and the message are handed to libsodium's `crypto_sign_open` together. With no output buffer (NULL,
    which libsodium allows): PyNaCl's binding of it allocates a zeroed buffer the size of the message and copies the
    message out of it, ~19,000 instructions a check that nothing reads (tests/unit/foundation/test_signature_check_path.py).
    """
    if not isinstance(signature, bytes) or len(signature) != crypto_sign_BYTES:
        return False
    try:
        signed = signature + message
        key = _sodium_key(public_raw)
    except (ValueError, TypeError):
        return False
    status: int = _sodium_lib.crypto_sign_open(_NULL, _NULL, signed, len(signed), key)
    return status == 0


_NULL = _sodium_ffi.NULL


def key_id_of(name: str, public: Ed25519PublicKey) -> str:
    """The id of `name`'s public key: `<name>-<first 12 hex of its SHA-256>`."""
    return _key_id(name, public)


def load_public(path: Path) -> Ed25519PublicKey | None:
    """The Ed25519 public key in a PEM file, or None if the file holds anything else."""
    try:
        loaded = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, Ed25519PublicKey) else None


def rotate(
    keys_dir: Path, name: str, *, now: datetime | None = None, private_dir: Path | None = None, grace: bool = True
) -> tuple[str | None, str]:
    """Retire `name`'s key and make a new one; returns (old key id or None, new key id).

    The old private key is deleted (it can sign nothing new); its public key stays, renamed
    `<name>.<hash>.pub`, so that what it signed still verifies by key id, and the retirement time
    is written beside it (`<name>.<hash>.retired`), so live consumers stop trusting it for new events.
    `private_dir`: where the private key is, when not in `<keys_dir>/<name>/` (as in `SigningKey.load_or_create`).
    Without `grace` (a key that may have leaked: `tidegate keys rotate --leaked`) the old key is retired as a denied
    operator's is: what the broker appended before now stays valid, anything later is refused at once, and keys of
    `name` retired earlier and still within their grace lose it too.
    """
    old_id: str | None = None
    priv_path = (keys_dir / name if private_dir is None else private_dir) / f"{name}.key"
    _move_former_key(keys_dir, name, priv_path, announce=private_dir is not None)
    if priv_path.exists():
        old_id = retire(keys_dir, name, now=now, grace=grace)
        priv_path.unlink()
    if not grace:
        end_grace(keys_dir, name)
    return old_id, SigningKey.load_or_create(keys_dir, name, private_dir).key_id


def end_grace(keys_dir: Path, name: str) -> list[Path]:
    """End the grace of every key of `name` retired with one (`<name>.<hash>.retired` gains `no grace`); the files changed.

    What such a key signed that the broker appended before its retirement stays valid; nothing later is.
    """
    ended = []
    for path in sorted(keys_dir.glob(f"{name}.*.retired")):
        if path.name.split(".")[0] == name and not retired_without_grace(path.with_suffix(".pub")):
            path.write_text(path.read_text().rstrip("\n") + f"\n{NO_GRACE}\n")
            ended.append(path)
    return ended


def _publish(pub_path: Path, pem: bytes) -> None:
    """Write a public key whole or not at all: written beside its place under another name, then renamed into it.

    Services read the key folders while keys are made (`Authority.reload`, on an unknown key id); written in place,
    a file read while still empty was taken for no key, and the folder, whose names and time no longer changed, was
    never read again: what the new key signed stayed "not trusted" until some other key changed.
    """
    write_at_once(pub_path, pem, mode=0o644)  # its temporary name is not `*.pub`: no reader globs it


def _move_former_key(keys_dir: Path, name: str, priv_path: Path, *, announce: bool) -> None:
    """Move `name`'s private key from where an earlier layout kept it (flat in `keys_dir`, or `<keys_dir>/<name>/`) to `priv_path`."""
    for former in (keys_dir / f"{name}.key", keys_dir / name / f"{name}.key"):
        if former == priv_path or not former.exists() or priv_path.exists():
            continue
        priv_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        shutil.move(former, priv_path)
        if former.parent != keys_dir:
            with contextlib.suppress(OSError):  # the former folder of its own, now empty
                former.parent.rmdir()
        if announce:  # out of the public-key tree: say so once, where the person running the command sees it
            print(f"moved the private key {former} to {priv_path} (private keys are kept outside the public keys' folder)", file=sys.stderr)


def retire(keys_dir: Path, name: str, *, now: datetime | None = None, grace: bool = True) -> str | None:
    """Retire `name`'s current public key, `<keys_dir>/<name>.pub`; its key id, or None when there is none.

    The key is renamed `<name>.<hash>.pub`, so what it signed still verifies by key id, and `<name>.<hash>.retired`
    says since when (`now`): live consumers refuse what it signs after that once their grace window has passed,
    or at once without `grace` (a key taken away, not replaced: `tidegate keys deny-operator`).
    """
    pub_path = keys_dir / f"{name}.pub"
    public = load_public(pub_path)
    if public is None:
        return None
    key_id = _key_id(name, public)
    retired = keys_dir / f"{name}.{key_id.rsplit('-', 1)[1]}.pub"
    lines = [(now or datetime.now(UTC)).isoformat(), *([] if grace else [NO_GRACE])]
    retired.with_suffix(".retired").write_text("\n".join(lines) + "\n")
    pub_path.rename(retired)
    return key_id


def retired_at(path: Path) -> float | None:
    """When the public key at `path` was retired (epoch seconds), or None for a current key (`<name>.pub`).

    Read from `<name>.<hash>.retired`; a key retired before those files existed counts from the rename
    that retired it (the file's change time).
    """
    if not _RETIRED.search(path.name):
        return None
    try:
        return datetime.fromisoformat(path.with_suffix(".retired").read_text().split("\n", 1)[0].strip()).timestamp()
    except (OSError, ValueError):
        return path.stat().st_ctime


def retired_without_grace(path: Path) -> bool:
    """Whether the retired public key at `path` was taken away (`retire(grace=False)`): it signs nothing after its retirement."""
    try:
        return NO_GRACE in path.with_suffix(".retired").read_text().splitlines()[1:]
    except OSError:
        return False


_RETIRED = re.compile(r"\.[0-9a-f]{12}\.pub$")  # `<name>.<hash>.pub`, as `rotate` names a retired public key


@dataclass(frozen=True)
class _Loaded:
    """A private key as read from its file: the file's bytes (what a change is seen by), the key, its id and its libsodium twin."""

    pem: bytes
    private: Ed25519PrivateKey
    key_id: str
    # The same key for libsodium, which signs with ~two thirds of OpenSSL's CPU here (Ed25519 is deterministic: the same signature).
    sodium: SodiumKey


class SigningKey:
    """A named Ed25519 private key; its id names the public key that verifies it.

    A key loaded from its file (`load_or_create`) follows that file: when its id is read, the file is read again if
    `recheck_s` has passed, and a new key found there (`tidegate keys rotate`) is signed with from then on, without a
    restart, before the retired one's grace runs out. Callers read `key_id` before they `sign`, so a signature always
    matches the id beside it; a file missing for a moment (mid-rotation) or unreadable keeps the key it had.
    """

    def __init__(
        self,
        name: str,
        private: Ed25519PrivateKey,
        *,
        path: Path | None = None,
        recheck_s: float = RECHECK_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._path, self._recheck_s, self._monotonic = path, recheck_s, monotonic
        pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        self._loaded = _loaded(name, pem, private)
        self._checked = monotonic()

    @property
    def key_id(self) -> str:
        """The id of the key `sign` signs with now: `<name>-<first 12 hex of its public key's SHA-256>`."""
        if self._path is not None and self._monotonic() - self._checked >= self._recheck_s:
            self._follow_file()
        return self._loaded.key_id

    @property
    def private(self) -> Ed25519PrivateKey:
        """The private key `sign` signs with now."""
        return self._loaded.private

    def _follow_file(self) -> None:
        """Read the key file again, and sign with the key in it from now on if it is another, valid one."""
        assert self._path is not None
        self._checked = self._monotonic()
        try:
            pem = self._path.read_bytes()
        except OSError:  # mid-rotation (deleted, not yet made again) or taken away: keep the key in memory
            return
        if pem == self._loaded.pem:
            return
        try:
            loaded = _loaded(self.name, pem, _private_key(pem, self._path))
        except ValueError as exc:
            log.warning("%s: %s; still signing with %s", self.name, exc, self._loaded.key_id)
            return
        if loaded.key_id != self._loaded.key_id:
            log.info("%s: signing with its new key %s (was %s), read from %s", self.name, loaded.key_id, self._loaded.key_id, self._path)
        self._loaded = loaded

    @classmethod
    def load_or_create(cls, keys_dir: Path, name: str, private_dir: Path | None = None) -> SigningKey:
        """Load `<keys_dir>/<name>/<name>.key`, creating it (0600) and `<keys_dir>/<name>.pub` on first run.

        With `private_dir` the private key is `<private_dir>/<name>.key` instead, outside the public tree (operators'
        and clients' keys: whoever receives the public keys must not receive those). A key found where an earlier
        layout kept it is moved, with a message on stderr. A key whose public key was retired (`rotate`, or an
        operator denied) is not put back on the list: it raises PermissionError. The key follows its file (see the class).
        """
        checked_key_name("key name", name)
        own_dir = keys_dir / name if private_dir is None else private_dir
        own_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        keys_dir.mkdir(parents=True, exist_ok=True)
        priv_path, pub_path = own_dir / f"{name}.key", keys_dir / f"{name}.pub"
        _move_former_key(keys_dir, name, priv_path, announce=private_dir is not None)
        if priv_path.exists():
            private = _private_key(priv_path.read_bytes(), priv_path)
        else:
            private = Ed25519PrivateKey.generate()
            pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
            try:
                write_private(priv_path, pem, exclusive=True)  # refuses to overwrite a key another process just made
            except FileExistsError:
                return cls.load_or_create(keys_dir, name, private_dir)
        public = private.public_key()
        if not pub_path.exists():
            key_id = _key_id(name, public)
            if (keys_dir / f"{name}.{key_id.rsplit('-', 1)[1]}.pub").exists():
                raise PermissionError(f"{name}'s key {key_id} was retired or denied: it signs nothing new")
            _publish(pub_path, public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        return cls(name, private, path=priv_path)

    def sign(self, message: bytes) -> str:
        """Signature of `message`, base64url."""
        return b64url(self._loaded.sodium.sign(message).signature)

    def derived_secret(self, purpose: str) -> bytes:
        """A 32-byte secret for `purpose` only, derived from this private key (HKDF-SHA256, `purpose` as its label).

        Whoever holds the key derives the same secret on every run and every copy of the service; the secret
        reveals nothing of the key nor of a secret derived for another purpose, and a rotated key derives a new one.
        """
        kdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=f"tidegate/{self.name}/{purpose}".encode())
        return kdf.derive(self.private.private_bytes_raw())


def _private_key(pem: bytes, path: Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in `pem` (read from `path`); ValueError naming `path` if it holds anything else."""
    try:
        loaded = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path} is not an Ed25519 private key (PEM): {exc}") from exc
    if not isinstance(loaded, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 key")
    return loaded


def _loaded(name: str, pem: bytes, private: Ed25519PrivateKey) -> _Loaded:
    return _Loaded(pem, private, _key_id(name, private.public_key()), SodiumKey(private.private_bytes_raw()))


class Keyring:
    """Public keys trusted for verification, by key id; only keys of the expected name count."""

    def __init__(self, keys: dict[str, Ed25519PublicKey], retired: dict[str, float] | None = None) -> None:
        self._keys = keys
        self._retired = dict(retired or {})

    @classmethod
    def load(cls, keys_dir: Path, name: str) -> Keyring:
        """`<name>.pub` and every `<name>.<hash>.pub` in `keys_dir` (current key and rotated ones, with when each was retired)."""
        keys: dict[str, Ed25519PublicKey] = {}
        retired: dict[str, float] = {}
        for pub_path in sorted([keys_dir / f"{name}.pub", *keys_dir.glob(f"{name}.*.pub")]):
            loaded = load_public(pub_path) if pub_path.exists() else None
            if loaded is not None:
                keys[_key_id(name, loaded)] = loaded
                if (when := retired_at(pub_path)) is not None:
                    retired[_key_id(name, loaded)] = when
        return cls(keys, retired)

    def knows(self, key_id: str) -> bool:
        """Whether `key_id` is a trusted key."""
        return key_id in self._keys

    def retired_at(self, key_id: str) -> float | None:
        """When `key_id` was retired (epoch seconds), or None: the current key, or one whose retirement this keyring was not told."""
        return self._retired.get(key_id)

    def fingerprint(self, key_id: str) -> str | None:
        """SHA-256 (hex) of the raw public key trusted as `key_id`, the fingerprint an operator hands out; None: not trusted."""
        key = self._keys.get(key_id)
        return None if key is None else hashlib.sha256(key.public_bytes_raw()).hexdigest()

    def with_keys(self, extra: dict[str, Ed25519PublicKey], retired: dict[str, float] | None = None) -> Keyring:
        """This keyring and `extra` (keys trusted on other grounds, such as a fingerprint given out of band); its own keys win.

        `retired`: when those of `extra` were retired; a retirement this keyring knows of wins too.
        """
        return Keyring({**extra, **self._keys}, {**(retired or {}), **self._retired})

    def verify(self, key_id: str, message: bytes, signature: str) -> bool:
        """True only if `key_id` is trusted and `signature` is its valid signature of `message`."""
        key = self._keys.get(key_id)
        if key is None:
            return False
        try:
            return verifies(key, unb64url(signature), message)
        except ValueError:  # not base64
            return False
