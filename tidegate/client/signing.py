"""The signing seam: what the client signs before sending (what it believes is `trust.py`'s).

A Tidegate deployment refuses unsigned events (docs/security/signatures.md): a task or proposal must
be signed by a client key an operator registered for the tenant (`tidegate clients add`), whose
principal is the `requested_by`; a governed function's `tool.reply` by the tool's key that the
catalog entry names (`reply_key_file`). `KeySigner` does both with the same bytes the services
verify: Ed25519 over the canonical JSON of the whole event without `signature`.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any, Protocol, TypeVar

from schemas import Envelope, canonical_json
from tidegate.client.settings import ClientSettings

__all__ = ["EnvelopeSigner", "KeySigner", "Signer", "SigningNotWired", "registration_problem", "signer_for"]

E = TypeVar("E", bound=Envelope)


class SigningNotWired(RuntimeError):
    """A signing key is configured but cannot be used (missing file, not an Ed25519 key)."""


class Signer(Protocol):
    """Signs what the client sends."""

    def sign(self, event: E) -> E:
        """The event as it goes on the wire (signed, or unchanged)."""
        ...


class EnvelopeSigner:
    """No key configured: events go out as they are (a deployment that verifies signatures refuses them)."""

    def sign(self, event: E) -> E:
        """Return the event unchanged."""
        return event


class _Key:
    """One Ed25519 private key and its id, `<name>-<first 12 hex of SHA-256 of the raw public key>`."""

    def __init__(self, path: Path, name: str) -> None:
        from cryptography.hazmat.primitives import serialization  # only clients that sign pay for it
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        try:
            loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError) as exc:
            raise SigningNotWired(f"cannot read the signing key {path}: {exc}") from exc
        if not isinstance(loaded, Ed25519PrivateKey):
            raise SigningNotWired(f"{path} is not an Ed25519 private key")
        self._private = loaded
        raw = loaded.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.path, self.raw_public = path, raw
        self.key_id = f"{name}-{hashlib.sha256(raw).hexdigest()[:12]}"

    def sign(self, event: E) -> E:
        unsigned = event.model_copy(update={"keyid": self.key_id, "signature": None})
        document: dict[str, Any] = unsigned.model_dump(mode="json", exclude_none=True)
        signature = self._private.sign(canonical_json({k: v for k, v in document.items() if k != "signature"}))
        return unsigned.model_copy(update={"signature": base64.urlsafe_b64encode(signature).rstrip(b"=").decode()})


class KeySigner:
    """Signs tasks and proposals with the client key, and a governed tool's replies with that tool's key."""

    def __init__(self, client_key: Path, principal: str, tool_keys_dir: Path | None = None) -> None:
        self._client = _Key(client_key, principal)
        self._tool_keys_dir = tool_keys_dir
        self._tools: dict[str, _Key] = {}

    def _tool_key(self, tool: str) -> _Key:
        if tool not in self._tools:
            if self._tool_keys_dir is None:
                raise SigningNotWired(f"a reply of {tool} must be signed with its tool key: set TIDEGATE_CLIENT_TOOL_KEYS_DIR")
            own = self._tool_keys_dir / tool / f"{tool}.key"  # the layout `tidegate keys add-tool` makes
            flat = self._tool_keys_dir / f"{tool}.key"  # a key put there by hand, still read
            self._tools[tool] = _Key(flat if flat.exists() and not own.exists() else own, tool)  # missing: names `own`
        return self._tools[tool]

    @property
    def client_key(self) -> tuple[Path, bytes]:
        """The client key's file and its raw public key."""
        return self._client.path, self._client.raw_public

    def sign(self, event: E) -> E:
        """`event` with `keyid` and `signature`: a tool reply by its tool's key, anything else by the client key."""
        if event.type == "tidegate.tool.reply":
            return self._tool_key(str(getattr(event.data, "tool", ""))).sign(event)
        return self._client.sign(event)


def signer_for(settings: ClientSettings) -> Signer:
    """The signer the settings ask for: a `KeySigner` when a key is configured (fails at start if it cannot be read)."""
    if settings.signing_key_path is None:
        return EnvelopeSigner()
    return KeySigner(settings.signing_key_path, settings.principal, settings.tool_keys_dir)


def registration_problem(signer: Signer, settings: ClientSettings, keys_dir: Path | None) -> str | None:
    """Why the deployment will refuse this client's proposals, read off its client-key registry; None when it will not.

    The registry is `<keys_dir>/clients/<tenant>/<principal>.pub` beside the services' public keys the client believes
    (`keys_dir`, the service keys dir), what `tidegate clients add` writes and the policy reads. A proposal signed by a
    key not registered for its tenant and principal is dead-lettered (`unknown_key`, `signer_not_allowed`), where the
    agent cannot read it: it waited for an answer that never came. Where the registry is not there (an agent on another
    machine, given only the services' public keys), nothing can be told: None.
    """
    registry = keys_dir / "clients" if keys_dir is not None else None
    if registry is None or not registry.is_dir():
        return None
    tenant, principal = settings.tenant, settings.principal
    if not isinstance(signer, KeySigner):
        kept = sorted(pub.stem for pub in (registry / tenant).glob("*.pub"))
        return (
            "no TIDEGATE_CLIENT_SIGNING_KEY_PATH: the deployment refuses unsigned proposals (`signature_missing`, "
            f"dead-lettered, never answered). Set it to the private key `tidegate clients add {tenant} {principal}` printed"
            + (f" (registered for tenant {tenant}: {', '.join(kept)})" if kept else f" (tenant {tenant} has no client key yet)")
        )
    path, raw = signer.client_key
    holders = [pub for pub in sorted(registry.glob("*/*.pub")) if _raw_public(pub) == raw]
    if any(pub == registry / tenant / f"{principal}.pub" for pub in holders):
        return None
    refused = (
        f"the client key {path} is not registered for {principal} of tenant {tenant} (TIDEGATE_CLIENT_PRINCIPAL and "
        f"TIDEGATE_CLIENT_TENANT) in {registry}: the policy would refuse every proposal it signs and never answer"
    )
    if holders:
        named = ", ".join(f"{pub.stem} of tenant {pub.parent.name}" for pub in holders)
        return f"{refused}. It is registered for {named}: set those, or register a key: `tidegate clients add {tenant} {principal}`"
    if (registry / tenant / f"{principal}.pub").exists():
        return (
            f"{refused}. {principal} has another key ({registry / tenant / f'{principal}.pub'}): use the private key `tidegate "
            f"clients add {tenant} {principal}` printed, or `tidegate clients revoke` it and add it again"
        )
    return f"{refused}. Register it: `tidegate clients add {tenant} {principal}` (`--public-key` for a key made elsewhere)"


def _raw_public(pub: Path) -> bytes | None:
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_public_key(pub.read_bytes())
    except (OSError, ValueError):
        return None
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
