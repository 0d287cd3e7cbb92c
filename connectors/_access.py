"""Opening a tenant's credential for one connector call, or saying clearly why the call cannot be made."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from connectors._proof import GRANT_ROLLED_BACK, GRANT_UNPINNED, GRANT_UNSIGNED, GrantRefused, GrantVerifier, grant_digest
from connectors._store import GrantStore
from servicekit.metrics import observe_row_refused
from servicekit.toolcontract import ToolError
from servicekit.vault import Vault, VaultError

__all__ = ["Access", "ConnectorAccess"]

log = logging.getLogger(__name__)
# `tidegate_rows_refused_total{reason}` of each refusal of a grant
_REASONS = {GRANT_UNSIGNED: "unsigned", GRANT_ROLLED_BACK: "rolled_back", GRANT_UNPINNED: "unpinned"}


@dataclass(frozen=True)
class Access:
    """What one call may use: the secret (never logged) and the account settings."""

    secret: str = field(repr=False)
    connection: dict[str, str]


class ConnectorAccess:
    """Checks the tenant's grant for a tool and opens its sealed credential; the executor's only door to secrets of connectors.

    The grant is believed only under an operator's signature (`verifier`): its enabled tools, its account
    settings (where the credential is sent) and the sealed credential are all signed together.
    """

    def __init__(self, store: GrantStore, vault: Vault, verifier: GrantVerifier) -> None:
        self.store = store
        self.vault = vault
        self.verifier = verifier
        self._told_unpinned: set[str] = set()  # digests of grants obeyed unpinned, each told once

    async def for_call(self, tenant_id: str, connector: str, tool: str) -> Access:
        """The credential for `tool` of `connector` for `tenant_id`.

        Raises:
            ToolError: `credential_missing` (no grant, disabled, no secret, or a secret the executor cannot open),
                `tool_not_enabled` (the tenant did not enable this tool), `grant_unsigned` / `grant_tampered` (the grant
                carries no operator's signature, or one that does not verify), `grant_rolled_back` (signed, but not the
                grant `control` names as current) or `grant_unpinned` (none named, where required); none is retryable,
                nothing was sent.
        """
        grant = await self.store.get(tenant_id, connector)
        if grant is not None:
            try:
                self.verifier.check(grant)
            except GrantRefused as refused:
                log.warning("refused a call of %s for tenant %s: %s: %s", tool, tenant_id, refused.code, refused)
                observe_row_refused("executor", "connector_grants", _REASONS.get(refused.code, "invalid"))
                raise ToolError(refused.code, str(refused)) from refused
            if self.verifier.unpinned(grant) and (digest := grant_digest(grant)) not in self._told_unpinned:
                self._told_unpinned.add(digest)
                log.warning(
                    "the %s grant of tenant %s is obeyed though no operator's control record names it as current (written "
                    "before grants were pinned): an older signed copy put back in the table would be obeyed too; run "
                    "`tidegate connectors pin --all`",
                    connector,
                    tenant_id,
                )
        if grant is None or not grant.enabled:
            state = "is not connected" if grant is None else "was disabled"
            raise ToolError("credential_missing", f"{connector} {state} for tenant {tenant_id} (see `tidegate connectors`)")
        if tool not in grant.tools:
            raise ToolError(
                "tool_not_enabled",
                f"tenant {tenant_id} has not enabled {tool} of {connector}: `tidegate connectors enable {connector} --tenant {tenant_id} "
                f"--tool {tool}`",
            )
        if grant.sealed is None:
            raise ToolError("credential_missing", f"no credential set for {connector} of tenant {tenant_id}")
        try:
            secret = self.vault.open(grant.sealed, tenant_id, connector)
        except VaultError as exc:
            raise ToolError("credential_missing", f"the {connector} credential of tenant {tenant_id} cannot be opened: {exc}") from exc
        return Access(secret, dict(grant.connection))
