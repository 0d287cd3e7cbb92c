"""`tidegate budget set|list`: a tenant's spend cap, and what it has spent, without a restart."""

from __future__ import annotations

import math
from dataclasses import dataclass

import typer
from pydantic import ValidationError
from rich.table import Table

from schemas import ControlBudget, ControlBudgetData
from servicekit import ControlState, KitSettings, connect
from services.policy import PackSettings
from tidegate.commands._common import BY_HELP, console, fail, publish_control, run, settings, signer_settings
from tidegate.commands._known import onboarded_tenants, pack_settings, refuse_unknown
from tidegate.commands.killswitch import read_control

__all__ = ["BudgetLine", "app", "budget_lines", "publish_budget", "tenant_cap"]

app = typer.Typer(help="Tenant budgets on the `control` topic: the spend cap policy enforces, and spend so far.", no_args_is_help=True)


@dataclass(frozen=True)
class BudgetLine:
    """One tenant's cap (and where it comes from) and its spend so far."""

    tenant: str
    limit_usd: float | None
    source: str  # "control.budget", "control.tenant (set by …)", "pack settings", or "none"
    spent_usd: float

    @property
    def remaining_usd(self) -> float | None:
        """What the tenant may still reserve, if it has a cap."""
        return None if self.limit_usd is None else max(0.0, self.limit_usd - self.spent_usd)


async def publish_budget(kit: KitSettings, *, tenant: str, limit_usd: float, set_by: str) -> ControlBudget:
    """Publish a `control.budget` record (key `budget:<tenant>`, its scope: the newest sequence wins)."""
    event = ControlBudget.build(ControlBudgetData(tenant_id=tenant, limit_usd=limit_usd, set_by=set_by), source="tidegate/cli")
    await publish_control(kit, event)
    return event


def tenant_cap(pack: PackSettings, state: ControlState, tenant: str) -> tuple[float | None, str]:
    """The spend cap the policy enforces for `tenant`, and where it comes from, by the policy's precedence.

    A `control.budget` record first (`engine._facts`); else the tenant's settings as the policy builds them: its
    `control.tenant` record (over the pack's `default` entry) or its admins' directory, when either exists
    (`PackSettings.from_records`), else the pack's own entry. A record the policy would refuse onboards nothing: the pack's.
    """
    if tenant in state.budgets:
        return state.budgets[tenant], "control.budget"
    record = state.tenants.get(tenant)
    try:
        settings = pack.of_control(state, tenant)
    except ValidationError:  # the policy refuses such a record (it logs it): the tenant is the pack's
        record, settings = None, None
    settings = settings or pack.tenant(tenant)
    if settings.budget_usd is None:
        return None, "none"
    if record is not None and record.settings.get("budget_usd") is not None:
        return settings.budget_usd, f"control.tenant (set by {record.set_by})"
    return settings.budget_usd, "pack settings"


async def budget_lines(kit: KitSettings) -> list[BudgetLine]:
    """Every onboarded tenant and every tenant with a cap or with spend: the cap the policy enforces (`tenant_cap`) and its spend."""
    state = await read_control(kit)
    await read_control(kit, "directory", state)
    pack = pack_settings(kit, state)
    conn = await connect(kit.operator_database_url)
    try:
        has_schema = await conn.fetchval("SELECT to_regclass('policy.spend') IS NOT NULL")
        rows = await conn.fetch("SELECT tenant_id, amount_usd FROM policy.spend WHERE task_id = '*'") if has_schema else []
    finally:
        await conn.close()
    spent = {r["tenant_id"]: float(r["amount_usd"]) for r in rows}
    tenants = sorted((onboarded_tenants(kit, state, pack) - {"default"}) | set(state.budgets) | set(spent))
    return [BudgetLine(tenant, *tenant_cap(pack, state, tenant), spent.get(tenant, 0.0)) for tenant in tenants]


@app.command("set")
def set_(
    tenant: str = typer.Argument(..., help="Tenant whose cap to set."),
    limit_usd: float = typer.Argument(..., help="The new cap, USD (spend so far counts against it; 0 stops all spending)."),
    by: str = typer.Option(None, "--by", help=BY_HELP),
    force: bool = typer.Option(False, "--force", help="Set it even for a tenant not onboarded (yet)."),
) -> None:
    """Set a tenant's spend cap. It overrides the pack's `budget_usd` at once, on every copy of the policy service."""
    if not math.isfinite(limit_usd):
        fail(f"a budget is a finite number of USD (got {limit_usd})")
    if limit_usd < 0:
        fail(f"a budget cannot be negative (got {limit_usd})")
    if tenant in ("", "*"):
        fail("name one tenant: a budget is per tenant")
    kit = signer_settings(by)
    if not force:
        state = run(read_control(kit))
        run(read_control(kit, "directory", state))
        refuse_unknown("tenant", tenant, onboarded_tenants(kit, state), "onboarded (`tidegate tenant show` lists them)")
    run(publish_budget(kit, tenant=tenant, limit_usd=limit_usd, set_by=kit.operator))
    console.print(f"budget set: tenant={tenant} limit={limit_usd!r} USD")


@app.command("list")
def list_() -> None:
    """Each tenant's cap the policy enforces (`control.budget`, its `control.tenant` record, or the pack), its spend and what remains."""
    lines = run(budget_lines(settings()))
    if not lines:
        console.print("no tenant has a budget or any spend")
        return
    table = Table("tenant", "limit USD", "from", "spent USD", "remaining USD")
    for line in lines:
        table.add_row(
            line.tenant,
            "-" if line.limit_usd is None else f"{line.limit_usd:.4f}",
            line.source,
            f"{line.spent_usd:.4f}",
            "-" if line.remaining_usd is None else f"{line.remaining_usd:.4f}",
        )
    console.print(table)
