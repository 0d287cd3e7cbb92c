"""What the client believes: answers signed by the deployment's services, and authorizations signed by its policy.

A Tidegate service signs every event it produces (docs/security/signatures.md): the policy service
its decisions and, separately, each authorization (over `schemas.authorization_message`); the
approval service its approvals; the executor its results and tool invocations. The client reads the
public halves from the deployment's keys dir (`<service>.pub`, and `<service>.<hash>.pub` once
rotated) and believes an answer only when the key that signed it belongs to the service that may
produce it. A governed function runs only on an invocation that carries the policy's signed
authorization of exactly that call (tenant, task, tool and args), so a forged or replayed
invocation on `tools.<tool>.requests` runs nothing, whoever managed to write it.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from schemas import Envelope, ToolInvocationData, action_digest, authorization_message, canonical_json

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = ["PRODUCERS", "DeploymentKeys", "Trust", "TrustNotWired"]

E = TypeVar("E", bound=Envelope)

SERVICES = ("policy", "approval", "executor")
# Event type → the one service whose key may sign it (what the client reads; see servicekit.AUTHORITY).
PRODUCERS: dict[str, str] = {
    "tidegate.action.decided": "policy",
    "tidegate.approval.requested": "approval",
    "tidegate.approval.granted": "approval",
    "tidegate.approval.rejected": "approval",
    "tidegate.approval.expired": "approval",
    "tidegate.approval.resolved": "approval",
    "tidegate.action.succeeded": "executor",
    "tidegate.action.failed": "executor",
    "tidegate.action.unknown": "executor",
    "tidegate.tool.invocation": "executor",
}


class TrustNotWired(RuntimeError):
    """The client knows no public key of the deployment's services, so it could believe nothing."""


def _key_id(name: str, public: Ed25519PublicKey) -> str:
    from cryptography.hazmat.primitives import serialization

    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return f"{name}-{hashlib.sha256(raw).hexdigest()[:12]}"


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _verifies(public: Ed25519PublicKey, signature: str, message: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature

    try:
        public.verify(_unb64url(signature), message)
    except (InvalidSignature, ValueError):
        return False
    return True


def _envelope_bytes(event: Envelope) -> bytes:
    """The bytes an event's signature covers: canonical JSON of the event without `signature` (as the services sign it)."""
    document: dict[str, Any] = event.model_dump(mode="json", exclude_none=True)
    return canonical_json({k: v for k, v in document.items() if k != "signature"})


@dataclass
class Trust:
    """The deployment services' public keys, by key id, and the checks the client runs before it believes or runs anything."""

    keys: dict[str, tuple[str, Ed25519PublicKey]]  # key id → (service, public key)
    keys_dir: Path | None = None  # read again whenever an unknown key id arrives, so a rotated key is found at once
    retired: dict[str, float] = field(default_factory=dict)  # key id → when `tidegate keys rotate` retired it (epoch s)
    retired_grace_s: float = 600.0  # as the services: a retired key verifies nothing it signs after this
    clock: Callable[[], float] = time.time

    @classmethod
    def load(cls, keys_dir: Path, *, retired_grace_s: float = 600.0) -> Trust:
        """The current and rotated public keys of policy, approval and executor in `keys_dir`."""
        keys, retired = _read(keys_dir, retired_grace_s)
        return cls(keys, keys_dir, retired, retired_grace_s)

    def require(self) -> None:
        """Raise `TrustNotWired` unless the policy's and executor's keys are known (checked when the client starts)."""
        services = {service for service, _ in self.keys.values()}
        missing = [s for s in ("policy", "executor") if s not in services]
        if missing:
            where = self.keys_dir.absolute() if self.keys_dir else "the given keys"  # a relative default: from where it ran
            raise TrustNotWired(
                f"no public key of {', '.join(missing)} in {where}: set TIDEGATE_CLIENT_SERVICE_KEYS_DIR to the deployment's "
                "keys dir (where `policy.pub`, `approval.pub` and `executor.pub` are)"
            )

    def _holder(self, key_id: str) -> tuple[str, Ed25519PublicKey] | None:
        held = self.keys.get(key_id)
        if held is None and self.keys_dir is not None:
            self.keys, self.retired = _read(self.keys_dir, self.retired_grace_s)
            held = self.keys.get(key_id)
        retired = self.retired.get(key_id)
        if held is not None and retired is not None and self.clock() - retired > self.retired_grace_s:
            return None  # a stolen copy of a retired key must not make the client believe anything new
        return held

    def signed_by(self, service: str, key_id: str | None, signature: str | None, message: bytes) -> bool:
        """Whether `signature` over `message` is by a key of `service`."""
        held = self._holder(key_id) if key_id and signature else None
        return held is not None and held[0] == service and _verifies(held[1], signature or "", message)

    def believes(self, event: Envelope) -> bool:
        """Whether an answer is signed by the service that alone may produce its type."""
        service = PRODUCERS.get(event.type)
        return service is not None and self.signed_by(service, event.keyid, event.signature, _envelope_bytes(event))

    def refuses(self, invocation: Envelope) -> str | None:
        """Why a `tool.invocation` must not run (None: it may): the executor's signature, the policy's authorization, then `late`."""
        if invocation.type != "tidegate.tool.invocation" or not self.believes(invocation):
            return "the invocation is not signed by the executor's key"
        data: ToolInvocationData = invocation.data
        authorized = data.authorized
        if authorized is None:
            return "the invocation carries no authorization"
        auth = authorized.authorization
        if not self.signed_by("policy", auth.key_id, auth.signature, authorization_message(authorized)):
            return "the authorization is not signed by the policy's key"
        named = (authorized.action_id, authorized.task_id, authorized.tenant_id, authorized.tool, authorized.args)
        if named != (data.action_id, data.task_id, data.tenant_id, data.tool, data.args) or data.idempotency_key != data.action_id:
            return "the authorization names another call"
        if auth.action_digest != action_digest(data.tenant_id, data.tool, data.args):
            return "the authorization's digest is not this call's"
        return self.late(data)

    def late(self, data: ToolInvocationData) -> str | None:
        """Why an invocation is too late to run (None: it is not): the executor stopped waiting, or the authorization expired.

        Run late, the call would happen after the executor recorded the action `unknown` or retried it: the
        executor's next attempt carries a fresh deadline, and an expired authorization is never invoked again.
        """
        now = self.clock()
        if now > data.deadline.timestamp():
            return f"it arrived after its deadline ({data.deadline.isoformat()}): the executor has stopped waiting for it"
        expires_at = data.authorized.authorization.expires_at if data.authorized else None
        if expires_at is not None and now > expires_at.timestamp():  # the executor refuses to invoke after it, so should the tool
            return f"its authorization expired at {expires_at.isoformat()}"
        return None


def _read(keys_dir: Path, grace_s: float) -> tuple[dict[str, tuple[str, Ed25519PublicKey]], dict[str, float]]:
    """The services' public keys by key id, and when each retired one was retired (as `servicekit.signing.retired_at` reads it)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    keys: dict[str, tuple[str, Ed25519PublicKey]] = {}
    retired: dict[str, float] = {}
    for service in SERVICES:
        for path in sorted([keys_dir / f"{service}.pub", *keys_dir.glob(f"{service}.*.pub")]):
            try:
                public = serialization.load_pem_public_key(path.read_bytes())
            except (OSError, ValueError):
                continue
            if isinstance(public, Ed25519PublicKey):
                key_id = _key_id(service, public)
                keys[key_id] = (service, public)
                if _RETIRED.search(path.name):
                    retired[key_id] = _retired_at(path, grace_s)
    return keys, retired


_RETIRED = re.compile(r"\.[0-9a-f]{12}\.pub$")  # `<service>.<hash>.pub`: a key `tidegate keys rotate` retired
_NO_GRACE = "no grace"  # as `servicekit.signing.NO_GRACE` (the client does not import servicekit)


def _retired_at(path: Path, grace_s: float) -> float:
    """When a retired key was retired: its `.retired` file (ISO 8601), else the rename that retired it.

    A key retired without grace (`tidegate keys rotate --leaked`, a second line `no grace`) counts as retired a whole
    grace earlier, so the client believes nothing it signs from its retirement on, as the services refuse it.
    """
    try:
        lines = path.with_suffix(".retired").read_text().splitlines()
        at = datetime.fromisoformat(lines[0].strip()).timestamp()
    except (OSError, ValueError, IndexError):
        return path.stat().st_ctime
    return at - grace_s if _NO_GRACE in lines[1:] else at


class DeploymentKeys:
    """Private keys standing in for a deployment's services (the scripted stand-in signs with them); `trust()` their public halves."""

    def __init__(self) -> None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        self._private: dict[str, Ed25519PrivateKey] = {service: Ed25519PrivateKey.generate() for service in SERVICES}

    def key_id(self, service: str) -> str:
        """The id of `service`'s key."""
        return _key_id(service, self._private[service].public_key())

    def sign(self, service: str, message: bytes) -> str:
        """`service`'s signature of `message` (base64url)."""
        return _b64url(self._private[service].sign(message))

    def sign_event(self, service: str, event: E) -> E:
        """`event` with `keyid` and `signature` by `service`'s key."""
        unsigned = event.model_copy(update={"keyid": self.key_id(service), "signature": None})
        return unsigned.model_copy(update={"signature": self.sign(service, _envelope_bytes(unsigned))})

    def trust(self) -> Trust:
        """A `Trust` of these keys' public halves."""
        return Trust({self.key_id(s): (s, key.public_key()) for s, key in self._private.items()})
