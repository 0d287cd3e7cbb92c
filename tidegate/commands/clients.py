"""`tidegate submit`, `tidegate propose`, `tidegate demo`: what clients and outside agents do.

`submit` publishes a task for the planner; `propose` publishes one action as an outside agent
would (no planner involved) and can wait for its decision; `demo` runs the support-triage demo end
to end on the real stack and prints what governance did with each ticket.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any, NoReturn

import typer
from pydantic import ValidationError

from schemas import ActionProposed, ActionProposedData, TaskSubmitted, TaskSubmittedData, refuse_nul
from tidegate.commands._common import console, err_console, fail, run, settings, shown

app = typer.Typer(help="Clients: submit tasks, propose actions, run the demo.")


# The flag each field of the published data comes from: a value the contract refuses is named by its flag.
SUBMIT_FLAGS = {
    "task_id": "--task-id",
    "tenant_id": "--tenant",
    "workflow": "--workflow",
    "input": "--input",
    "untrusted": "--untrusted",
    "requested_by": "--requested-by",
    "budget_usd": "--budget",
    "mode": "--mode",
    "planner": "--planner",
}
PROPOSE_FLAGS = {
    "action_id": "--action-id",
    "task_id": "--task-id",
    "tenant_id": "--tenant",
    "tool": "--tool",
    "args": "--args",
    "rationale": "--rationale",
    "proposer": "--proposer",
    "tainted_args": "--tainted",
    "mode": "--mode",
    "requested_by": "--requested-by",
}


def _fail_on_fields(exc: ValidationError, flags: dict[str, str]) -> NoReturn:
    """One line naming the flag of each refused field (`--tenant: String should have at least 1 character`)."""
    said = []
    for err in exc.errors():
        field = str(err["loc"][0]) if err["loc"] else ""
        said.append(f"{flags.get(field, field or exc.title)}: {err['msg']}")
    fail("; ".join(said))


def _json_arg(text: str, what: str) -> dict[str, Any]:
    if text.startswith("@"):
        try:
            source = Path(text[1:]).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"{what}: cannot read {text[1:]}: {getattr(exc, 'strerror', None) or exc}")
    else:
        source = text
    try:
        value = json.loads(source)
    except ValueError as exc:
        fail(f"{what} is not valid JSON: {exc}")
    if not isinstance(value, dict):
        fail(f"{what} must be a JSON object")
    try:
        refuse_nul(source)  # the contract's own check, on the text as given
    except ValidationError:
        fail(f"{what} holds a U+0000 character in a string, which no Tidegate service can store (docs/contract.md)")
    return value


def _ticket_fields(ticket_id: str) -> dict[str, Any]:
    """The task of a seeded demo ticket (`--ticket`), as fields: its workflow, input and untrusted keys, a budget of 5 USD."""
    from systems.seed import TICKETS
    from tidegate.demo.tickets import ticket_task

    match = next((t for t in TICKETS if t.ticket_id == ticket_id), None)
    if match is None:
        fail(f"no seeded ticket {ticket_id}; the demo tickets are {', '.join(t.ticket_id for t in TICKETS)}")
    return ticket_task(match).model_dump()


@app.command()
def submit(
    workflow: str = typer.Option("support_triage", "--workflow", "-w", help="Workflow (picks the playbook)."),
    input_json: str = typer.Option(None, "--input", "-i", help="Task input as JSON, or @file.json."),
    ticket: str = typer.Option(None, "--ticket", help="Submit a seeded demo ticket instead (e.g. T-1001)."),
    untrusted: list[str] = typer.Option([], "--untrusted", "-u", help="Input keys holding untrusted content (repeatable)."),
    tenant: str = typer.Option("acme", "--tenant", "-t"),
    task_id: str = typer.Option(None, "--task-id", help="Default: a new unique id."),
    mode: str = typer.Option("draft", "--mode", help="`draft` (every write needs a human) or `autonomous`."),
    requested_by: str = typer.Option("cli@localhost", "--requested-by"),
    budget_usd: float = typer.Option(None, "--budget", help="Spend cap of the task, USD."),
    planner: str = typer.Option("tidegate", "--planner", help="`tidegate`, or `external:<name>` to only register the task."),
    wait: float = typer.Option(0.0, "--wait", help="Seconds to wait for the task's outcome (0: do not wait)."),
) -> None:
    """Submit a task on `tasks`; print its id (and, with --wait, its outcome)."""
    if mode not in ("draft", "autonomous"):
        fail("--mode is draft or autonomous")
    if ticket:
        fields = _ticket_fields(ticket)
    elif input_json is None:
        fail("give --input JSON (or --ticket T-…)")
    else:
        task_input = _json_arg(input_json, "--input")
        fields = {"task_id": f"task-{uuid.uuid4().hex[:12]}", "workflow": workflow, "input": task_input, "untrusted": untrusted}
    given = {
        "tenant_id": tenant,
        "task_id": task_id or None,
        "mode": mode,
        "requested_by": requested_by,
        "budget_usd": budget_usd,
        "planner": planner,
    }
    try:  # the flags given override a ticket's task; one construction, so each refused value is named by its flag
        data = TaskSubmittedData(**fields | {name: value for name, value in given.items() if value is not None})
    except ValidationError as exc:
        _fail_on_fields(exc, SUBMIT_FLAGS)
    event = TaskSubmitted.build(data, source="tidegate/cli")
    outcome = run(_publish_and_wait("tasks", event, wait, lambda name, ev: name == "tasks.outcomes" and ev.data.task_id == data.task_id))
    console.print(f"submitted task [bold]{shown(data.task_id)}[/] (event {event.id})")
    if outcome is not None:
        console.print_json(outcome.model_dump_json())
    elif wait:
        fail(f"no outcome within {wait:.0f}s (the task may be waiting on a human: `tidegate approvals list`)", code=2)


@app.command()
def propose(
    tool: str = typer.Option(..., "--tool", help="Catalogued tool."),
    args_json: str = typer.Option(..., "--args", "-a", help="Tool args as JSON, or @file.json."),
    tenant: str = typer.Option("acme", "--tenant", "-t"),
    task_id: str = typer.Option(None, "--task-id", help="Task the action belongs to (default: a new id)."),
    action_id: str = typer.Option(None, "--action-id", help="Default: a new unique id."),
    tainted: list[str] = typer.Option([], "--tainted", help="Arg paths whose values came from untrusted content (repeatable)."),
    rationale: str = typer.Option("", "--rationale"),
    proposer: str = typer.Option("external:cli", "--proposer", help="Who proposes (an outside agent's name)."),
    mode: str = typer.Option("autonomous", "--mode"),
    requested_by: str = typer.Option("cli@localhost", "--requested-by"),
    wait: float = typer.Option(15.0, "--wait", help="Seconds to wait for the decision and, once allowed, the result (0: do not wait)."),
) -> None:
    """Propose one action on `actions.proposed`, as an outside agent would, and print the decision and, when allowed, the result.

    Exits 1 when an allowed call failed or ended unknown at the system of record (the result says why).
    """
    if mode not in ("draft", "autonomous"):
        fail("--mode is draft or autonomous")
    args = _json_arg(args_json, "--args")
    try:
        data = ActionProposedData(
            action_id=action_id or f"act-{uuid.uuid4().hex[:12]}",
            task_id=task_id or f"task-{uuid.uuid4().hex[:12]}",
            tenant_id=tenant,
            step=1,
            tool=tool,
            args=args,
            rationale=rationale,
            proposer=proposer,
            tainted_args=tainted,
            mode=mode,  # type: ignore[arg-type]
            requested_by=requested_by,
        )
    except ValidationError as exc:
        _fail_on_fields(exc, PROPOSE_FLAGS)
    if action_id and (taken := run(_taken(data))) is not None:  # the policy would refuse it unanswered: say so now
        fail(taken)
    event = ActionProposed.build(data, source=proposer if ":" in proposer else f"external/{proposer}")
    decision, result = run(_propose_and_wait(event, wait))
    console.print(f"proposed action [bold]{shown(data.action_id)}[/] on task {shown(data.task_id)}")
    if decision is not None:
        d = decision.data
        reasons = ", ".join(f"{shown(r.code)} ({shown(r.policy_id)})" for r in d.reasons)
        console.print(f"decision: [bold]{shown(d.outcome)}[/] — {reasons}")
        if d.outcome == "escalate":
            console.print("a human decides next: `tidegate approvals list`")
    elif wait:
        taken = run(_taken(data)) if action_id else None  # proposed meanwhile by another: known now
        fail(
            taken
            or f"no decision within {wait:.0f}s: is the policy service running (`tidegate status`; `tidegate up --detach`)? "
            "A proposal the policy refuses before deciding it (an unknown or unregistered signing key, an action id that is "
            f"another call's) is never answered: `tidegate audit search --action {shown(data.action_id)}` shows what it recorded",
            code=2,
        )
    if decision is not None and decision.data.outcome == "allow" and wait:
        _said_result(data.action_id, result, wait)


_RECORDED_UNDER = "SELECT tenant_id, action_digest, proposal->>'requested_by' AS requested_by FROM policy.decisions WHERE key = $1"


async def _taken(data: ActionProposedData) -> str | None:
    """Why the policy would refuse `data` unanswered (`action_id_reused`), from what it recorded under the id; None if it would not.

    The policy dead-letters a proposal under an action id it decided for another tenant, call or requester, and answers
    nothing (`services.policy.service._reused`): the command waited out its whole --wait and blamed the policy's speed
    (connectors probe F8). Another tenant's action is not named, nor what it did: to this tenant it is no action of its own.
    The database is the operator's; where it cannot be read, the proposal goes as before (None).
    """
    import asyncpg

    from servicekit import action_digest
    from servicekit.db import connect

    try:
        conn = await asyncio.wait_for(connect(settings().operator_database_url), 5)
        try:
            row = await conn.fetchrow(_RECORDED_UNDER, data.action_id)
        finally:
            await conn.close()
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:  # not said in silence: the wait's message covers it
        said = shown(str(exc) or type(exc).__name__, 300)
        err_console.print(f"could not check action id {shown(data.action_id)} against the policy's record (proposing it as given): {said}")
        return None
    if row is None:
        return None
    aid, tenant = shown(data.action_id), shown(data.tenant_id)
    fresh = "leave --action-id out for a new action"
    if row["tenant_id"] != data.tenant_id:
        return (
            f"tenant {tenant} has no action {aid}, and an action id names one action across every tenant, so it cannot name "
            f"a new one; nothing was proposed: {fresh} (`tidegate audit search --tenant {tenant} --since 7d` lists this tenant's)"
        )
    if row["action_digest"] != action_digest(data.tenant_id, data.tool, data.args):
        return (
            f"action {aid} of tenant {tenant} is another call (its tool or args differ); nothing was proposed: {fresh}, or give "
            f"its tool and args to follow it (`tidegate audit search --action {aid}` shows it)"
        )
    if row["requested_by"] != data.requested_by:
        return (
            f"action {aid} of tenant {tenant} was proposed for another requester than {shown(data.requested_by)}; nothing was "
            f"proposed: {fresh} (`tidegate audit search --action {aid}` shows it)"
        )
    return None


def _said_result(action_id: str, result: Any, wait: float) -> None:
    """What the executor made of an allowed call: `allow` is not "done" (connectors probe F7: a failed note read as done)."""
    if result is None:
        console.print(
            f"no result within {wait:.0f}s: `tidegate audit search --action {shown(action_id)}` shows it once the executor ran it"
        )
        return
    r = result.data
    if r.status == "succeeded":
        console.print(f"result: [bold]succeeded[/] after {r.attempts} attempt(s)")
        return
    console.print(f"result: {ended(r, bold=True)}")
    raise typer.Exit(1)


def ended(r: Any, *, bold: bool = False) -> str:
    """How a call that did not succeed ended, from its `actions.results` data: `unknown after 3 attempt(s) — type: message`."""
    error = f"{shown(r.error.type)}: {shown(r.error.message)}" if r.error is not None else "no error given"
    status = f"[bold]{shown(r.status)}[/]" if bold else shown(r.status)
    return f"{status} after {r.attempts} attempt(s) — {error}"


async def _propose_and_wait(event: ActionProposed, wait_s: float) -> tuple[Any, Any]:
    """Publish a proposal; with wait_s > 0, its decision and, when it was allowed, its result, each within what is left of `wait_s`."""
    from tidegate.bus_client import Watcher, publish_events

    kit = settings()
    if wait_s <= 0:
        await publish_events(kit, [("actions.proposed", event)])
        return None, None
    watcher = Watcher(kit, ["actions.decided", "actions.results"])  # one watch: a result may come in the decision's poll
    await watcher.start()
    decision = result = None
    try:
        await publish_events(kit, [("actions.proposed", event)])
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and (decision is None or (decision.data.outcome == "allow" and result is None)):
            for name, got in await watcher.poll(min(0.5, max(0.05, deadline - time.monotonic()))):
                if got.data.action_id != event.data.action_id:
                    continue
                if name == "actions.decided" and decision is None:
                    decision = got
                elif name == "actions.results" and result is None:
                    result = got
    finally:
        await watcher.stop()
    return decision, result


async def _publish_and_wait(topic: str, event: Any, wait_s: float, match: Any) -> Any:
    """Publish `event`; with wait_s > 0, return the first event on the watched topics that `match`es."""
    from tidegate.bus_client import Watcher, publish_events

    kit = settings()
    watched = ["tasks.outcomes"] if topic == "tasks" else ["actions.decided"]
    watcher = Watcher(kit, watched) if wait_s > 0 else None
    if watcher is not None:
        await watcher.start()
    try:
        await publish_events(kit, [(topic, event)])
        if watcher is None:
            return None
        return await watcher.first(match, wait_s)
    finally:
        if watcher is not None:
            await watcher.stop()


@app.command()
def demo(
    tenant: str = typer.Option("acme", "--tenant", "-t", help="Tenant of the demo tickets."),
    timeout_s: float = typer.Option(120.0, "--timeout", help="Seconds to wait for every task to settle."),
    start_services: bool = typer.Option(
        True, "--start/--no-start", help="Start the services (`tidegate up --detach`) if they are not running."
    ),
    systems: str = typer.Option(
        "stand-in",
        "--systems",
        help="`stand-in` (offline): helpdesk on a Zendesk stand-in, payments on Stripe's stripe-mock (built with Go on first use); "
        "`builtin`: the demo tables in PostgreSQL.",
    ),
    decide_s: float | None = typer.Option(
        None,
        "--wait-for-decisions",
        help="Seconds to wait, after the report, for a person to decide the pending approvals (the stand-ins serve meanwhile), "
        "saying what each decision did; default 600 at a terminal on the stand-ins, else 0 (do not wait).",
        min=0,
    ),
    seed_only: bool = typer.Option(
        False,
        "--seed-only",
        help="Only seed the systems of record (payments, helpdesk, mail, CRM tables) and list the orders a refund can use, "
        "for your own agent; start nothing, submit nothing.",
    ),
) -> None:
    """Run the support-triage demo end to end: seed, submit the tickets, show what governance did, verify the audit chain."""
    from tidegate.demo.run import run_demo
    from tidegate.demo.seed import seed_systems

    if systems not in ("builtin", "stand-in"):
        fail(f"--systems is builtin or stand-in, not {systems!r}")
    if seed_only:
        raise typer.Exit(run(seed_systems(settings(), tenant=tenant, console=console)))
    demo_run = run_demo(
        settings(), tenant=tenant, timeout_s=timeout_s, start_services=start_services, console=console, systems=systems, decide_s=decide_s
    )
    try:
        code = run(demo_run)
    except KeyboardInterrupt:  # the demo said what its Ctrl-C left behind
        raise typer.Exit(130) from None
    raise typer.Exit(code)
