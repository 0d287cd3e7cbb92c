"""The signing seam: what the client signs before sending and what it checks before believing.

Today events go out unsigned and every answer is accepted (the bus's ACLs decide who may write the
answer topics). When the deployment signs envelopes, the integrator wires `Signer` to the kit's
Ed25519 envelope functions; a configured key with nothing wired fails at start-up, never silently.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

from schemas import Envelope
from tidegate.client.settings import ClientSettings

__all__ = ["EnvelopeSigner", "Signer", "SigningNotWired", "signer_for"]

E = TypeVar("E", bound=Envelope)


class SigningNotWired(RuntimeError):
    """A signing key is configured but this build has no envelope signing to use it with."""


class Signer(Protocol):
    """Signs what the client sends and verifies what it reads."""

    def sign(self, event: E) -> E:
        """The event as it goes on the wire (signed, or unchanged)."""
        ...

    def verify(self, event: Envelope) -> bool:
        """Whether an answer (decision, approval, result, invocation) may be believed."""
        ...


class EnvelopeSigner:
    """No key configured: events go out as they are; answers are trusted as far as the bus's ACLs go."""

    def sign(self, event: E) -> E:
        """Return the event unchanged."""
        return event

    def verify(self, event: Envelope) -> bool:
        """Accept every well-formed answer."""
        return True


def signer_for(settings: ClientSettings) -> Signer:
    """The signer the settings ask for; fails closed when a key is configured but cannot be used."""
    if settings.signing_key_path is not None:
        raise SigningNotWired(
            f"TIDEGATE_CLIENT_SIGNING_KEY_PATH is set ({settings.signing_key_path}) but this build does not sign envelopes yet"
        )
    return EnvelopeSigner()
