"""The demo run: seed the systems of record, start the stack, submit the tickets, watch, report, verify.

The demo is a client like any other: it publishes `task.submitted` events and learns everything
else by reading the topics (proposals, decisions, approvals, results, outcomes). It approves
nothing; escalations are left pending with the command a person runs to approve one.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from schemas import ControlTenant, ControlTenantData, Envelope, TaskCompleted, TaskFailed, TaskSubmitted, TaskSubmittedData
from servicekit import (
    KitSettings,
    ToolCatalog,
    catalog_topic_names,
    create_pool,
    ensure_topics,
)
from systems.seed import TICKETS
from tidegate.bus_client import Watcher, publish_events
from tidegate.demo.tickets import DEMO_CASES, DEMO_TENANTS, FRESH_ORDER_TICKETS, demo_tasks

if TYPE_CHECKING:
    import asyncpg

__all__ = ["TaskView", "fresh_orders", "run_demo", "untrusted_lines"]

WATCHED = ["actions.proposed", "actions.decided", "approvals", "actions.results", "tasks.outcomes"]


@dataclass
class ActionView:
    """One action of a task as the topics told it."""

    step: int
    tool: str
    args: dict[str, Any]
    tainted: list[str]
    decision: str = "…"
    reasons: list[str] = field(default_factory=list)
    approval_id: str | None = None
    approval: str | None = None
    result: str | None = None
    cost_usd: float = 0.0
    facts: dict[str, Any] = field(default_factory=dict)  # the policy's signed facts of its decision (taint, flagged passages)


@dataclass
class TaskView:
    """Everything the demo learned about one task."""

    task_id: str
    ticket_id: str
    title: str
    expect: str
    actions: dict[str, ActionView] = field(default_factory=dict)
    outcome: TaskCompleted | TaskFailed | None = None

    @property
    def waiting_on_human(self) -> ActionView | None:
        """The escalated action the task waits on, if that is where it stands."""
        pending = [a for a in self.actions.values() if a.decision == "escalate" and a.approval in (None, "requested")]
        return pending[-1] if pending and self.outcome is None else None

    @property
    def settled(self) -> bool:
        """Completed, failed, or waiting on a human (with the approval request issued)."""
        waiting = self.waiting_on_human
        return self.outcome is not None or (waiting is not None and waiting.approval_id is not None)

    @property
    def status(self) -> str:
        """One word for the progress display."""
        if self.outcome is not None:
            return str(self.outcome.data.status)
        if self.waiting_on_human is not None:
            return "waiting on a human"
        return f"running (step {len(self.actions)})" if self.actions else "submitted"

    def apply(self, name: str, event: Envelope) -> None:
        """Fold one event into the view."""
        d = event.data
        if name == "tasks.outcomes":
            if isinstance(event, TaskCompleted | TaskFailed):  # the topic's union: the watcher validated it so
                self.outcome = event
            return
        if name == "actions.proposed":
            view = self.actions.setdefault(d.action_id, ActionView(d.step, d.tool, d.args, []))
            view.args, view.tainted = d.args, list(d.tainted_args)
            return
        action = self.actions.get(d.action_id)
        if action is None:
            # Topics are read in parallel: a decision or result can arrive before its proposal.
            action = self.actions.setdefault(d.action_id, ActionView(d.step, d.tool, dict(getattr(d, "args", {}) or {}), []))
        if name == "actions.decided":
            action.decision = d.outcome if d.via == "policy" else f"{d.outcome} after approval"
            action.reasons = [str(r.code) for r in d.reasons]
            if d.via == "policy":
                action.facts = dict(d.facts)
        elif name == "approvals":
            action.approval_id = d.approval_id
            action.approval = event.type.removeprefix("tidegate.approval.")
        elif name == "actions.results":
            action.result = d.status if d.error is None else f"{d.status}: {d.error.type}"
            action.cost_usd = d.cost.usd


def _progress(views: list[TaskView], started: float) -> Table:
    table = Table(title=f"support-triage demo — {time.monotonic() - started:.0f}s", show_lines=False)
    for col in ("ticket", "case", "status", "actions"):
        table.add_column(col)
    for v in views:
        colour = {"completed": "green", "failed": "red", "waiting on a human": "yellow"}.get(v.status, "cyan")
        table.add_row(v.ticket_id, v.title, f"[{colour}]{v.status}[/]", str(len(v.actions)))
    return table


def _task_table(v: TaskView) -> Table:
    out = v.outcome.data if v.outcome is not None else None
    status = out.status if out else ("waiting on a human" if v.waiting_on_human else "still running")
    title = f"{v.ticket_id} — {v.title}\n[dim]task {v.task_id} · expected: {v.expect}[/]"
    table = Table(title=title, title_justify="left", expand=False)
    for col in ("#", "tool", "args", "tainted", "decision", "result"):
        table.add_column(col, overflow="fold")
    for a in sorted(v.actions.values(), key=lambda a: a.step):
        colour = {"allow": "green", "deny": "red", "escalate": "yellow"}.get(a.decision.split()[0], "white")
        decision = f"[{colour}]{a.decision}[/] {', '.join(a.reasons)}"
        result = a.result or (f"approval {a.approval}: {a.approval_id}" if a.approval_id else "")
        table.add_row(str(a.step), a.tool, _short_args(a.args), ", ".join(a.tainted), decision, result)
    if out is not None:
        c = out.cost
        table.caption = (
            f"outcome: [bold]{status}[/]{f' ({out.reason})' if out.reason else ''} · cost ${c.total:.4f} "
            f"(model {c.model:.4f}, retrieval {c.retrieval:.4f}, tools {c.tools:.4f}, orchestration {c.orchestration:.4f}, "
            f"retries {c.retries:.4f}, human review {c.human_review:.2f}) · {out.duration_ms:.0f} ms · human touches {out.human_touches}"
        )
    else:
        table.caption = f"outcome: [bold yellow]{status}[/]"
    table.caption_justify = "left"
    return table


def _short_args(args: dict[str, Any]) -> str:
    parts = []
    for k, val in args.items():
        if k in ("ticket_id", "reason"):
            continue
        if isinstance(val, list) and len(val) > 3:
            parts.append(f"{k}=[{len(val)}]")
        else:
            text = str(val)
            parts.append(f"{k}={text if len(text) <= 28 else text[:25] + '…'}")
    return " ".join(parts)


def _services_ready(kit: KitSettings) -> bool:
    from tidegate.commands.services import SERVICES

    ready = kit.run_dir / "ready"
    return all((ready / f"{n}.ready").exists() for n in SERVICES)


def _start_services(console: Console) -> bool:
    console.print("services: [bold]tidegate up --detach[/]")
    exe = shutil.which("tidegate")
    cmd = [exe, "up", "--detach"] if exe else [sys.executable, "-m", "tidegate.cli", "up", "--detach"]
    return subprocess.run(cmd, check=False).returncode == 0


def _approve_hint(verb: str = "approve", options: str = "") -> str:
    """How a person approves (or rejects), as the approvals command group spells it (if installed)."""
    try:
        module = importlib.import_module("tidegate.commands.approvals")
    except ModuleNotFoundError:
        return f"({verb} it on the approval service's page)"
    names = {c.name or (c.callback.__name__ if c.callback else "") for c in module.app.registered_commands}
    if verb not in names:
        return f"({verb} it on the approval service's page)"
    url = module.configured_url()  # this deployment's, so the line works pasted in any shell, whatever port it listens on
    return f"tidegate approvals {verb} {{approval_id}}" + (f" --url {url}" if url else "") + options


def _approver_page() -> str | None:
    """The approver page's address (the approval service's `/`), when this deployment's settings say where it listens."""
    with contextlib.suppress(ModuleNotFoundError, SystemExit):
        url = importlib.import_module("tidegate.commands.approvals").configured_url()
        return f"{url.rstrip('/')}/" if url else None
    return None


REJECT_EARLIER = ' -m "left pending by an earlier demo run"'
REJECT_INJECTION = ' --reason wrong_recipient -m "prompt injection: the email names another customer\'s account"'


def untrusted_lines(action: ActionView) -> list[str]:
    """What the approver is shown of the untrusted text behind an escalated call, as `tidegate approvals show` prints it.

    From the policy's signed facts of the decision: the quote around each value untrusted text supplied, then the
    instruction-like passages the policy flagged in that text. Empty when no value came from untrusted text.
    """
    from tidegate.commands._approvals_shown import passage_lines, quote_lines

    lines: list[str] = []
    quoted: set[tuple[Any, Any]] = set()
    for taint in action.facts.get("taint") or []:
        excerpt = taint.get("excerpt") if isinstance(taint, dict) else None
        if isinstance(excerpt, dict) and (taint.get("arg"), excerpt.get("at")) not in quoted:
            quoted.add((taint.get("arg"), excerpt.get("at")))
            lines += quote_lines(excerpt)
    if lines:
        for source in action.facts.get("untrusted_passages") or []:
            if isinstance(source, dict):
                lines += passage_lines(source)
    return lines


def _verify_audit(console: Console) -> str:
    """Run `tidegate audit verify` when the audit command exists; say why not otherwise."""
    try:
        module = importlib.import_module("tidegate.commands.audit")
    except ModuleNotFoundError:
        return "skipped: the `tidegate audit verify` command is not installed"
    names = {c.name or (c.callback.__name__ if c.callback else "") for c in module.app.registered_commands}
    if "verify" not in names:
        return "skipped: `tidegate audit` has no verify command"
    exe = shutil.which("tidegate")
    cmd = [exe, "audit", "verify"] if exe else [sys.executable, "-m", "tidegate.cli", "audit", "verify"]
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120)
    output = (done.stdout + done.stderr).strip()
    if output:
        console.print(output)
    if done.returncode != 0:
        return f"FAILED (exit {done.returncode})"
    checked = re.search(r"checked\s+(\d+)\s+rows\s+in\s+\d+\s+chain\(s\)\s+and\s+(\d+)\s+checkpoint\(s\)", done.stdout)
    if checked is None:
        return "intact"
    rows, checkpoints = int(checked[1]), int(checked[2])
    signed = f"{checkpoints} checkpoint(s) verified" if checkpoints else "no checkpoint signed yet"  # "verified" only of what was signed
    return f"intact ({rows} rows; {signed})"


@dataclass(frozen=True)
class Earlier:
    """An approval of the tenant still pending when this run began: an earlier run's (or another task's), not this run's."""

    approval_id: str
    task_id: str
    tool: str
    expires_at: datetime


async def pending_before(pool: asyncpg.Pool, tenant: str, schema: str = "approval") -> list[Earlier]:
    """The tenant's approvals pending and not expired, oldest first, as the approval service keeps them (none: it never ran)."""
    import asyncpg

    try:
        rows = await pool.fetch(
            f"SELECT approval_id, task_id, tool, expires_at FROM {schema}.approvals WHERE tenant_id = $1 AND status = 'pending' "
            "AND kind = 'approval' AND expires_at > now() ORDER BY created_at",
            tenant,
        )
    except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):  # the approval service never ran here
        return []
    return [Earlier(r["approval_id"], r["task_id"], r["tool"], r["expires_at"]) for r in rows]


def _earlier_lines(earlier: list[Earlier], tenant: str) -> list[str]:
    """What the report says of the approvals an earlier run left pending: `tidegate approvals list` shows them with this run's."""
    if not earlier:
        return []
    runs: dict[str, int] = {}
    for e in earlier:
        run = e.task_id.rsplit("-T-", 1)[0] if e.task_id.startswith("demo-") and "-T-" in e.task_id else "other tasks"
        runs[run] = runs.get(run, 0) + 1
    last = max(e.expires_at for e in earlier)
    return [
        f"\n[yellow]{len(earlier)} approval(s) of tenant {tenant} from before this run are still pending[/] "
        f"({', '.join(f'{run}: {n}' for run, n in runs.items())}; the last expires {last:%Y-%m-%d %H:%M} UTC): "
        "`tidegate approvals list` and the approver page show them beside this run's. They are not this run's: a run on the "
        "stand-ins stopped its Zendesk and Stripe stand-ins when it ended, so granting one of its approvals fails (unreachable). "
        f"Reject them ([bold]{_approve_hint('reject', REJECT_EARLIER).format(approval_id='<approval id>')}[/]) or let them expire.",
    ]


async def fresh_orders(pool: asyncpg.Pool, tenant: str, suffix: str | None = None) -> dict[str, str]:
    """A copy of each refund ticket's order under a new id, so every run has an unrefunded order to refund; new ids by ticket.

    A new id is the old one and `suffix` (by default the time's last eight digits).
    """
    suffix = suffix or f"{int(time.time()) % 10**8:08d}"
    by_id = {t.ticket_id: t for t in TICKETS}
    orders: dict[str, str] = {}
    for ticket_id in FRESH_ORDER_TICKETS:
        original = by_id[ticket_id].order_id
        if original is None:
            continue
        fresh = f"{original}{suffix}"
        await pool.execute(
            "INSERT INTO payments.orders (tenant_id, order_id, customer_id, payee_id, description, amount_usd) "
            "SELECT tenant_id, $3, customer_id, payee_id, description || ' (demo run)', amount_usd FROM payments.orders "
            "WHERE tenant_id = $1 AND order_id = $2 ON CONFLICT DO NOTHING",
            tenant,
            original,
            fresh,
        )
        orders[ticket_id] = fresh
    return orders


async def _onboard(kit: KitSettings, tenant: str, console: Console) -> None:
    """Onboard the demo's tenant with a `control.tenant` record, as `tidegate tenant add` does, unless it already has one."""
    from tidegate.commands._common import publish_control
    from tidegate.commands.killswitch import read_control

    if tenant not in DEMO_TENANTS or tenant in (await read_control(kit)).tenants:
        return
    record = ControlTenant.build(
        ControlTenantData(tenant_id=tenant, settings=DEMO_TENANTS[tenant], set_by="tidegate/demo"), source="tidegate/demo"
    )
    await publish_control(kit, record)  # the CLI's one way onto `control` (signed as the operator)
    console.print(f"tenant {tenant} onboarded (control.tenant; see `tidegate tenant show {tenant}`)")
    accepted = DEMO_TENANTS[tenant].get("accept_irreversible")
    if accepted:
        console.print(
            f"  it accepts irreversible writes of {', '.join(accepted)} (accept_irreversible): Zendesk cannot delete the internal "
            "notes the demo adds, so they run without a human, and `tidegate undo` refuses them with what to do instead"
        )


DECIDE_S = 600.0
"""How long the demo waits for a person's decisions on its pending approvals by default, at a terminal on the stand-ins."""


async def run_demo(
    kit: KitSettings,
    *,
    tenant: str,
    timeout_s: float,
    start_services: bool,
    console: Console,
    systems: str = "stand-in",
    decide_s: float | None = None,
) -> int:
    """The whole demo; returns the process exit code (0 when every task settled and the audit chain verified or was skipped).

    `systems`: `stand-in` (the default) puts the helpdesk on a Zendesk stand-in and the payments on Stripe's stripe-mock
    (mail, CRM and code stay built in); `builtin` acts on the demo tables in PostgreSQL only.
    `decide_s`: how long to wait, once the report is out, for a person to decide the pending approvals (the stand-ins
    serve meanwhile), saying what each decision did; None: `DECIDE_S` at a terminal on the stand-ins, else not at all.
    """
    started = time.monotonic()
    catalog = ToolCatalog.load(*kit.tool_dirs)
    topic_tools = [t.name for t in catalog.values() if t.kind == "topic"]
    await ensure_topics(
        kit.kafka_bootstrap,
        kit.topic_prefix,
        catalog_topic_names(topic_tools),
        partitions=kit.topic_partitions,
        produce_bytes_per_s=kit.kafka_outside_produce_bytes_per_s,
        ops_produce_bytes_per_s=kit.kafka_ops_produce_bytes_per_s,
        approval_produce_bytes_per_s=kit.kafka_approval_produce_bytes_per_s,
        services_produce_bytes_per_s=kit.kafka_services_produce_bytes_per_s,
    )
    from systems.seed import seed_demo

    pool = await create_pool(kit.operator_database_url, max_size=2)
    try:
        inserted = await seed_demo(pool)
        orders = await fresh_orders(pool, tenant)
        earlier = await pending_before(pool, tenant)  # before this run asks anything: an earlier run's, never this one's
    finally:
        await pool.close()
    console.print(f"systems of record seeded ({sum(inserted.values())} new rows; helpdesk, payments, mail, crm in PostgreSQL)")
    if start_services:
        if not _start_services(console):  # `tidegate up --detach` says so and returns when they already run
            console.print(f"[red]the services did not start[/]; see {kit.run_dir / 'logs'}")
            return 1
    elif not _services_ready(kit):
        console.print("[red]the services are not running[/]; start them with `tidegate up --detach`")
        return 1
    console.print("policy: the policy service uses the pack in policies/default unless one was published (`tidegate policy publish`)")
    await _onboard(kit, tenant, console)

    if decide_s is None:
        decide_s = DECIDE_S if systems == "stand-in" and sys.stdin.isatty() and sys.stdout.isatty() else 0.0
    submitted: list[TaskSubmittedData] = []
    try:
        async with contextlib.AsyncExitStack() as stack:
            tasks = demo_tasks(tenant, orders=orders)
            if systems == "stand-in":
                from tidegate.demo.standin_systems import standin_systems

                standins = await stack.enter_async_context(standin_systems(kit, tenant, orders))
                tasks = [t.model_copy(update={"input": {**t.input, **standins.task_input()}}) for t in tasks]
                console.print(
                    f"systems: helpdesk on the Zendesk stand-in ({standins.zendesk.url}), payments on stripe-mock ({standins.stripe.url})"
                )
            watcher = Watcher(kit, WATCHED)
            await watcher.start()
            stack.push_async_callback(watcher.stop)
            ordered = await _submit_and_watch(kit, tenant, tasks, timeout_s, started, console, watcher, submitted)
            stopped = systems == "stand-in"
            code = _report(kit, ordered, timeout_s, tenant, console, started, standins_stopped=stopped, decide_s=decide_s, earlier=earlier)
            if decide_s > 0 and any(v.waiting_on_human for v in ordered):
                await _follow_decisions(watcher, ordered, decide_s, console, standins=stopped)
    except (asyncio.CancelledError, KeyboardInterrupt):
        _interrupted(console, submitted, standins=systems == "stand-in")
        raise
    return code


def _interrupted(console: Console, submitted: list[TaskSubmittedData], *, standins: bool) -> None:
    """What a Ctrl-C left behind: the tasks already submitted go on in the services; what to look at, how to stop."""
    if not submitted:
        console.print("\n[yellow]interrupted before any ticket was submitted[/]; `tidegate down` stops the services")
        return
    run = submitted[0].task_id.rsplit("-T-", 1)[0]
    console.print(
        f"\n[yellow]interrupted: the {len(submitted)} tasks of this run ({run}-…) were submitted and go on in the services[/]"
        + (
            "; the Zendesk and Stripe stand-ins stopped with this process, so what those tasks still do on them fails (unreachable)"
            if standins
            else ""
        )
        + ".\n  What is open: [bold]tidegate tasks[/]; one task's story: [bold]tidegate audit explain TASK_ID[/]; "
        "stop the services: [bold]tidegate down[/]"
    )


async def _follow_decisions(watcher: Watcher, ordered: list[TaskView], wait_s: float, console: Console, *, standins: bool) -> None:
    """Wait for a person to decide the pending approvals, saying what each decision did, until the tasks close or time is up.

    Ctrl-C here ends the wait, not the run: the report stands and the exit code is the run's.
    """
    waiting = {v.task_id: v for v in ordered if v.waiting_on_human is not None}
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # a signal handler needs the main thread on Unix
        loop.add_signal_handler(signal.SIGINT, stop.set)  # before the line that invites a Ctrl-C
    try:
        console.print(
            f"\n[bold]Waiting up to {wait_s:.0f}s for your decisions[/] on the {len(waiting)} pending approval(s), on the page or "
            "with the commands above in another shell" + (" (the stand-ins serve meanwhile)" if standins else "") + "; Ctrl-C stops waiting"
        )
        deadline = time.monotonic() + wait_s
        while waiting and not stop.is_set() and time.monotonic() < deadline:
            for name, event in await watcher.poll(0.5):
                if (view := waiting.get(event.data.task_id)) is not None:
                    view.apply(name, event)
                    _say_decided(console, view, name, event, waiting)
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.remove_signal_handler(signal.SIGINT)
    if waiting:
        console.print(
            f"[yellow]no decision on {', '.join(v.ticket_id for v in waiting.values())}"
            + (" (you stopped waiting)" if stop.is_set() else f" within {wait_s:.0f}s")
            + "[/]"
            + ("; the stand-ins stop now: an approval granted from now on fails (unreachable)" if standins else "")
        )
    else:
        console.print("every pending approval was decided; [bold]tidegate audit verify[/] checks the chain again with them")


def _say_decided(console: Console, view: TaskView, name: str, event: Envelope, waiting: dict[str, TaskView]) -> None:
    """One line for what a decision on a waiting task did; a closed task leaves `waiting`."""
    d = event.data
    if name == "approvals" and event.type != "tidegate.approval.requested":
        who = f" by {d.approver}" if d.approver else ""
        why = f": {d.comment}" if d.comment else ""
        console.print(f"  {view.ticket_id} {d.tool}: {event.type.removeprefix('tidegate.approval.')}{who}{why}", highlight=False)
    elif name == "actions.decided" and d.via == "approval":
        codes = ", ".join(str(r.code) for r in d.reasons)
        console.print(f"  {view.ticket_id} {d.tool}: policy re-decided it: {d.outcome} ({codes})")
    elif name == "actions.results":
        error = f" ({d.error.type}: {d.error.message})" if d.error is not None else ""
        console.print(f"  {view.ticket_id} {d.tool}: {d.status}{error}", highlight=False)
    elif name == "tasks.outcomes":
        reason = f" ({d.reason})" if d.reason else ""
        console.print(
            f"  {view.ticket_id}: task [bold]{d.status}[/]{reason} · cost ${d.cost.total:.4f} (human review "
            f"{d.cost.human_review:.2f}) · human touches {d.human_touches}",
            highlight=False,
        )
        del waiting[view.task_id]


async def _submit_and_watch(
    kit: KitSettings,
    tenant: str,
    tasks: list[TaskSubmittedData],
    timeout_s: float,
    started: float,
    console: Console,
    watcher: Watcher,
    submitted: list[TaskSubmittedData],
) -> list[TaskView]:
    """Submit the tasks (noted in `submitted`) and follow them with `watcher` until every one settles or the time is up."""
    cases = {c.ticket_id: c for c in DEMO_CASES}
    views = {
        t.task_id: TaskView(t.task_id, t.input["ticket_id"], cases[t.input["ticket_id"]].title, cases[t.input["ticket_id"]].expect)
        for t in tasks
    }
    submitted.extend(tasks)  # from here a Ctrl-C may leave them in the services: the interruption's message names them
    await publish_events(kit, [("tasks", TaskSubmitted.build(t, source="tidegate/demo")) for t in tasks])
    console.print(f"submitted {len(tasks)} tickets for tenant [bold]{tenant}[/] in autonomous mode; nothing is auto-approved")
    deadline = time.monotonic() + timeout_s
    ordered = list(views.values())
    with Live(_progress(ordered, started), console=console, refresh_per_second=4, transient=False) as live:
        while time.monotonic() < deadline and not all(v.settled for v in ordered):
            for name, event in await watcher.poll(0.25):
                view = views.get(event.data.task_id)
                if view is not None:
                    view.apply(name, event)
            live.update(_progress(ordered, started))
    return ordered


def _report(
    kit: KitSettings,
    ordered: list[TaskView],
    timeout_s: float,
    tenant: str,
    console: Console,
    started: float,
    *,
    standins_stopped: bool = False,
    decide_s: float = 0.0,
    earlier: list[Earlier] | None = None,
) -> int:
    """Print what happened to every task, the pending approvals (and those of earlier runs), and the audit verdict; the exit code."""
    console.print()
    for v in ordered:
        console.print(_task_table(v))
        console.print()
    unsettled = [v for v in ordered if not v.settled]
    total = sum(v.outcome.data.cost.total for v in ordered if v.outcome is not None)
    console.print(
        f"[bold]{sum(1 for v in ordered if v.outcome and v.outcome.data.status == 'completed')} completed, "
        f"{sum(1 for v in ordered if v.outcome and v.outcome.data.status == 'failed')} failed, "
        f"{sum(1 for v in ordered if v.waiting_on_human)} waiting on a human[/]; cost of closed tasks ${total:.4f}"
    )
    pending = [(v, a) for v in ordered if (a := v.waiting_on_human) is not None and a.approval_id]
    if pending:
        hint, reject = _approve_hint(), _approve_hint("reject", REJECT_INJECTION)
        console.print("\n[bold]Pending approvals[/] (nothing was auto-approved):")
        for v, a in pending:
            console.print(f"  {v.ticket_id} {a.tool} {_short_args(a.args)} — {', '.join(a.reasons)}")
            if said := untrusted_lines(a):
                # A prompt injection caught: what the approver is shown of the email, before any decision (docs/approval.md).
                console.print(f"    [yellow]{', '.join(a.tainted) or 'an argument'} came from the customer's email; the approver sees:[/]")
                for line in said:
                    console.print("  " + line, highlight=False)
                console.print(f"    the whole request: [bold]tidegate approvals show {a.approval_id}[/]; reject it:")
                console.print(f"    [bold]{reject.format(approval_id=a.approval_id)}[/]", highlight=False)
            else:
                console.print(f"    [bold]{hint.format(approval_id=a.approval_id)}[/]")
        page = _approver_page()
        console.print(
            "  with your approver token in TIDEGATE_APPROVER_TOKEN; an admin creates one with\n"
            f"  [bold]tidegate approvals token create --approver bob@{tenant}.example --tenant {tenant} --groups finance[/]\n"
            "  (the requester of a task may not approve it; `tidegate approvals list` shows what waits)"
            + (f"\n  or decide on the approver page, signed in with that token: [bold]{page}[/]" if page else "")
        )
        if standins_stopped and decide_s > 0:
            console.print(f"  the Zendesk and Stripe stand-ins serve while the demo waits for your decisions ({decide_s:.0f}s at most)")
        elif standins_stopped:  # an approval granted now would fail for want of them, which reads like a broken install
            console.print(
                "  [yellow]the Zendesk and Stripe stand-ins stopped with this run: an approval granted now fails (unreachable); "
                "a rejection holds (nothing is refunded), but the note it adds to the ticket fails too.[/]\n"
                "  To try approvals, run the demo on the built-in systems of record, which stay: "
                "[bold]tidegate demo --systems builtin[/]"
            )
    for line in _earlier_lines(earlier or [], tenant):
        console.print(line, soft_wrap=False)
    if unsettled:
        console.print(
            f"[red]{len(unsettled)} task(s) did not settle within {timeout_s:.0f}s:[/] {', '.join(v.ticket_id for v in unsettled)}"
        )
    verdict = _verify_audit(console)
    console.print(f"audit chain: [bold]{verdict}[/]")
    console.print(f"demo finished in {time.monotonic() - started:.1f}s")
    return 1 if unsettled or verdict.startswith("FAILED") else 0
