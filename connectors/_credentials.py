"""The executor's vault of tenants' connector credentials: `servicekit.vault.Vault` with the executor's key pair.

Whoever sets a credential (`tidegate connectors set-credential`) needs only the public key
(`<keys_dir>/connector-credentials.pub`); only the executor, whose folder holds the private key
(`<keys_dir>/executor/connector-credentials.key`), opens it, bound to its tenant and connector.
"""

from __future__ import annotations

from pathlib import Path

from servicekit.vault import Vault as _KitVault

__all__ = ["KEY_NAME", "OWNER", "Vault"]

KEY_NAME = "connector-credentials"
OWNER = "executor"  # whose key folder holds the private keys


class Vault(_KitVault):
    """The executor's connector-credential key pair(s) under `keys_dir`: the current one seals, any known one opens."""

    def __init__(self, keys_dir: Path) -> None:
        super().__init__(
            keys_dir,
            owner=OWNER,
            key_name=KEY_NAME,
            purpose="connector-credential",
            made_by="start the executor once (or run `tidegate connectors init-key`)",
        )
