"""What `tidegate connectors` does, over a grant store and the vault: enable, disable, set a credential, rotate the key."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace

from connectors._store import Grant, GrantStore
from connectors._vault import Vault, VaultError
from schemas import RiskClass, ToolSpec

__all__ = ["ConnectorError", "connector_tools", "disable", "enable", "reseal_all", "set_credential"]


class ConnectorError(ValueError):
    """A request the catalog or the grants refuse (unknown connector or tool, empty secret)."""


def connector_tools(catalog: Mapping[str, ToolSpec]) -> dict[str, list[ToolSpec]]:
    """The catalog's connector tools by connector, each list sorted by tool name."""
    out: dict[str, list[ToolSpec]] = {}
    for spec in catalog.values():
        if spec.connector is not None:
            out.setdefault(spec.connector, []).append(spec)
    return {name: sorted(specs, key=lambda s: s.name) for name, specs in sorted(out.items())}


async def enable(
    store: GrantStore,
    catalog: Mapping[str, ToolSpec],
    tenant_id: str,
    connector: str,
    *,
    tools: Iterable[str] = (),
    all_tools: bool = False,
    connection: Mapping[str, str] | None = None,
) -> Grant:
    """Enable a connector for a tenant: its read-only tools, plus the tools named (or every tool with `all_tools`).

    Tools enabled before stay enabled; account settings given replace those of the same name.
    """
    specs = connector_tools(catalog).get(connector)
    if not specs:
        raise ConnectorError(f"no tool of the catalog belongs to connector {connector!r}")
    names = {s.name for s in specs}
    unknown = sorted(set(tools) - names)
    if unknown:
        raise ConnectorError(f"{', '.join(unknown)} not tools of {connector} (its tools: {', '.join(sorted(names))})")
    chosen = names if all_tools else {s.name for s in specs if s.risk is RiskClass.READ} | set(tools)
    grant = await store.get(tenant_id, connector) or Grant(tenant_id, connector)
    grant = replace(grant, enabled=True, tools=grant.tools | chosen, connection={**grant.connection, **(connection or {})})
    await store.put(grant)
    return grant


async def disable(store: GrantStore, tenant_id: str, connector: str, *, tools: Iterable[str] = (), forget: bool = False) -> Grant | None:
    """Disable the named tools, or the whole connector (every call then fails `credential_missing`); `forget` deletes the secret."""
    grant = await store.get(tenant_id, connector)
    if grant is None:
        return None
    names = set(tools)
    grant = replace(grant, tools=grant.tools - names) if names else replace(grant, enabled=False)
    if forget:
        grant = replace(grant, sealed=None)
    await store.put(grant)
    return grant


async def set_credential(store: GrantStore, vault: Vault, tenant_id: str, connector: str, secret: str) -> Grant:
    """Seal `secret` to the executor's key and store it in the tenant's grant (created disabled-by-scope: no tool yet)."""
    secret = secret.strip()
    if not secret:
        raise ConnectorError("empty credential")
    grant = await store.get(tenant_id, connector) or Grant(tenant_id, connector)
    grant = replace(grant, sealed=vault.seal(secret, tenant_id, connector))
    await store.put(grant)
    return grant


async def reseal_all(store: GrantStore, vault: Vault) -> tuple[int, int]:
    """Seal every stored secret this vault can open again to its current key.

    Returns (moved, foreign): how many were sealed again, and how many are sealed to a key this vault does not
    hold (another deployment's, sharing the database); those are left as they are.
    """
    current = vault.current_key_id()
    moved = foreign = 0
    for grant in await store.all():
        if grant.sealed is None or grant.sealed.key_id == current:
            continue
        try:
            secret = vault.open(grant.sealed, grant.tenant_id, grant.connector)
        except VaultError:
            foreign += 1
            continue
        await store.put(replace(grant, sealed=vault.seal(secret, grant.tenant_id, grant.connector)))
        moved += 1
    return moved, foreign
