"""A client whose key the deployment will not take is refused at start, saying what to set: not a 30 s silent wait.

The integrator registered two clients of shopco (`tidegate clients add`) and started the agent with one's key and the
other's principal, or another tenant, or a key never registered: the policy dead-letters every proposal it signs
(`unknown_key`, `signer_not_allowed`), where the agent cannot read it, and each proposal waited its 30 s for an answer
that never came (integrator probe F5). The registry beside the services' public keys tells it before anything is sent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from servicekit import KitSettings, client_key, client_private_key
from servicekit.signing import SigningKey
from tidegate.client import ClientSettings, Tidegate
from tidegate.client.signing import SigningNotWired


class NeverReached:
    """A bus the refused client must not connect to."""

    async def start(self) -> None:
        raise AssertionError("the client connected although its key is not the deployment's for it")

    async def stop(self) -> None:
        pass


@pytest.fixture
def kit(tmp_path: Path) -> KitSettings:
    kit = KitSettings(run_dir=tmp_path)
    for service in ("policy", "approval", "executor"):
        SigningKey.load_or_create(kit.keys_dir, service)
    client_key(kit, "shopco", "refund-bot@shopco.example")
    client_key(kit, "shopco", "mcp-user@shopco.example")
    return kit


def _client(kit: KitSettings, key: Path, **settings: Any) -> Tidegate:
    every = {"tenant": "shopco", "principal": "refund-bot@shopco.example", **settings}
    return Tidegate(ClientSettings(service_keys_dir=kit.keys_dir, signing_key_path=key, **every), transport=NeverReached())  # type: ignore[arg-type]


async def test_another_principals_key_is_refused_at_start_naming_the_principal_it_is_registered_for(kit: KitSettings) -> None:
    key = client_private_key(kit, "shopco", "mcp-user@shopco.example")
    with pytest.raises(SigningNotWired) as refused:
        await _client(kit, key).start()
    said = str(refused.value)
    assert f"the client key {key} is not registered for refund-bot@shopco.example of tenant shopco" in said
    assert "It is registered for mcp-user@shopco.example of tenant shopco" in said
    assert "tidegate clients add shopco refund-bot@shopco.example" in said


async def test_a_key_for_another_tenant_is_refused_at_start(kit: KitSettings) -> None:
    key = client_private_key(kit, "shopco", "refund-bot@shopco.example")
    told = r"not registered for refund-bot@shopco\.example of tenant globex.*registered for refund-bot@shopco\.example of tenant shopco"
    with pytest.raises(SigningNotWired, match=told):
        await _client(kit, key, tenant="globex").start()


async def test_a_key_never_registered_is_refused_at_start_saying_how_to_register_it(kit: KitSettings, tmp_path: Path) -> None:
    stray = SigningKey.load_or_create(tmp_path / "elsewhere", "bot")
    key = tmp_path / "elsewhere" / "bot" / "bot.key"
    assert stray.key_id
    assert key.exists()
    with pytest.raises(SigningNotWired, match=r"Register it: `tidegate clients add shopco bot@shopco.example`"):
        await _client(kit, key, principal="bot@shopco.example").start()
    with pytest.raises(SigningNotWired, match=r"refund-bot@shopco.example has another key"):
        await _client(kit, key).start()


async def test_the_registered_key_starts(kit: KitSettings) -> None:
    with pytest.raises(AssertionError, match="the client connected"):  # it goes on to connect: nothing refused it
        await _client(kit, client_private_key(kit, "shopco", "refund-bot@shopco.example")).start()


async def test_a_client_without_a_signing_key_is_refused_at_start_beside_a_deployments_registry(kit: KitSettings) -> None:
    """The 'missing key' mistake: unsigned proposals are dead-lettered `signature_missing`; it waited 30 s for each."""
    settings = ClientSettings(service_keys_dir=kit.keys_dir, tenant="shopco", principal="refund-bot@shopco.example")
    with pytest.raises(SigningNotWired) as refused:
        await Tidegate(settings, transport=NeverReached()).start()  # type: ignore[arg-type]
    said = str(refused.value)
    assert said.startswith("no TIDEGATE_CLIENT_SIGNING_KEY_PATH: the deployment refuses unsigned proposals")
    assert "`tidegate clients add shopco refund-bot@shopco.example`" in said
    assert "registered for tenant shopco: mcp-user@shopco.example, refund-bot@shopco.example" in said
