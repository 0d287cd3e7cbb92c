"""`tidegate audit conflicts list|ack`: the conflicts the audit service recorded, and an operator's signed acknowledgement of one.

A conflict stays recorded for good; an acknowledged one is shown by `verify` instead of failing it, so the next,
new conflict still does. The acknowledgement is signed with this operator's key (`servicekit.operator_key`, as
`tidegate connectors sign`); `verify` counts it only under an operator's key on the allow-list.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import asyncpg
import typer
from rich.markup import escape
from rich.table import Table

from servicekit import deployment_authority, operator_key
from services.audit import ConflictState, PostgresAuditLog, acknowledge_conflict, list_conflicts
from tidegate.commands._audit_log import with_audit_log
from tidegate.commands._common import BY_HELP, console, err_console, run, settings, signer_settings

__all__ = ["app"]

app = typer.Typer(help="Conflicts the audit recorded (rows it did not write): list them, acknowledge a known one.", no_args_is_help=True)


def _status(s: ConflictState) -> str:
    forged = "[bold red]forged conflict row[/] (not the service's: `verify` says why), " if s.forged else ""
    if s.acknowledged:
        return forged + (
            f"[green]acknowledged[/] by {escape(str(s.acknowledged_by))} at {s.acknowledged_at:%Y-%m-%d %H:%M:%S}: {escape(str(s.reason))}"
        )
    refused = f" ({len(s.refused)} acknowledgement(s) that do not count: {escape('; '.join(s.refused))})" if s.refused else ""
    return f"{forged}[bold red]open[/]{refused}"


@app.command("list")
def list_(
    open_only: bool = typer.Option(False, "--open", help="Only the conflicts no operator acknowledged."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON lines."),
) -> None:
    """Every conflict recorded in this deployment, with its id and whether an operator acknowledged it."""
    kit = settings()
    operators = deployment_authority(kit)

    async def go(log: PostgresAuditLog) -> list[ConflictState]:
        return await list_conflicts(log, operators, kit.topic_prefix)

    states = [s for s in run(with_audit_log(go)) if not (open_only and s.acknowledged)]
    if as_json:
        for s in states:
            typer.echo(json.dumps({**s.model_dump(mode="json"), "acknowledged": s.acknowledged}))
    elif not states:
        console.print("no conflict is recorded" + (" that is not acknowledged" if open_only else ""))
    else:
        table = Table("id", "at (--at)", "logged row", "differs", "detected (UTC)", "status", title=f"{len(states)} conflict(s)")
        for s in states:
            logged = "-" if s.logged_seq is None else f"seq {s.logged_seq}"
            detected = f"{s.detected_at:%Y-%m-%d %H:%M:%S}"
            table.add_row(s.conflict_id, escape(s.at), logged, ", ".join(s.differs) or "no row", detected, _status(s))
        console.print(table)


@app.command()
def ack(
    conflict: str | None = typer.Argument(
        None, help="The conflict's id, as `tidegate audit conflicts list` shows it (or more of its digest); or name it by --at."
    ),
    reason: str = typer.Option(..., "--reason", help="Why it is known (the incident, the drill): kept, signed, with the acknowledgement."),
    where: str | None = typer.Option(
        None, "--at", help="The conflict's position, topic[partition]@offset (the list's `at`): picks one where an id names several."
    ),
    by: str | None = typer.Option(None, "--by", help=BY_HELP),
) -> None:
    """Acknowledge a conflict whose cause you found and know: signed with your operator key; `verify` then shows it, not fails."""
    kit = signer_settings(by)
    operators = deployment_authority(kit)
    key = operator_key(kit)

    async def go(log: PostgresAuditLog) -> tuple[ConflictState, bool]:
        try:
            return await acknowledge_conflict(
                log, key, conflict, reason, operators, prefix=kit.topic_prefix, at=datetime.now(UTC), where=where
            )
        except (LookupError, ValueError) as exc:
            raise ConnectionError(str(exc)) from None  # one line, exit 1: nothing was written
        except asyncpg.InsufficientPrivilegeError as exc:
            raise ConnectionError(f"this login may not acknowledge ({exc}): run it as the operator (the schema owner's member)") from None

    state, written = run(with_audit_log(go))
    what = f"{'forged conflict row' if state.forged else 'conflict'} {state.conflict_id} ({escape(state.at)})"
    if not written:
        console.print(
            f"{what} is already acknowledged by {escape(str(state.acknowledged_by))} "
            f"at {state.acknowledged_at:%Y-%m-%d %H:%M:%S}: {escape(str(state.reason))}"
        )
        return
    console.print(f"{what} acknowledged by {escape(str(state.acknowledged_by))}, signed with key {key.key_id}")
    err_console.print("the conflict stays recorded: `tidegate audit verify` shows it as acknowledged, and a new one still fails it")
