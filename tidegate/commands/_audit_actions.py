"""`tidegate audit actions`: one line per governed action across tasks (who approved it, with which credential, what ran).

From the live log, or from archives and exports alone (`--offline`, each row checked with the signing keys the file's
attested header carries, as `explain --offline` does). Printed as a table, CSV (for a spreadsheet) or JSON lines.
"""

from __future__ import annotations

import csv
import re
import sys
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from services.audit import (
    ActionFilters,
    ActionLine,
    AuditLog,
    InMemoryAuditLog,
    Recheck,
    SearchFilters,
    action_lines,
    csv_columns,
    csv_row,
    explain_task,
)
from tidegate.commands._audit_log import with_audit_log
from tidegate.commands._audit_story import WIDE, archive_rows, where_read
from tidegate.commands._common import console, err_console, fail, run, shown, when

__all__ = ["actions"]

PROPOSED = "tidegate.action.proposed"
PROPOSALS_A_TASK = 50


def _offline_tasks(
    archives: list[Path], prefix: str, proposals: SearchFilters, limit: int
) -> tuple[list[tuple[tuple[str, str | None], InMemoryAuditLog]], bool]:
    """The newest `limit` tasks with a proposal `proposals` matches in the files, each with its own rows; whether more match.

    Two reads of the files, keeping only what is asked for: the tasks first, then their rows (an export of a month holds
    far more rows than memory does, and a task's rows found by a scan of all of them, once a task, took minutes).
    """
    newest: dict[tuple[str, str | None], Any] = {}
    for row in archive_rows(archives, prefix, proposals.matches):
        if row.task_id:
            at = (row.task_id, row.tenant_id)
            newest[at] = max(newest.get(at, row.kafka_ts), row.kafka_ts)
    chosen = sorted(newest, key=lambda at: newest[at])[-limit:]
    ids = {task for task, _ in chosen}
    keys = {task.encode() for task in ids}
    rows: dict[str, list[Any]] = {task: [] for task in ids}
    for row in archive_rows(archives, prefix, lambda r: r.task_id in ids or (r.task_id is None and r.key in keys)):
        rows[row.task_id if row.task_id is not None else (row.key or b"").decode()].append(row)
    return [(at, InMemoryAuditLog(rows=rows[at[0]])) for at in chosen], len(newest) > limit


async def _explained(tasks: list[tuple[tuple[str, str | None], InMemoryAuditLog]], prefix: str, recheck: Recheck) -> list[Any]:
    """Each task explained from its own rows."""
    return [await explain_task(log, task, prefix, tenant=of, recheck=recheck) for (task, of), log in tasks]


def _arg_compared(text: str | None) -> tuple[str, str, float] | None:
    if text is None:
        return None
    m = re.fullmatch(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(>=|<=|>|<|=)\s*(-?[0-9]+(?:\.[0-9]+)?)\s*", text)
    if m is None:
        fail(f"--where {text!r}: give NAME>NUMBER (or >=, <, <=, =), an argument of the call and a number (amount_usd>500)")
    return m.group(1), m.group(2), float(m.group(3))


def actions(
    tenant: str | None = typer.Option(None, help="Only this tenant's actions."),
    tool: str | None = typer.Option(None, help="Only calls of this tool (issue_refund)."),
    approver: str | None = typer.Option(None, help="Only actions this approver granted or rejected (bob@acme.example)."),
    approval: str | None = typer.Option(
        None, help="granted, rejected, expired, pending, or none (nobody was asked: the policy's reasons say why none was needed)."
    ),
    decision: str | None = typer.Option(None, help="The last decision: allow, deny or escalate."),
    ran: bool | None = typer.Option(None, "--ran/--not-ran", help="Only actions whose call ran (any result), or only those that did not."),
    where: str | None = typer.Option(
        None, "--where", metavar="ARG>NUMBER", help="Only calls whose numeric argument compares so (>, >=, <, <=, =): amount_usd>500."
    ),
    since: str | None = typer.Option(None, help="Proposed from this time: ISO 8601, or a duration ago (30d)."),
    until: str | None = typer.Option(None, help="Proposed before this time: ISO 8601, or a duration ago."),
    archives: list[Path] = typer.Option(
        [], "--archive", help="Read from this archive or export (repeatable); with --offline only from them."
    ),
    offline: bool = typer.Option(False, "--offline", help="Read the --archive files alone, no database: an auditor's machine."),
    trust_keys: list[str] = typer.Option(
        [],
        "--trust-key",
        metavar="SHA256",
        help="With --offline: the audit key's fingerprint; the file's signing keys then check each row.",
    ),
    fmt: str = typer.Option("table", "--format", "-f", help="table, csv or json (one JSON object a line)."),
    limit: int = typer.Option(1000, min=1, help="At most this many tasks are read (the newest); stderr says when more match."),
) -> None:
    """One line per governed action across tasks: its call, the decision and why, who approved it with which credential, what ran."""
    if fmt not in ("table", "csv", "json"):
        fail(f"unknown format {fmt!r}: choose table, csv or json")
    if approval not in (None, "granted", "rejected", "expired", "pending", "none"):
        fail(f"--approval {approval!r}: choose granted, rejected, expired, pending or none")
    if archives and not offline:
        fail("--archive reads files: add --offline (the live log is read without --archive)")
    prefix, recheck = where_read(archives, offline, trust_keys)
    start, end = (when(since) if since else None), (when(until) if until else None)
    picked = ActionFilters(tool=tool, approver=approver, approval=approval, decision=decision, ran=ran, arg=_arg_compared(where))
    proposals = SearchFilters(tenant=tenant, tool=tool, since=start, until=end, event_type=PROPOSED, topic_prefix=prefix)

    async def go(log: AuditLog) -> tuple[list[ActionLine], bool]:
        cap = limit * PROPOSALS_A_TASK  # the newest proposals, enough for `limit` tasks of usual length, read at once
        rows = await log.search(proposals, limit=cap, newest=True)
        tasks: dict[tuple[str, str | None], None] = {}  # in order, each once
        for row in rows:
            if row.task_id:
                tasks.setdefault((row.task_id, row.tenant_id), None)
        more = len(tasks) > limit or len(rows) == cap
        explained = [await explain_task(log, task, prefix, tenant=of, recheck=recheck) for task, of in list(tasks)[-limit:]]
        return [line for line in action_lines(explained) if picked.matches(line) and (tenant is None or line.tenant == tenant)], more

    if offline:
        tasks, more = _offline_tasks(archives, prefix, proposals, limit)
        found = run(_explained(tasks, prefix, recheck))
        lines = [line for line in action_lines(found) if picked.matches(line) and (tenant is None or line.tenant == tenant)]
    else:
        lines, more = run(with_audit_log(go))
    if more:
        err_console.print(f"more tasks may match: these are the actions of the newest (at most {limit}); --limit N reads more, or --since")
    if fmt == "json":
        for line in lines:
            typer.echo(line.model_dump_json())
        return
    if fmt == "csv":
        columns = csv_columns(lines)
        out = csv.writer(sys.stdout, lineterminator="\n")
        out.writerow(columns)
        for line in lines:
            out.writerow(csv_row(line, columns))
        return
    _table(lines)


def _table(lines: list[ActionLine]) -> None:
    """A table at a wide terminal; narrower than `WIDE`, each action on lines of its own (six columns cut ids to a few letters)."""
    narrow = console.width < WIDE
    columns = ["proposed (UTC)", "action"] if narrow else ["proposed (UTC)", "task · action", "call", "decision", "approval", "ran"]
    table = Table(*columns, title=f"{len(lines)} action(s)")
    if narrow:
        table.columns[1].overflow = "fold"  # an id is folded, never cut
    for line in lines:
        args = ", ".join(f"{k}={v}" for k, v in sorted(line.args.items()))
        approval = "\n".join(
            shown(part, limit=None)
            for part in [line.approval + (f" by {', '.join(line.approvers)}" if line.approvers else ""), *line.credentials]
        )  # each its own line: an approver's name or a credential is shown as it is, on one line
        ran = (line.result or "did not run") + ("" if line.bound in (None, True) else " [red](NOT BOUND to what was approved)[/]")
        flagged = f"\n[red]{line.unverified_rows} row(s) of its task do not verify[/]" if line.unverified_rows else ""
        cells = [
            f"{shown(line.task_id)}\n{shown(line.action_id)}",
            shown(f"{line.tool}({args})", limit=None),
            shown(f"{line.decision or '-'}: {', '.join(line.reasons)}", limit=None),
            approval,
            ran + flagged,
        ]
        when = line.proposed_at.strftime("%Y-%m-%d %H:%M:%S") if line.proposed_at else "-"
        if narrow:
            labels = ["", "call: ", "decision: ", "approval: ", "ran: "]
            table.add_row(when, "\n".join(label + cell for label, cell in zip(labels, cells, strict=True)))
        else:
            table.add_row(when, *cells)
    console.print(table)
