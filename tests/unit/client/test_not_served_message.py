"""A function that cannot be served says first what it takes (a catalog `topic` tool), then the key where `keys add-tool` puts it.

Finding integrator4 #5: serving the example's `issue_refund` (a built-in `python` tool) pointed at a flat
`tools/issue_refund.key` that `tidegate keys add-tool` never writes, and following that advice failed again.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tidegate.client import KeySigner, MemoryLedger, MemoryTransport, Tidegate, serve_tool
from tidegate.client.governed import NotServed
from tidegate.client.trust import DeploymentKeys


def _bus() -> MemoryTransport:
    bus = MemoryTransport()
    bus.trust = DeploymentKeys().trust()  # the deployment's public keys, as a configured client knows them
    return bus


def _private_key(path: Path) -> Path:
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pem)
    return path


async def _refusal(signer: KeySigner) -> str:
    async with Tidegate(transport=_bus(), signer=signer) as tg:
        with pytest.raises(NotServed) as refused:
            serve_tool(tg, "issue_refund", lambda args: asyncio.sleep(0, {}), MemoryLedger())
    return str(refused.value)


async def test_no_key_names_the_topic_kind_first_and_the_path_keys_add_tool_writes(tmp_path: Path) -> None:
    folder = tmp_path / "keys" / "tools"
    folder.mkdir(parents=True)
    why = await _refusal(KeySigner(_private_key(tmp_path / "client.key"), "agent@acme.example", tool_keys_dir=folder))
    assert why.startswith("tool issue_refund is not served: only a catalog tool of kind `topic` with a `reply_key_file`")
    assert why.index("kind `topic`") < why.index("cannot read the signing key")
    assert f"{folder / 'issue_refund' / 'issue_refund.key'}" in why  # where `tidegate keys add-tool issue_refund` writes it
    assert f"{folder / 'issue_refund.key'}" not in why
    assert "tidegate keys add-tool issue_refund" in why
    assert "TIDEGATE_CLIENT_TOOL_KEYS_DIR" in why
    # The other way out, for the examples' `issue_refund` swapped onto a real deployment (finding integrator2 F3): the
    # catalog's own tool needs no serving, only the agent's calls governed.
    assert "do not serve it, `serve=False` or leave it out of `serve=`" in why
    assert why.index("serve=False") < why.index("tidegate keys add-tool")


@pytest.mark.parametrize("layout", ["issue_refund/issue_refund.key", "issue_refund.key"])
async def test_a_key_where_keys_add_tool_puts_it_or_flat_beside_it_signs(tmp_path: Path, layout: str) -> None:
    folder = tmp_path / "tools"
    _private_key(folder / layout)
    signer = KeySigner(_private_key(tmp_path / "client.key"), "agent@acme.example", tool_keys_dir=folder)
    async with Tidegate(transport=_bus(), signer=signer) as tg:
        serving = serve_tool(tg, "issue_refund", lambda args: asyncio.sleep(0, {}), MemoryLedger())  # raises NotServed if unsigned
        serving.close()  # only construction is under test: the loop never starts
