"""What `tidegate connectors` does, over a grant store and the vault: enable, disable, set a credential, sign, rotate the key.

Every grant written is signed by the operator (`GrantWriter`) and, where the writer is given a way to (`pin`), made
current on `control` (`tidegate.control.connector_grant`); a stored grant is carried into a new one only if it
verifies, and is the current one: a row someone changed or put back in the database is never signed over by a later
command.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from connectors._account import account_problems
from connectors._proof import GrantRefused, GrantSigner, GrantVerifier, Pins
from connectors._store import Grant, GrantStore
from schemas import RiskClass, ToolSpec
from servicekit.authority import deployment_authority
from servicekit.key_files import operator_key
from servicekit.settings import KitSettings
from servicekit.vault import Vault, VaultError

# Given a signed grant: checks the record that makes it current (failing before anything is written), and returns
# what publishes that record.
Pin = Callable[[Grant], Callable[[], Coroutine[Any, Any, None]]]

__all__ = ["ConnectorError", "GrantWriter", "Pin", "connector_tools", "disable", "enable", "reseal_all", "set_credential", "undo_tools"]


class ConnectorError(ValueError):
    """A request the catalog or the grants refuse (unknown connector or tool, empty secret, a stored grant that does not verify)."""


@dataclass(frozen=True)
class GrantWriter:
    """The operator's door to the grants: a stored grant is read only if it verifies, and each grant written is signed."""

    store: GrantStore
    signer: GrantSigner
    verifier: GrantVerifier
    pin: Pin | None = None

    @classmethod
    def of_operator(cls, kit: KitSettings, store: GrantStore, pins: Pins | None = None, pin: Pin | None = None) -> GrantWriter:
        """This machine's operator (`kit.operator`, its key made and allow-listed on first use) writing to `store`.

        `pins` (what `control` names as current) and `pin` (publishing a grant's record there) are the CLI's.
        """
        return cls(store, GrantSigner(operator_key(kit)), GrantVerifier(deployment_authority(kit), pins=pins), pin)

    async def current(self, tenant_id: str, connector: str) -> Grant | None:
        """The stored grant of (tenant, connector), if any; ConnectorError if it does not verify (nothing is changed then)."""
        grant = await self.store.get(tenant_id, connector)
        if grant is not None:
            try:
                self.verifier.check(grant)
            except GrantRefused as refused:
                raise ConnectorError(f"{refused}; nothing was changed") from refused
        return grant

    async def put(self, grant: Grant) -> Grant:
        """Sign `grant` with the operator's key, store it, and make it current on `control` (with `pin`); the grant as stored.

        The row and its record are one step: a cancellation on the way (Ctrl-C, a task cancelled) waits for both, then is
        raised; one whose record then fails raises the ConnectorError that says what to run. A row written and its record
        not published is never left unsaid (the executor refuses that row: `grant_rolled_back`).
        """
        signed = self.signer.sign(grant)
        publish = None if self.pin is None else self.pin(signed)  # a record the services would refuse fails here, nothing written
        step = asyncio.ensure_future(self._write(signed, publish))
        cancelled: asyncio.CancelledError | None = None
        while not step.done():
            try:
                await asyncio.shield(step)
            except asyncio.CancelledError as exc:  # cancelled from outside: the step goes on to its end first
                if step.done() and step.cancelled():
                    raise
                cancelled = exc
        if cancelled is not None and step.exception() is None:
            raise cancelled
        return step.result()  # the step's own error (ConnectorError: the row written, its record not) before the cancellation

    async def _write(self, signed: Grant, publish: Callable[[], Coroutine[Any, Any, None]] | None) -> Grant:
        await self.store.put(signed)
        if publish is not None:
            try:
                await publish()
            except Exception as exc:  # the row is written: say what the executor does with it, and what to run
                raise ConnectorError(
                    f"the {signed.connector} grant of {signed.tenant_id} was written, but the control record that makes it "
                    f"current was not published ({exc}): the executor refuses it (grant_rolled_back) while an older one is "
                    f"current; run `tidegate connectors pin {signed.connector} --tenant {signed.tenant_id}`"
                ) from exc
        return signed

    async def unverified(self) -> list[tuple[Grant, GrantRefused]]:
        """Every stored grant the executor would refuse, with why."""
        out = []
        for grant in await self.store.all():
            try:
                self.verifier.check(grant)
            except GrantRefused as refused:
                out.append((grant, refused))
        return out


def connector_tools(catalog: Mapping[str, ToolSpec]) -> dict[str, list[ToolSpec]]:
    """The catalog's connector tools by connector, each list sorted by tool name."""
    out: dict[str, list[ToolSpec]] = {}
    for spec in catalog.values():
        if spec.connector is not None:
            out.setdefault(spec.connector, []).append(spec)
    return {name: sorted(specs, key=lambda s: s.name) for name, specs in sorted(out.items())}


async def enable(
    writer: GrantWriter,
    catalog: Mapping[str, ToolSpec],
    tenant_id: str,
    connector: str,
    *,
    tools: Iterable[str] = (),
    all_tools: bool = False,
    connection: Mapping[str, str] | None = None,
) -> Grant:
    """Enable a connector for a tenant: its read-only tools, plus the tools named (or every tool with `all_tools`).

    Tools enabled before stay enabled; each write's undo tool (its catalog entry's `undo.tool`) is enabled with it, since
    the policy lets a reversible write run alone and `tidegate undo` must then be able to run its undo. Account settings
    given replace those of the same name (an empty value removes one). A setting the connector does not read, or a
    value it cannot use, is refused and nothing is changed (`connectors._account`).
    """
    specs = connector_tools(catalog).get(connector)
    if not specs:
        raise ConnectorError(f"no tool of the catalog belongs to connector {connector!r}")
    names = {s.name for s in specs}
    unknown = sorted(set(tools) - names)
    if unknown:
        raise ConnectorError(f"{', '.join(unknown)} not tools of {connector} (its tools: {', '.join(sorted(names))})")
    problems = account_problems(connector, connection or {})
    if problems:
        raise ConnectorError("; ".join(problems) + "; nothing was changed")
    chosen = names if all_tools else {s.name for s in specs if s.risk is RiskClass.READ} | set(tools)
    chosen |= undo_tools(catalog, chosen) & names  # a write runs alone only where it can be undone: its undo comes with it
    grant = await writer.current(tenant_id, connector) or Grant(tenant_id, connector)
    settings = {k: v for k, v in {**grant.connection, **(connection or {})}.items() if v}  # an empty value removes one
    grant = replace(grant, enabled=True, tools=grant.tools | chosen, connection=settings)
    return await writer.put(grant)


def undo_tools(catalog: Mapping[str, ToolSpec], tools: Iterable[str]) -> set[str]:
    """The tools that undo `tools` (their catalog entries' `undo.tool`)."""
    return {u for t in tools if (spec := catalog.get(t)) is not None and spec.undo is not None and (u := spec.undo.tool) is not None}


async def disable(
    writer: GrantWriter,
    tenant_id: str,
    connector: str,
    *,
    tools: Iterable[str] = (),
    forget: bool = False,
    catalog: Mapping[str, ToolSpec] | None = None,
) -> Grant | None:
    """Disable the named tools, or the whole connector (every call then fails `credential_missing`); `forget` deletes the secret.

    A tool named that the grant does not enable is refused and nothing is changed (a misspelt name once said "disabled"
    and left the write running), as is an undo tool whose write stays enabled (given `catalog`): that write would run
    alone with no way back. The whole connector disabled with `forget` also resets a stored grant that does not verify:
    to a signed, disabled grant with no tool, no account setting and no credential (nothing of the untrusted row is kept).
    """
    stored = await writer.store.get(tenant_id, connector)
    if stored is None:
        return None
    names = set(tools)
    if names - stored.tools:
        enabled = ", ".join(sorted(stored.tools)) or "none"
        raise ConnectorError(
            f"{', '.join(sorted(names - stored.tools))} not enabled tools of {connector} for {tenant_id} (enabled: {enabled}); "
            "nothing was changed"
        )
    if names and catalog is not None:
        stranded = sorted(t for t in stored.tools - names if undo_tools(catalog, [t]) & names)
        if stranded:
            raise ConnectorError(
                f"{', '.join(sorted(undo_tools(catalog, stranded) & names))} undo {', '.join(stranded)}, which would stay enabled "
                f"with no way back: disable {', '.join(stranded)} too (--tool); nothing was changed"
            )
    if forget and not names:
        try:
            grant = await writer.current(tenant_id, connector)
        except ConnectorError:
            return await writer.put(Grant(tenant_id, connector, enabled=False))
    else:
        grant = await writer.current(tenant_id, connector)
    assert grant is not None
    grant = replace(grant, tools=grant.tools - names) if names else replace(grant, enabled=False)
    if forget:
        grant = replace(grant, sealed=None)
    return await writer.put(grant)


async def set_credential(writer: GrantWriter, vault: Vault, tenant_id: str, connector: str, secret: str) -> Grant:
    """Seal `secret` to the executor's key and store it in the tenant's grant, which `enable` made.

    Refused, nothing sealed: an empty secret, one of several lines (a paste that took the next line too; a JSON key file
    is read whole), and a connector the tenant has no grant of (`enable` first: it checks the connector's name and its
    account settings). A misspelt connector once sealed a new key under `strpe` while the leaked one stayed in use.
    """
    secret = secret.strip()
    if not secret:
        raise ConnectorError("empty credential; nothing was sealed")
    if not secret.startswith("{") and any(c.isspace() for c in secret):
        raise ConnectorError("the credential holds whitespace or a line break (a paste of more than the key?); nothing was sealed")
    grant = await writer.current(tenant_id, connector)
    if grant is None:
        raise ConnectorError(
            f"{connector} is not enabled for {tenant_id}: run `tidegate connectors enable {connector} --tenant {tenant_id}` first "
            "(`tidegate connectors list` shows the connectors); nothing was sealed"
        )
    return await writer.put(replace(grant, sealed=vault.seal(secret, tenant_id, connector)))


async def reseal_all(writer: GrantWriter, vault: Vault) -> tuple[int, int]:
    """Seal every stored secret this vault can open again to its current key, and sign each grant so changed.

    Returns (moved, foreign): how many were sealed again, and how many are sealed to a key this vault does not
    hold (another deployment's, sharing the database); those are left as they are. If a grant to seal again does not
    verify, nothing is sealed (ConnectorError): its secret would be lost with the old key, and signing it would trust it.
    """
    current = vault.current_key_id()
    moving: list[tuple[Grant, str]] = []
    foreign = 0
    refused: list[str] = []
    for grant in await writer.store.all():
        if grant.sealed is None or grant.sealed.key_id == current:
            continue
        try:
            secret = vault.open(grant.sealed, grant.tenant_id, grant.connector)
        except VaultError:
            foreign += 1
            continue
        try:
            writer.verifier.check(grant)
        except GrantRefused as why:
            refused.append(str(why))
        moving.append((grant, secret))
    if refused:
        raise ConnectorError("; ".join(refused) + "; no credential was sealed again")
    for grant, secret in moving:
        await writer.put(replace(grant, sealed=vault.seal(secret, grant.tenant_id, grant.connector)))
    return len(moving), foreign
