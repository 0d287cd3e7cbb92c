"""`tidegate killswitch set|clear|list`: stop a tool, a tenant, or a tool for one tenant, everywhere, at once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection

import typer
from rich.table import Table

from schemas import ControlKillswitch, ControlKillswitchData
from servicekit import ControlState, KitSettings
from tidegate.commands._common import BY_HELP, TEXT_MAX, console, err_console, fail, publish_control, run, settings, shown, signer_settings
from tidegate.commands._known import catalog_tools, onboarded_tenants, refuse_unknown
from tidegate.ops.control import read_trusted_control

__all__ = ["app", "no_such_switch", "publish_killswitch", "read_control"]

app = typer.Typer(help="Kill switches on the `control` topic: effective within a second, no restart.", no_args_is_help=True)

TOOL = typer.Option("*", "--tool", help="Tool to stop, or `*` for every tool.")
TENANT = typer.Option("*", "--tenant", help="Tenant to stop, or `*` for every tenant.")


async def publish_killswitch(kit: KitSettings, *, tenant: str, tool: str, active: bool, reason: str, set_by: str) -> ControlKillswitch:
    """Publish a kill switch record (key `killswitch:<tenant>:<tool>`, its scope: the newest sequence wins)."""
    event = ControlKillswitch.build(
        ControlKillswitchData(tenant_id=tenant, tool=tool, active=active, reason=reason, set_by=set_by), source="tidegate/cli"
    )
    await publish_control(kit, event)
    return event


SKIPS_SHOWN = 5
"""Skipped records reported one by one; the rest are counted by reason in one line at the end. Whoever holds `ops.properties`
can append junk to `control` (kept forever): 100,000 records printed 800,000 lines before `killswitch list` answered."""


async def read_control(kit: KitSettings, name: str = "control", state: ControlState | None = None) -> ControlState:
    """Read `control` (or `directory`, into `state`) to its current end as the services would.

    Each record they would refuse is skipped; the first `SKIPS_SHOWN` are reported on stderr, the others counted by reason
    in one line (with the last offset).
    """
    more: Counter[str] = Counter()
    seen = {"skipped": 0, "last": 0}

    def report(offset: int, why: str) -> None:
        seen["skipped"] += 1
        seen["last"] = offset
        if seen["skipped"] <= SKIPS_SHOWN:
            err_console.print(f"[yellow]skipped[/] {name} record at offset {offset}: {shown(why, TEXT_MAX)}", highlight=False)
        else:
            more[why.split(":", 1)[0]] += 1

    read = await read_trusted_control(kit, name, state, on_skip=report)
    if more:
        reasons = ", ".join(f"{shown(code, 40)} {count}" for code, count in more.most_common())
        err_console.print(
            f"[yellow]skipped[/] {more.total()} more {name} records, up to offset {seen['last']} ({reasons}): records the services "
            f"refuse too; a {name} that grows with them slows every service's start (docs/security/bus.md)",
            highlight=False,
        )
    return read


FORCE = typer.Option(False, "--force", help="Set it even for a tool in no catalog, or a tenant not onboarded (one added later).")


@app.command("set")
def set_(
    tool: str = TOOL,
    tenant: str = TENANT,
    reason: str = typer.Option(..., "--reason", help="Why (recorded, shown in every denial)."),
    by: str = typer.Option(None, "--by", help=BY_HELP),
    force: bool = FORCE,
) -> None:
    """Set a kill switch: every matching proposal is denied `kill_switch`, and the executor refuses matching calls."""
    if tool == "*" and tenant == "*":
        console.print("[yellow]warning:[/] stopping every tool for every tenant")
    kit = signer_settings(by)
    if not force:
        _refuse_unknown_scope(kit, tool=tool, tenant=tenant)
    run(publish_killswitch(kit, tenant=tenant, tool=tool, active=True, reason=reason, set_by=kit.operator))
    console.print(f"kill switch set: tenant={tenant} tool={tool}")


def _refuse_unknown_scope(kit: KitSettings, *, tool: str, tenant: str) -> None:
    """A switch naming a tool or tenant nothing would match stops nothing: said at once, so a typo does not pass for a stop."""
    if tool != "*":
        refuse_unknown("tool", tool, catalog_tools(kit), f"in the tool catalog ({', '.join(map(str, kit.tool_dirs))})")
    if tenant != "*":
        state = run(read_control(kit))
        run(read_control(kit, "directory", state))
        refuse_unknown("tenant", tenant, onboarded_tenants(kit, state), "onboarded (`tidegate tenant show` lists them)")


@app.command()
def clear(
    tool: str = TOOL,
    tenant: str = TENANT,
    by: str = typer.Option(None, "--by", help=BY_HELP),
    reason: str = typer.Option("", "--reason", help="Why it is cleared."),
) -> None:
    """Clear the kill switch of exactly this scope (tenant, tool); exit 1, naming the active ones near it, when none is set there."""
    kit = signer_settings(by)
    active = run(read_control(kit)).killswitches
    if (tenant, tool) not in active:
        fail(no_such_switch(tenant, tool, active))
    run(publish_killswitch(kit, tenant=tenant, tool=tool, active=False, reason=reason, set_by=kit.operator))
    console.print(f"kill switch cleared: tenant={tenant} tool={tool}")


def no_such_switch(tenant: str, tool: str, active: Collection[tuple[str, str]]) -> str:
    """Why nothing is cleared, and the active switches of the same tool (or tenant) with the options that name them."""
    near = sorted(scope for scope in active if (tool != "*" and scope[1] == tool) or (tenant != "*" and scope[0] == tenant))
    said = f"no active kill switch has exactly tenant={tenant} tool={tool}, nothing cleared"
    if not near:
        return f"{said} (`tidegate killswitch list` shows the active ones)"
    return f"{said}; " + "; ".join(f"{t}/{n} is active: use --tenant {t} --tool {n}" for t, n in near)


@app.command("list")
def list_() -> None:
    """List the active kill switches (read from the `control` topic)."""
    state = run(read_control(settings()))
    if not state.killswitches:
        console.print("no active kill switch")
        return
    table = Table("tenant", "tool", "reason", "set by", "since")
    for (tenant, tool), event in sorted(state.killswitches.items()):
        since = event.time.isoformat(timespec="seconds")
        table.add_row(shown(tenant), shown(tool), shown(event.data.reason), shown(event.data.set_by), since)
    console.print(table)
