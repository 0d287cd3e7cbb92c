"""`tidegate autonomy report`: what humans did with the escalations of a window, and the settings it could safely widen."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
import yaml
from rich.table import Table

from tidegate.commands._common import console, fail, run, settings, shown

app = typer.Typer(help="Earn trust, widen permissions: the autonomy report.", no_args_is_help=True)


@app.command()
def report(
    since: str = typer.Option("30d", "--since", help="Start of the window: a duration ago (`30d`, `12h`) or an ISO time."),
    until: str = typer.Option("now", "--until", help="End of the window (exclusive), same forms."),
    tenant: str = typer.Option(None, "--tenant", help="Only this tenant."),
    write: Path = typer.Option(
        Path("autonomy-candidate.yaml"), "--write", help="Where to write the candidate tenant settings (for `tidegate whatif`)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    keep_payee_bound: bool = typer.Option(
        False,
        "--keep-payee-bound",
        help="A wider refund threshold of a tenant whose per-payee daily bound is unset raises that bound too; "
        "write the bound at its figure today instead (a refund at or over it still escalates).",
    ),
) -> None:
    """Per tenant, tool and trigger: escalations approved unchanged, edited, rejected, said needless; the wider settings it supports.

    Nothing widens by itself: the candidate is written to a file; replay it with
    `tidegate whatif --tenant-settings FILE --from <since>`, then publish it with `tidegate tenant set`.
    """
    from services.policy import PackError
    from tidegate.commands.killswitch import read_control
    from tidegate.ops.autonomy import NEEDLESS, autonomy_report, read_record
    from tidegate.ops.whatif import load_pack, tenants_of

    kit = settings()
    try:
        pack = load_pack(kit.policy_dir, *kit.tool_dirs)
    except PackError as exc:
        fail("the policy pack does not compile:\n  " + "\n  ".join(exc.problems))
    window = run(read_record(kit, since, tenant, until))
    events = [r.event for r in window.events]
    control = run(read_control(kit))
    run(read_control(kit, "directory", control))
    live = tenants_of(pack.settings, control)  # as what-if reads them, so the two count alike

    def settings_of(tenant_id: str) -> Any:
        return live.get(tenant_id) or pack.tenant(tenant_id)

    result = autonomy_report(events, settings_of, pack, keep_payee_bound=keep_payee_bound)
    doc = result.as_dict()
    candidate = result.candidate_settings()
    if candidate:
        notes = "".join(f"# {c.tenant_id}: {c.payee_bound}\n" for c in result.candidates if c.payee_bound)
        notes += "".join(f"# {c.tenant_id} {c.setting}: {w}\n" for c in result.candidates if (w := c.evidence.warning()))
        write.write_text(
            "# Candidate tenant settings from `tidegate autonomy report` (nothing is published).\n"
            f"# Replay: tidegate whatif --tenant-settings {write} --from {since}\n"
            + notes
            + yaml.safe_dump({"tenants": candidate}, sort_keys=True)
        )
    if as_json:
        print(json.dumps(doc | {"written": str(write) if candidate else None, "skipped": window.skipped.as_dict()}, indent=2, default=str))
        return
    console.print(window.skipped.summary())
    columns = {"tenant": "tenant", "tool": "tool", "trigger": "trigger", "approved": "approved unchanged", "edited": "edited"}
    columns |= {"rejected": "rejected", "expired": "expired", "pending": "pending", NEEDLESS: "said needless"}
    table = Table(*columns.values(), title=f"escalations since {since} (said needless: {NEEDLESS}, the autonomy signal)")
    for row in doc["rows"]:
        table.add_row(*(shown(row[k]) for k in columns))
    console.print(table)
    if not candidate:
        console.print("no wider setting is supported by the record (every trigger with approvals also had rejections in the way)")
        return
    for c in result.candidates:
        ev = c.evidence
        console.print(
            f"{c.tenant_id}: {c.setting} {c.current} → [bold]{c.proposed}[/] would have allowed {c.would_allow} escalation(s) "
            f"humans approved unchanged ({c.trigger}); {c.kept_for_humans} they rejected or edited still go to a human"
        )
        console.print(
            f"  evidence: {ev.approved} approved unchanged, {ev.rejected_or_edited} rejected or edited, over {ev.span_hours:.1f} h; "
            f"{ev.pending} pending request(s) not counted"
        )
        if (warning := ev.warning()) is not None:
            console.print(f"  [yellow]{warning}[/]")
        if c.payee_bound:
            console.print(f"  {c.payee_bound}")
    console.print(
        f"candidate written to {write}: `tidegate whatif --tenant-settings {write} --from {since}`; publish with `tidegate tenant set`"
    )
