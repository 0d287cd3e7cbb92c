"""Connectors to the systems of record people use (Stripe, Zendesk, ...), each a set of catalog tools.

A connector tool is a catalog tool of kind `python` with `connector: <name>`; the executor calls it
only for a tenant that enabled it, with that tenant's credential opened from its sealed grant
(`ToolContext.credential`, `ToolContext.connection`), and only under the signature of the operator who wrote
the grant (`GrantVerifier`). This package imports the kit and `systems`' tool interface, never a service.
"""

from connectors._access import Access, ConnectorAccess
from connectors._credentials import KEY_NAME, Vault
from connectors._manage import ConnectorError, GrantWriter, Pin, connector_tools, disable, enable, reseal_all, set_credential, undo_tools
from connectors._proof import (
    GRANT_ROLLED_BACK,
    GRANT_TAMPERED,
    GRANT_UNPINNED,
    GRANT_UNSIGNED,
    GrantRefused,
    GrantSigner,
    GrantVerifier,
    Pins,
    grant_digest,
    grant_message,
)
from connectors._store import Grant, GrantProof, GrantStore, InMemoryGrantStore, PgGrantStore
from servicekit.vault import Sealed, VaultError

__all__ = [
    "GRANT_ROLLED_BACK",
    "GRANT_TAMPERED",
    "GRANT_UNPINNED",
    "GRANT_UNSIGNED",
    "KEY_NAME",
    "Access",
    "ConnectorAccess",
    "ConnectorError",
    "Grant",
    "GrantProof",
    "GrantRefused",
    "GrantSigner",
    "GrantStore",
    "GrantVerifier",
    "GrantWriter",
    "InMemoryGrantStore",
    "PgGrantStore",
    "Pin",
    "Pins",
    "Sealed",
    "Vault",
    "VaultError",
    "connector_tools",
    "disable",
    "enable",
    "grant_digest",
    "grant_message",
    "reseal_all",
    "set_credential",
    "undo_tools",
]
