"""Test helpers that sign events as their rightful producer: a service, an operator, a tenant's client, a tool.

Tests publish the way the real producers do (every event signed, docs/security/signatures.md);
attacker tests publish without these, or with a key of their own.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, TypeVar

from schemas import Envelope
from servicekit import (
    ADMIN,
    Bus,
    KitSettings,
    Producer,
    SigningKey,
    kafka_options,
    sign_as_client,
    sign_as_operator,
    sign_as_producer,
    sign_event,
)

__all__ = ["AdminBus", "SigningBus", "as_client", "as_operator", "as_service", "as_tool", "signed", "tool_key"]

E = TypeVar("E", bound=Envelope)

# Unit tests sign with keys in a temporary directory of their own (the kit's key dirs are for integration tests).
_UNIT_KEYS = Path(tempfile.mkdtemp(prefix="tidegate-test-keys-")) / "keys"  # operators' and clients' private keys beside it


def _kit(kit: KitSettings | None) -> KitSettings:
    return kit if kit is not None else KitSettings(keys_dir=_UNIT_KEYS)


def as_operator(event: E, kit: KitSettings | None = None) -> E:
    """`event` (a control record) signed by the kit's operator key, on its allow-list, with a fresh sequence."""
    return sign_as_operator(_kit(kit), event)


def as_client(event: E, kit: KitSettings | None = None) -> E:
    """`event` (a task or proposal) signed by the client key of its tenant and requester (registered on first use)."""
    return sign_as_client(_kit(kit), event)


def as_service(event: E, service: str, kit: KitSettings | None = None) -> E:
    """`event` signed by `service`'s key."""
    return sign_event(event, SigningKey.load_or_create(_kit(kit).keys_dir, service))


def tool_key(kit: KitSettings, tool: str) -> SigningKey:
    """The outside tool service's reply key, where the catalog's `reply_key_file` (`tools/<tool>.pub`) points."""
    return SigningKey.load_or_create(kit.keys_dir / "tools", tool)


def as_tool(event: E, kit: KitSettings) -> E:
    """A `tool.reply` signed by its tool's reply key."""
    return sign_event(event, tool_key(kit, event.data.tool))


def signed(event: E, kit: KitSettings | None = None) -> E:
    """`event` signed by whoever rightfully produces its type (already signed events are left alone)."""
    return event if event.signature is not None else sign_as_producer(_kit(kit), event)


class AdminBus(Bus):
    """A test bus logged in as the admin principal, on `kit`'s broker and topic prefix; it publishes events as they are."""

    def __init__(self, kit: KitSettings, name: str, **kwargs: Any) -> None:
        super().__init__(
            Producer(kit.kafka_bootstrap, name, **kafka_options(kit, ADMIN)), name, kit.kafka_bootstrap, kit.topic_prefix, **kwargs
        )
        self.kit = kit


class SigningBus(AdminBus):
    """A test bus that publishes every event signed by its rightful producer (see `signed`)."""

    def sign(self, event: Envelope) -> Envelope:
        """`event` signed as its producer would (unless already signed)."""
        return signed(event, self.kit)
