"""`tidegate tasks`: what is stuck now (open tasks and what each waits on), and which tasks were handed to a human."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import typer

from tidegate.commands._common import console, run, settings, shown, when
from tidegate.commands._whole_ids import print_listing

__all__ = ["app"]

app = typer.Typer(help="Open tasks and what each waits on; tasks handed off to a human.")


def _at(value: datetime | None) -> str:
    return f"{value.astimezone(UTC):%Y-%m-%d %H:%M:%S}" if value else ""


def _ago(now: datetime, then: datetime) -> str:
    seconds = max(0, int((now - then).total_seconds()))
    if seconds < 120:
        return f"{seconds} s"
    return f"{seconds // 60} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


@app.command("tasks")
def tasks(
    tenant: str | None = typer.Option(None, "--tenant", help="Only this tenant's tasks."),
    stale: str | None = typer.Option(
        None, "--stale", help="Only tasks waiting since longer than this: a duration (15m, 2h) or an ISO time they waited from before."
    ),
    handoffs: bool = typer.Option(
        False, "--handoffs", help="Instead: tasks closed completed_with_handoff (an action refused, handed to a human) since --since."
    ),
    since: str = typer.Option("24h", "--since", help="With --handoffs: from this time (a duration ago, or ISO 8601)."),
    limit: int = typer.Option(500, min=1, help="At most this many tasks."),
    as_json: bool = typer.Option(
        False, "--json", help="Print JSON lines: one object a line per task (or outside action), not one document (`jq -s` makes one)."
    ),
) -> None:
    """What is stuck now: every open task, what it waits on (a human's approval, policy, a call in progress, a retry at T) and since when.

    Outside agents' open actions (the client, LangGraph, MCP: no planner task) are listed too, marked with who proposed them.
    Reads the planner's, the policy's, the approval service's, the executor's and the audit service's schemas as the
    operator, read-only.
    """
    from tidegate.ops.stuck import read_handoffs, read_open

    kit = settings()
    if handoffs:
        closed = run(read_handoffs(kit, when(since), tenant=tenant, limit=limit))
        if as_json:
            for c in closed:
                typer.echo(json.dumps({**c.model_dump(mode="json"), "outcome": "completed_with_handoff"}))
            return
        print_listing(  # the task id whole, whatever the width: `audit explain` takes it
            ("task", "tenant", "workflow", "ended (UTC)", "refused"),
            [(shown(c.task_id, None), shown(c.tenant_id), shown(c.workflow), _at(c.ended_at), shown("; ".join(c.refused))) for c in closed],
            title=f"{len(closed)} task(s) completed_with_handoff since {shown(since)}",
        )
        console.print("each was handed to a human (a note on the ticket says why): `tidegate audit explain TASK` tells the story")
        return
    now = datetime.now(UTC)
    cutoff = when(stale) if stale is not None else None
    found = run(read_open(kit, now, tenant=tenant, limit=limit))
    if cutoff is not None:
        found = [s for s in found if s.since <= cutoff]
    if as_json:
        for s in found:
            typer.echo(json.dumps(s.as_dict()))
        return
    outside = sum(1 for s in found if s.outside)
    title = f"{len(found) - outside} open task(s), {outside} open action(s) of outside agents" + (
        f" waiting since before {_at(cutoff)}" if cutoff else ""
    )
    headers = ("task", "tenant", "proposed by", "status", "step", "waits on", "since (UTC)", "waited", "expires / retry at (UTC)")
    rows = []
    for s in found:
        t = s.task
        by = f"outside agent {s.proposed_by or '(proposer not recorded)'}" if s.outside else "planner"
        rows.append((
            shown(t.task_id, None), shown(t.tenant_id), shown(by), t.status, str(t.step or ""), shown(s.waits_on, None), _at(s.since),
            _ago(now, s.since), _at(s.expires_at or s.retry_at),
        ))  # fmt: skip
    print_listing(headers, rows, title=title)  # the task id whole, whatever the width: `audit explain` takes it
