"""`tidegate connectors list|enable|disable|set-credential|sign|pin|init-key|rotate-key`: tenants' accounts at systems.

Writes the grants where the executor reads them (`executor.connector_grants`), each signed with this
operator's key (`servicekit.operator_key`: the executor trusts a grant only under an allow-listed operator's
signature) and made current by an operator-signed `tidegate.control.connector_grant` record on `control` (the
executor refuses a signed grant that is not the one named there: an older row put back); a credential is read
from stdin or a file (never from the command line, so never in a shell history) and sealed to the executor's public
key before it leaves this process.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

import connectors as c
from schemas import ControlConnectorGrant, ControlConnectorGrantData
from servicekit import ControlState, KitSettings, ToolCatalog, apply_migrations, create_pool
from services.executor import ExecutorSettings
from tidegate.commands._common import console, fail, publish_signed_control, run, settings, signed_control
from tidegate.ops.control import read_trusted_control

__all__ = ["app", "executor_vault", "grant_writer"]

app = typer.Typer(help="Connectors: which tenant may use which system of record, with which sealed credential.", no_args_is_help=True)

TENANT = typer.Option(..., "--tenant", help="Tenant whose account this is.")
MIGRATIONS = Path(__file__).resolve().parents[2] / "services" / "executor" / "migrations"


def executor_vault(kit: KitSettings) -> c.Vault:
    """The executor's connector-credentials key pair, where the executor's settings put it."""
    return c.Vault(ExecutorSettings().connector_keys_dir or kit.keys_dir)


def _pinner(kit: KitSettings, state: ControlState) -> c.Pin:
    """What makes a signed grant current: its `control` record, signed and checked now, published when called."""

    def pin(grant: c.Grant) -> Callable[[], Coroutine[Any, Any, None]]:
        data = ControlConnectorGrantData(
            tenant_id=grant.tenant_id, connector=grant.connector, grant_sha256=c.grant_digest(grant), set_by=kit.operator
        )
        signed = signed_control(kit, ControlConnectorGrant.build(data, source="tidegate/cli"), "not written", "nothing changed")

        async def publish() -> None:
            await publish_signed_control(kit, signed)
            state.grants[(grant.tenant_id, grant.connector)] = data.grant_sha256

        return publish

    return pin


@asynccontextmanager
async def grant_writer(kit: KitSettings) -> AsyncIterator[c.GrantWriter]:
    """This operator's writer of the grants: each grant it writes is signed and made current on `control`."""
    state = await read_trusted_control(kit)  # which grant of each (tenant, connector) is current, as the executor reads it
    pool = await create_pool(kit.operator_database_url, max_size=2)
    try:
        await apply_migrations(pool, "executor", MIGRATIONS)  # the table may not exist before the executor's first start
        pins = state.grants.get
        yield c.GrantWriter.of_operator(kit, c.PgGrantStore(pool), pins=lambda t, n: pins((t, n)), pin=_pinner(kit, state))
    finally:
        await pool.close()


def _pairs(values: list[str]) -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"--set expects KEY=VALUE, got {item!r}")
        out[key] = value
    return out


@app.command("list")
def list_(tenant: str | None = typer.Option(None, "--tenant", help="Only this tenant's grants.")) -> None:
    """Connectors of the catalog with their tools, and each tenant's grant (never the secret)."""
    kit = settings()
    by_connector = c.connector_tools(ToolCatalog.load(*kit.tool_dirs))
    tools = Table("connector", "tool", "risk", title="connector tools")
    for name, specs in by_connector.items():
        for spec in specs:
            tools.add_row(name, spec.name, str(spec.risk))
    console.print(tools)

    async def grants() -> tuple[list[c.Grant], dict[tuple[str, str], c.GrantRefused], set[tuple[str, str]]]:
        async with grant_writer(kit) as writer:
            refused = {(g.tenant_id, g.connector): why for g, why in await writer.unverified()}
            listed = [g for g in await writer.store.all() if tenant is None or g.tenant_id == tenant]
            return listed, refused, {(g.tenant_id, g.connector) for g in listed if writer.verifier.unpinned(g)}

    listed, refused, unpinned = run(grants())
    table = Table("tenant", "connector", "enabled", "tools", "credential", "account", "signed", title="grants")
    for g in listed:
        credential = f"sealed (key {g.sealed.key_id})" if g.sealed else "[red]missing[/]"
        account = ", ".join(f"{k}={v}" for k, v in sorted(g.connection.items()))
        why = refused.get((g.tenant_id, g.connector))
        signed = f"by {g.proof.signed_by}" if why is None and g.proof else f"[red]{why.code if why else 'no'}: refused[/]"
        if why is None and (g.tenant_id, g.connector) in unpinned:
            signed += " [yellow](unpinned)[/]"
        table.add_row(g.tenant_id, g.connector, "yes" if g.enabled else "no", ", ".join(sorted(g.tools)), credential, account, signed)
    console.print(table)
    for (t, _), why in sorted(refused.items()):
        if tenant is None or t == tenant:
            console.print(f"[red]{why.code}[/]: {why}")
    for t, n in sorted(unpinned):
        console.print(
            f"[yellow]unpinned[/]: {t}/{n} is signed but no control record names it as current (written before grants were "
            "pinned): an older signed copy put back in the table would be obeyed too; check it, then `tidegate connectors pin --all`",
            soft_wrap=True,
        )


@app.command()
def enable(
    connector: str = typer.Argument(..., help="Connector, e.g. stripe."),
    tenant: str = TENANT,
    tool: list[str] = typer.Option([], "--tool", help="A tool beyond the read-only ones (repeat)."),
    all_tools: bool = typer.Option(False, "--all-tools", help="Every tool of the connector, writes included."),
    set_: list[str] = typer.Option([], "--set", help="Account setting KEY=VALUE, e.g. base_url=https://api.stripe.com (repeat)."),
) -> None:
    """Enable a connector's read-only tools for a tenant, plus any write tool named with --tool."""
    kit = settings()
    catalog = ToolCatalog.load(*kit.tool_dirs)

    async def go() -> c.Grant:
        async with grant_writer(kit) as writer:
            return await c.enable(writer, catalog, tenant, connector, tools=tool, all_tools=all_tools, connection=_pairs(set_))

    try:
        grant = run(go())
    except c.ConnectorError as exc:
        fail(str(exc))
    note = "" if grant.sealed else f"; no credential yet: `tidegate connectors set-credential {connector} --tenant {tenant}`"
    console.print(f"{connector} enabled for {tenant}: {', '.join(sorted(grant.tools))}{note}")
    for undo in sorted(c.undo_tools(catalog, grant.tools) - set(tool)):
        undone = sorted(t for t in grant.tools if c.undo_tools(catalog, [t]) == {undo})
        console.print(f"  {undo} is enabled too: it undoes {', '.join(undone)} (`tidegate undo`)")


@app.command()
def disable(
    connector: str = typer.Argument(...),
    tenant: str = TENANT,
    tool: list[str] = typer.Option([], "--tool", help="Disable only this tool (repeat); by default the whole connector."),
    forget: bool = typer.Option(False, "--forget-credential", help="Also delete the sealed credential."),
) -> None:
    """Disable a connector (or some of its tools) for a tenant; calls then fail `credential_missing` / `tool_not_enabled`."""
    kit = settings()
    catalog = ToolCatalog.load(*kit.tool_dirs)

    async def go() -> c.Grant | None:
        async with grant_writer(kit) as writer:
            return await c.disable(writer, tenant, connector, tools=tool, forget=forget, catalog=catalog)

    try:
        grant = run(go())
    except c.ConnectorError as exc:
        fail(str(exc))
    if grant is None:
        fail(f"{connector} is not connected for {tenant}")
    console.print(f"{connector} {'tools ' + ', '.join(tool) if tool else ''} disabled for {tenant}".replace("  ", " "))


@app.command("set-credential")
def set_credential(
    connector: str = typer.Argument(...),
    tenant: str = TENANT,
    from_file: Path | None = typer.Option(None, "--from-file", help="Read the secret from this file instead of stdin."),
) -> None:
    """Seal a tenant's API key or token for a connector, read from stdin (prompted, not echoed) or a file."""
    kit = settings()
    if from_file is not None:
        try:
            secret = from_file.read_text()
        except OSError as exc:
            fail(f"--from-file {from_file}: {exc.strerror or exc}")
    elif sys.stdin.isatty():
        secret = typer.prompt(f"{connector} credential for {tenant}", hide_input=True)
    else:
        secret = sys.stdin.read()
    vault = executor_vault(kit)
    vault.ensure()

    async def go() -> c.Grant:
        async with grant_writer(kit) as writer:
            return await c.set_credential(writer, vault, tenant, connector, secret)

    try:
        grant = run(go())
    except c.ConnectorError as exc:
        fail(str(exc))
    assert grant.sealed is not None
    console.print(f"credential of {connector} for {tenant} sealed to key {grant.sealed.key_id}")


def _described(grant: c.Grant, signer: str = "") -> str:
    """One grant as an operator checks it before signing or pinning it: every tool, setting and the credential's key."""
    account = ", ".join(f"{k}={v}" for k, v in sorted(grant.connection.items()))
    sealed = f"sealed (key {grant.sealed.key_id})" if grant.sealed else "no credential"
    enabled = "enabled" if grant.enabled else "disabled"
    return f"{grant.tenant_id}/{grant.connector} ({enabled}{signer}): tools {', '.join(sorted(grant.tools)) or '-'}; {account}; {sealed}"


@app.command()
def sign(
    connector: str | None = typer.Argument(None, help="Connector, e.g. zendesk (with --tenant); or --all."),
    tenant: str | None = typer.Option(None, "--tenant", help="Tenant whose grant to sign."),
    all_: bool = typer.Option(False, "--all", help="Every grant refused as `grant_unsigned` (no signature, or a denied operator's)."),
    yes: bool = typer.Option(False, "--yes", help="Sign without asking (the grants are still shown)."),
) -> None:
    """Sign grants as they stand, after you checked them: those from before grants were signed, or of a denied operator.

    The executor refuses a grant no allow-listed operator signed (`grant_unsigned`). Signing trusts every tool,
    setting and credential shown. A grant changed after it was signed (`grant_tampered`) is left out of `--all`:
    reset it (`disable --forget-credential`, then `enable` and `set-credential`) rather than sign it. A grant that is
    not the current one (`grant_rolled_back`: an older row put back, or a backup restored) is signed by name only,
    which makes it current again: check every tool, setting and credential shown first.
    """
    named = connector is not None and tenant is not None
    if (connector is None) != (tenant is None) or all_ == named:
        fail("name one grant (CONNECTOR --tenant TENANT), or --all")
    kit = settings()

    async def pending() -> list[tuple[c.Grant, c.GrantRefused]]:
        async with grant_writer(kit) as writer:
            refused = await writer.unverified()
        if all_:
            return [(g, why) for g, why in refused if why.code == c.GRANT_UNSIGNED]
        return [(g, why) for g, why in refused if (g.tenant_id, g.connector) == (tenant, connector)]

    chosen = run(pending())
    if not chosen:
        console.print("no grant to sign" if all_ else f"{connector} of {tenant}: no grant that needs signing")
        return
    for grant, why in chosen:
        console.print(_described(grant))
        console.print(f"  refused now: {why.code}")
    if not yes and not typer.confirm(f"sign {len(chosen)} grant(s) as shown, as operator {kit.operator}?"):
        fail("nothing signed")

    async def go() -> int:
        async with grant_writer(kit) as writer:
            for grant, _ in chosen:
                await writer.put(grant)  # exactly the grant shown, whatever the row holds by now
        return len(chosen)

    console.print(f"{run(go())} grant(s) signed by {kit.operator}")


@app.command()
def pin(
    connector: str | None = typer.Argument(None, help="Connector, e.g. zendesk (with --tenant); or --all."),
    tenant: str | None = typer.Option(None, "--tenant", help="Tenant whose grant to make current."),
    all_: bool = typer.Option(False, "--all", help="Every signed grant no `control` record names yet (written before grants were pinned)."),
    yes: bool = typer.Option(False, "--yes", help="Publish without asking (the grants are still shown)."),
) -> None:
    """Make signed grants current on `control` as they stand, after you checked them: those written before grants were pinned.

    The executor obeys only the grant of (tenant, connector) that the newest such record names; one no record names
    is obeyed with a warning (or refused `grant_unpinned` with TIDEGATE_EXECUTOR_REQUIRE_PINNED_GRANTS). A grant that
    does not verify, or that is not the current one (`grant_rolled_back`), is not pinned here: see `connectors sign`.
    """
    named = connector is not None and tenant is not None
    if (connector is None) != (tenant is None) or all_ == named:
        fail("name one grant (CONNECTOR --tenant TENANT), or --all")
    kit = settings()

    async def pending() -> list[c.Grant]:
        async with grant_writer(kit) as writer:
            refused = {(g.tenant_id, g.connector) for g, _ in await writer.unverified()}
            chosen = [g for g in await writer.store.all() if (g.tenant_id, g.connector) not in refused and writer.verifier.unpinned(g)]
        return [g for g in chosen if all_ or (g.tenant_id, g.connector) == (tenant, connector)]

    chosen = run(pending())
    if not chosen:
        console.print("no grant to pin" if all_ else f"{connector} of {tenant}: no signed grant that is not current yet")
        return
    for grant in chosen:
        assert grant.proof is not None
        console.print(_described(grant, f", signed by {grant.proof.signed_by}"))
    if not yes and not typer.confirm(f"make {len(chosen)} grant(s) current as shown, as operator {kit.operator}?"):
        fail("nothing published")
    publishing = _pinner(kit, ControlState())
    for grant in chosen:
        run(publishing(grant)())
    console.print(f"{len(chosen)} grant(s) made current by {kit.operator}")


@app.command("init-key")
def init_key() -> None:
    """Create the executor's credential key pair if there is none (the executor also does on its first start)."""
    vault = executor_vault(settings())
    console.print(f"key {vault.ensure()} in {vault.keys_dir}")


@app.command("rotate-key")
def rotate_key() -> None:
    """New key pair; every stored credential is sealed again to it, then the old private key is deleted. Run on the executor's host."""
    kit = settings()
    vault = executor_vault(kit)
    vault.ensure()
    old, new = vault.rotate()

    async def go() -> tuple[int, int]:
        async with grant_writer(kit) as writer:
            return await c.reseal_all(writer, vault)

    try:
        moved, foreign = run(go())
    except c.ConnectorError as exc:
        fail(f"{exc}. The old key {old} is kept, so every credential still opens: sign or reset those grants, then rotate again")
    vault.retire(old)
    note = f"; {foreign} sealed to keys this host does not hold were left as they are" if foreign else ""
    console.print(f"rotated {old} -> {new}; {moved} credentials sealed again{note}")
