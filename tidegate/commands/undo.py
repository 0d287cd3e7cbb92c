"""`tidegate undo`: propose the undo of an action, or of every write of a task, as ordinary governed proposals."""

from __future__ import annotations

import json
from typing import Any

import typer

from tidegate.commands._common import TEXT_MAX, console, err_console, fail, run, settings, shown

app = typer.Typer(help="Undo: propose the calls that take back reversible writes (policy decides them).")


async def _steps(action_id: str | None, task_id: str | None, tenant: str | None, requested_by: str, mode: str) -> list[Any]:
    from servicekit.undo import undo_action_id
    from services.audit import PostgresAuditLog, SeveralTenants
    from tidegate.ops.undo import read_recorded, undo_steps

    kit = settings()
    log = await PostgresAuditLog.connect(kit.operator_database_url, max_size=2)  # a database down or a refused login: ConnectionError
    try:
        if task_id is not None:
            try:
                events = await read_recorded(log, kit.topic_prefix, task_id=task_id, tenant=tenant)
            except SeveralTenants as several:  # a task id is its tenant's: never another tenant's calls undone in its name
                raise ConnectionError(str(several)) from None
        else:
            assert action_id is not None
            events = await read_recorded(log, kit.topic_prefix, action_id=action_id)
            events += await read_recorded(log, kit.topic_prefix, action_id=undo_action_id(action_id))
    finally:
        await log.close()
    return undo_steps(events, requested_by=requested_by, mode=mode, only=action_id)  # type: ignore[arg-type]


@app.command()
def undo(
    action_id: str = typer.Argument(None, help="The action to undo (its id, as `tidegate audit show` prints it)."),
    task: str = typer.Option(None, "--task", help="Undo every reversible write of this task, newest first."),
    tenant: str = typer.Option(
        None,
        "--tenant",
        help="With --task: whose task (a task id is its tenant's; when several tenants used it, say which, else an error).",
    ),
    requested_by: str = typer.Option("cli@localhost", "--requested-by", help="Who asks for the undo (signs as that client)."),
    mode: str = typer.Option("autonomous", "--mode", help="`autonomous` (policy decides) or `draft` (a human approves each undo)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the undo calls without proposing them."),
    wait: float = typer.Option(
        15.0, "--wait", help="Seconds to wait for each undo's decision and, once allowed, its result (0: propose and return)."
    ),
) -> None:
    """Propose the undo of a succeeded call (from the plan the executor recorded); what cannot be undone is refused with a reason.

    Refused with the reason and what to do: an irreversible call, one that failed, was denied or has an
    unknown outcome, one undone already (or whose undo failed or was denied), and an undo itself.
    """
    from schemas import ActionProposed, Envelope
    from tidegate.bus_client import publish_events

    if (action_id is None) == (task is None):
        fail("give an ACTION_ID or --task TASK_ID (one of them)")
    if mode not in ("draft", "autonomous"):
        fail("--mode is draft or autonomous")
    if tenant is not None and task is None:
        fail("--tenant goes with --task")
    steps = run(_steps(action_id, task, tenant, requested_by, mode))
    if not steps and action_id is not None:
        fail(
            f"action {action_id} is not in the audit log: check the id (`tidegate audit search --since 7d` lists recent actions); "
            "the audit records what it reads from the bus: an action of the last seconds may not be there yet (is the audit running?)"
        )
    if not steps:
        fail(
            f"nothing to undo in task {task}{f' of tenant {tenant}' if tenant else ''}: "
            "no succeeded call with an undo plan that is not undone already "
            f"(`tidegate audit explain {task}` shows its calls; is the audit service running?)"
        )
    proposals: list[tuple[str, Envelope]] = []
    for step in steps:
        if step.refused is not None:
            said = shown(step.refused.message, TEXT_MAX)
            err_console.print(f"[red]refused[/] {shown(step.action_id)} ({shown(step.tool)}): {step.refused.code}: {said}")
            continue
        assert step.proposal is not None
        p = step.proposal
        undo = f"[bold]{shown(p.tool)}[/] {shown(json.dumps(p.args), TEXT_MAX)}"
        console.print(f"undo {shown(step.action_id)} ({shown(step.tool)}) → {undo} as action {shown(p.action_id)}")
        proposals.append(("actions.proposed", ActionProposed.build(p, source=f"external/undo/{requested_by}")))
    if proposals and not dry_run and wait <= 0:
        run(publish_events(settings(), proposals))
        task_id = proposals[0][1].data.task_id
        console.print(f"proposed {len(proposals)} undo call(s); policy decides each (`tidegate audit explain {task_id}`)")
    code = 1 if any(step.refused is not None for step in steps) else 0
    if proposals and not dry_run and wait > 0:
        code = max(code, _proposed_and_followed([event for _, event in proposals], wait))
    if code:
        raise typer.Exit(code)


def _proposed_and_followed(proposals: list[Any], wait: float) -> int:
    """Propose each undo and say how it ended, as `tidegate propose` does; the exit code (1: one did not undo, 2: no answer).

    An undo denied, failed or of unknown outcome was printed as "proposed …; policy decides each" with exit 0, and found
    only in the audit log (connectors probe F17).
    """
    from tidegate.commands.clients import _propose_and_wait, ended

    code = 0
    for event in proposals:
        p = event.data
        decision, result = run(_propose_and_wait(event, wait))
        if decision is None:
            err_console.print(
                f"undo {shown(p.action_id)}: no decision within {wait:.0f}s: is the policy service running (`tidegate status`)? "
                f"`tidegate audit search --action {shown(p.action_id)}` shows what became of it"
            )
            code = max(code, 2)
            continue
        d = decision.data
        reasons = ", ".join(f"{shown(r.code)} ({shown(r.policy_id)})" for r in d.reasons)
        if d.outcome != "allow":
            then = "a human decides next: `tidegate approvals list`" if d.outcome == "escalate" else "it was not undone"
            err_console.print(f"undo {shown(p.action_id)} ({shown(p.tool)}): {shown(d.outcome)} — {reasons}; {then}")
            code = max(code, 1)
            continue
        if result is None:
            err_console.print(
                f"undo {shown(p.action_id)} ({shown(p.tool)}): allowed, no result within {wait:.0f}s: "
                f"`tidegate audit search --action {shown(p.action_id)}` shows it once the executor ran it"
            )
            code = max(code, 2)
            continue
        r = result.data
        if r.status == "succeeded":
            console.print(f"undone {shown(p.undoes or '')}: {shown(p.tool)} succeeded as action {shown(p.action_id)}")
            continue
        err_console.print(f"undo {shown(p.action_id)} ({shown(p.tool)}): {ended(r)}")
        code = max(code, 1)
    return code
