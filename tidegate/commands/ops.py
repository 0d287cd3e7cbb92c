"""`tidegate replay`, `whatif`, `eval run|compare`, `costs`: the tools of ops, security, product and finance."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from servicekit import REPO_ROOT
from tidegate.commands._common import console, err_console, fail, logs_aside, run, settings, shown, when
from tidegate.commands._progress import progress_display

app = typer.Typer(help="Operations: replay, policy what-if, evals, costs.")
eval_app = typer.Typer(help="Score a planner strategy and a policy pack on a versioned eval set.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")

DEFAULT_SET = REPO_ROOT / "evals" / "support_triage" / "v1"
FROM = typer.Option("1h", "--from", help="Start: ISO time (UTC if no zone), `now`, or a duration ago (`15m`, `2h`, `1d`).")
TO = typer.Option("now", "--to", help="End (exclusive), same forms as --from.")
JSON = typer.Option(False, "--json", help="Print the report as JSON.")
VERBOSE = typer.Option(False, "--verbose", "-v", help="Show the logs on stderr (else they go to .tidegate/logs/<command>.log).")


def _window(start: str, end: str) -> tuple[Any, Any]:
    t0, t1 = when(start), when(end)
    if t0 >= t1:
        fail(f"--from ({t0:%Y-%m-%d %H:%M:%S}) is not before --to ({t1:%Y-%m-%d %H:%M:%S}): the window is empty")
    return t0, t1


def _pack(policy_dir: Path | None) -> Any:
    from services.policy import PackError
    from tidegate.ops.whatif import load_pack

    kit = settings()
    try:
        return load_pack(policy_dir or kit.policy_dir, *kit.tool_dirs)
    except PackError as exc:
        fail("the policy pack does not compile:\n  " + "\n  ".join(exc.problems))


def _outside_calls(group: dict[str, Any], by: str) -> str:
    """An outside agent's calls of a group, as the costs table shows them (by tool, every call is counted already)."""
    if by == "tool":
        return "(in completed/failed)"
    calls = group["outside_agent_calls"]
    return f"{calls['succeeded']}/{calls['failed']}/{calls['unknown']} ({group['outside_agent_calls_usd']:.5f})"


_COST_FIGURES = ("completed", "handed off", "p50 USD", "p95 USD", "failed", "blocked (USD)", "rejected by a human (USD)",
                 "expired unanswered (USD)", "human review (USD)", "outside agents' calls ok/failed/unknown (USD)")  # fmt: skip


def _cost_cells(g: dict[str, Any], by: str) -> list[str]:
    """A group's figures as `costs` shows them, in the order of `_COST_FIGURES`."""
    return [
        str(g["completed"]), str(g["completed_with_handoff"]), f"{g['cost_per_completed_p50_usd']:.5f}",
        f"{g['cost_per_completed_p95_usd']:.5f}", str(g["failed"]), f"{g['blocked_proposals']} ({g['blocked_usd']:.5f})",
        f"{g['rejected_proposals']} ({g['rejected_usd']:.5f})", f"{g['expired_proposals']} ({g['expired_usd']:.5f})",
        f"{g['human_decisions']} ({g['human_review_usd']:.2f})", _outside_calls(g, by),
    ]  # fmt: skip


def _print_costs(groups: list[dict[str, Any]], by: str, title: str) -> None:
    """One row a group where the terminal is wide enough for every header word whole; else each group's figures in a list.

    Eleven columns need about 135 columns; squeezed into 80 every header was cut (`wor…`, `com…`, `(US…`).
    """
    headers, rows = (by, *_COST_FIGURES), [[shown(g["name"]), *_cost_cells(g, by)] for g in groups]
    # each column as narrow as its longest word (header or cell), plus its padding and border: no word is cut
    needed = 1 + sum(
        3 + max(len(word) for text in (head, *(row[i] for row in rows)) for word in text.split()) for i, head in enumerate(headers)
    )
    if needed <= console.width:
        wide = Table(title=title)
        for col in headers:
            wide.add_column(col, justify="left" if col == by else "right")
        for row in rows:
            wide.add_row(*row)
        console.print(wide)
        return
    if not groups:
        console.print(f"{title}: no {by} in this window")
        return
    narrow = Table(title=title, show_header=False)
    narrow.add_column("figure")
    narrow.add_column("value", justify="right")
    for g in groups:
        narrow.add_row(f"[bold]{by} {shown(g['name'])}[/]", "")
        for figure, value in zip(_COST_FIGURES, _cost_cells(g, by), strict=True):
            narrow.add_row(f"  {figure}", value)
        narrow.add_section()
    console.print(narrow)


# --- replay --------------------------------------------------------------------------------------

_REPLAY_STAGES = {"read": "reading recorded events", "replay": "replaying in the sandbox"}


@app.command()
def replay(
    start: str = FROM,
    end: str = TO,
    tenant: str = typer.Option(None, "--tenant", help="Only this tenant's events."),
    task: str = typer.Option(
        None, "--task", help="Only this task (a task id is its tenant's: when several tenants used it, say whose with --tenant)."
    ),
    planner: str = typer.Option(None, "--planner", help="Plan the recorded tasks again with this strategy (`playbook`, `llm:<model>`)."),
    policy_dir: Path = typer.Option(None, "--policy", help="Decide with this candidate pack instead of today's."),
    keep: bool = typer.Option(False, "--keep", help="Keep the sandbox topics afterwards."),
    idle_s: float = typer.Option(20.0, "--idle", help="Give up after this many seconds without a new sandbox event."),
    as_json: bool = JSON,
    verbose: bool = VERBOSE,
) -> None:
    """Re-run recorded traffic in a sandbox prefix: today's policy (and planner), answers from the record, no side effects."""
    from tidegate.ops.replay import ReplayOptions, SeveralTenants, run_replay
    from tidegate.ops.replay_report import Story, then_now

    t0, t1 = _window(start, end)
    if policy_dir is not None:
        _pack(policy_dir)  # a candidate that does not compile is said before the window is read and a sandbox made
    opts = ReplayOptions(t0, t1, tenant=tenant, task=task, planner=planner, policy_dir=policy_dir, keep_topics=keep, idle_s=idle_s)
    try:
        with logs_aside("replay", verbose=verbose), progress_display(_REPLAY_STAGES, quiet=as_json) as progress:
            report = run(run_replay(settings(), opts, progress=progress))
    except SeveralTenants as several:  # a task id is its tenant's: two tenants' tasks are never replayed as one
        fail(str(several))
    if report.inputs == 0 and (task or tenant):
        which = f"task {task!r}" if task else f"tenant {tenant!r}"
        fail(f"no recorded {'task' if planner else 'proposal'} of {which} between {t0:%Y-%m-%d %H:%M} and {t1:%Y-%m-%d %H:%M} UTC")
    if as_json:
        print(json.dumps(report.as_dict(), indent=2, default=str))
        return
    table = Table(title=f"replay {report.sandbox_prefix} ({report.inputs} inputs, planner: {planner or 'recorded proposals'})")
    for col in ("task", "then: actions", "now: actions", "then", "now", "cost then→now", "changed"):
        table.add_column(col)
    ids = [t.task_id for t in report.tasks]
    for t in report.tasks:
        changed = [k for k, v in (("actions", t.actions_changed), ("decisions", t.decisions_changed), ("outcome", t.outcome_changed)) if v]

        def steps(story: Story) -> str:
            return "\n".join(
                f"{a['tool']}: {a['decision'] or '—'}" + then_now(a["after_human"]) + (f" → {a['result']}" if a["result"] else "")
                for a in story.actions
            )

        table.add_row(
            shown(t.task_id + (f" ({t.tenant_id})" if ids.count(t.task_id) > 1 else "")),  # two tenants' tasks of one id: say whose
            steps(t.then), steps(t.now), t.then.outcome or "—", t.now.outcome or "—",
            f"{t.then.cost_usd:.4f} → {t.now.cost_usd:.4f}", ", ".join(changed) or "same",
        )  # fmt: skip
    console.print(table)
    console.print(
        f"{report.answered} calls answered from the record, {report.unanswerable} unanswerable, "
        f"{report.refused} authorizations refused; no tool was called. {report.seconds:.1f}s."
    )
    whose = ""
    if report.skipped.total and (task or tenant):  # an unreadable record names no task or tenant: it cannot be filtered out
        whose = f" (records of the window that could not be read, whichever {'task' if task else 'tenant'} they were)"
    console.print(f"recorded events not replayed: {report.skipped.summary()}{whose}")


# --- what-if -------------------------------------------------------------------------------------

_WHATIF_STAGES = {"read": "reading recorded events", "evaluate": "deciding with the candidate"}


@app.command()
def whatif(
    policy_dir: Path = typer.Option(
        None, "--policy", help="Directory of the candidate policy pack (with --tenant-settings alone: today's pack)."
    ),
    start: str = FROM,
    end: str = TO,
    tenant: str = typer.Option(None, "--tenant", help="Only this tenant's proposals."),
    tenant_settings: Path = typer.Option(
        None,
        "--tenant-settings",
        help="YAML of candidate tenant settings (tenant → fields, over each tenant's live record), as `tidegate autonomy report` writes.",
    ),
    as_json: bool = JSON,
    verbose: bool = VERBOSE,
) -> None:
    """Decide every recorded proposal of the window with a candidate pack or tenant settings; report the flips. No side effects."""
    import yaml

    from schemas import ActionDecided, ActionProposed
    from tidegate.commands.killswitch import read_control
    from tidegate.ops.autonomy import human_outcomes
    from tidegate.ops.recorded import recorded_window
    from tidegate.ops.whatif import evaluate, settings_ignored, tenants_of

    if policy_dir is None and tenant_settings is None:
        fail("give a candidate: --policy <pack directory> and/or --tenant-settings <file>")
    candidates: dict[str, Any] = {}
    if tenant_settings is not None:
        try:
            loaded = yaml.safe_load(tenant_settings.read_text()) or {}
        except OSError as exc:
            fail(f"--tenant-settings: cannot read {tenant_settings}: {exc.strerror}")
        except yaml.YAMLError as exc:
            fail(f"--tenant-settings: {tenant_settings} is not YAML: {str(exc).splitlines()[0]}")
        candidates = loaded.get("tenants", loaded) if isinstance(loaded, dict) else {}
        if not isinstance(candidates, dict) or not all(isinstance(v, dict) for v in candidates.values()):
            fail(f"{tenant_settings}: expected tenant → settings (a mapping of mappings)")
    pack = _pack(policy_dir)
    t0, t1 = _window(start, end)
    kit = settings()
    with logs_aside("whatif", verbose=verbose), progress_display(_WHATIF_STAGES, quiet=as_json) as progress:
        topics = ("actions.proposed", "actions.decided", "approvals")
        window = run(recorded_window(kit, t0, t1, topics=topics, tenant=tenant, progress=lambda done, total: progress("read", done, total)))
        proposed = window.of(ActionProposed)
        times = [e.time for e in proposed]
        days = (max(times) - min(times)).total_seconds() / 86400 if times else 0.0  # no proposals: no span, no daily rate
        control = run(read_control(kit))
        run(read_control(kit, "directory", control))
        live = pack if policy_dir is None else _pack(None)
        today = tenants_of(live.settings, control)  # the baseline: today's pack and settings decide each proposal again
        tenants = dict(today if policy_dir is None else tenants_of(pack.settings, control))
        for name, change in candidates.items():
            record = control.tenants[name].settings if name in control.tenants else dict(pack.settings.tenants.get(name) or {})
            admins = control.directories.get(name)
            try:
                tenants[name] = pack.settings.with_record(dict(record) | change, admins.directory if admins else None)
            except ValueError as exc:
                fail(f"{tenant_settings}: the candidate settings of {name} are not valid: {exc}")
        decisions = [e.data for e in window.of(ActionDecided)]
        humans = human_outcomes(r.event for r in window.events)
        report = evaluate(
            pack, [e.data for e in proposed], decisions, skipped=window.skipped, tenants=tenants, live=live, live_tenants=today,
            days=days, humans=humans, progress=lambda done: progress("evaluate", done, len(proposed)),
        )  # fmt: skip
        if policy_dir is not None:  # a tenant's own record wins over the candidate's entry for it: say so, not "0 flips"
            report.settings_ignored = settings_ignored(pack, live, control.tenants)
    doc = report.as_dict()
    if as_json:
        print(json.dumps(doc, indent=2, default=str))
        return
    console.print(
        f"candidate {report.candidate_version[:23]}…: {report.evaluated} proposals, {len(report.flips)} flips against today's pack "
        f"and settings, {report.unchanged} unchanged ({report.reasons_changed} with other reasons), "
        f"{report.without_record} without a recorded decision"
    )
    if report.drifted:
        console.print(
            f"{len(report.drifted)} recorded decision(s) differ from today's pack and settings deciding them again "
            "(a setting, the pack or the payees changed since): not the candidate's flips, e.g."
        )
        for f in report.drifted[:3]:
            console.print(
                f"  {f.kind} {shown(f.task_id)} {shown(f.tool)} {shown(json.dumps(f.args), 100)}: {f.then_reasons} → {f.now_reasons}"
            )
    for name in report.settings_ignored:
        console.print(
            f"[yellow]candidate settings for {shown(name)} ignored[/]: {shown(name)} has its own settings record (control.tenant), "
            f"which wins over the pack's entry; try the change with --tenant-settings"
        )
    console.print(report.skipped.summary())
    console.print(f"human load: {report.load_line()}; shadow policies would flip {report.shadow_flips} decisions")
    console.print(
        f"human touches saved (escalations approved unchanged that the candidate allows): {report.touches_saved}; "
        f"newly allowed that a human had rejected or edited: {len(report.newly_allowed_rejected)}"
    )
    for f in report.newly_allowed_rejected[:10]:
        task = shown(f.task_id)
        console.print(f"  [red]would allow[/] {task} {shown(f.tool)} {shown(json.dumps(f.args), 100)} (`tidegate audit explain {task}`)")
    for title, groups in (("tenant", doc["by_tenant"]), ("tool", doc["by_tool"]), ("reason", doc["by_reason"])):
        if not groups:
            continue
        table = Table(title=f"flips by {title}")
        table.add_column(title)
        kinds = sorted({k for g in groups.values() for k in g})
        for k in kinds:
            table.add_column(k, justify="right")
        for name, counts in groups.items():
            table.add_row(name, *[str(counts.get(k, 0)) for k in kinds])
        console.print(table)
    for kind, examples in doc["examples"].items():
        console.print(f"[bold]{kind}[/] e.g.:")
        for ex in examples:
            console.print(f"  {shown(ex['task_id'])} {shown(ex['tool'])} {shown(json.dumps(ex['args']), 100)}: {ex['then']} → {ex['now']}")


# --- evals ---------------------------------------------------------------------------------------


def _contender(spec: str, default_policy: Path | None, default_planner: str) -> tuple[str, Any, str]:
    """(label, pack, strategy name) of one side: a directory is a policy pack, anything else a strategy."""
    path = Path(spec)
    if path.is_dir():
        return f"policy {spec}", _pack(path), default_planner
    return f"planner {spec}", _pack(default_policy), spec


def _run_eval(eval_set: Path, pack: Any, planner: str, label: str) -> Any:
    from servicekit import ToolCatalog
    from tidegate.ops.evals import load_set, run_eval
    from tidegate.ops.strategies import make_strategy

    catalog = ToolCatalog.load(*settings().tool_dirs)
    try:
        cases = load_set(eval_set)
        strategy = make_strategy(planner, catalog)
    except (ValueError, KeyError) as exc:
        fail(str(exc))
    return asyncio.run(run_eval(cases, strategy=strategy, pack=pack, catalog=catalog, label=label))


_ROWS: tuple[tuple[str, Callable[[dict[str, Any]], str]], ...] = (
    ("cases passed", lambda d: f"{d['passed']}/{d['cases']}"),
    ("action accuracy", lambda d: f"{d['action_accuracy']:.1%}"),
    ("decision accuracy", lambda d: f"{d['decision_accuracy']:.1%}"),
    ("escalation rate", lambda d: f"{d['escalation_rate']:.1%}"),
    ("cost per task (USD)", lambda d: f"{d['cost_per_task_usd']:.5f}"),
    ("latency p50 / p95 (ms)", lambda d: f"{d['latency_p50_ms']:.1f} / {d['latency_p95_ms']:.1f}"),
)


@eval_app.command("run")
def eval_run(
    eval_set: Path = typer.Option(DEFAULT_SET, "--set", help="Directory of eval cases."),
    policy_dir: Path = typer.Option(None, "--policy", help="Policy pack (default: the configured one)."),
    planner: str = typer.Option("playbook", "--planner", help="Strategy: `playbook`, `llm:<model>`."),
    as_json: bool = JSON,
) -> None:
    """Score one planner strategy and policy pack on the eval set."""
    card = _run_eval(eval_set, _pack(policy_dir), planner, f"{planner} + {policy_dir or 'default policy'}")
    doc = card.as_dict()
    if as_json:
        print(json.dumps(doc, indent=2))
        return
    table = Table(title=f"eval {eval_set.name}: {doc['label']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, fmt in _ROWS:
        table.add_row(name, fmt(doc))
    console.print(table)
    for f in doc["failures"][:20]:
        console.print(f"[red]✗[/] {f['case']}: expected {' '.join(f['expected'])}\n    got {' '.join(f['got'])} ({f['status']})")


@eval_app.command("workspaces")
def eval_workspaces(
    suites: Path = typer.Option(REPO_ROOT / "evals" / "workspaces", "--suites", help="A suite file, or a directory of them."),
    policy_dir: Path = typer.Option(REPO_ROOT / "policies" / "default", "--policy", help="Policy pack directory."),
    bus: bool = typer.Option(
        False,
        "--bus",
        help="Through a policy service and an executor started on a sandbox topic prefix (Kafka and PostgreSQL), not in process; "
        "the suite's tools answer the executor over Kafka.",
    ),
    as_json: bool = JSON,
    verbose: bool = VERBOSE,
) -> None:
    """Workspace suites (banking, chat, travel, office): legitimate calls run without a human, attacker goals reached, latency."""
    from tidegate.ops.workspaces import load_suite, run_suite, run_suite_through_service

    files = sorted(suites.glob("*.yaml")) if suites.is_dir() else [suites]
    if bus:  # the services run in this process: their logs stay out of the report (and out of --json)
        with logs_aside("eval-workspaces", verbose=verbose):
            docs = [run(run_suite_through_service(load_suite(f), settings(), policy_dir)).as_dict() for f in files]
    else:
        docs = [asyncio.run(run_suite(load_suite(f), policy_dir)).as_dict() for f in files]
    if as_json:
        print(json.dumps(docs, indent=2))
        return
    table = Table(title=f"workspace suites, pack {policy_dir}, {'policy service and executor on Kafka' if bus else 'in process'}")
    for column in ("suite", "legit calls (agent may)", "run without a human", "escalated", "denied", "attacks", "reached (declared)",
                   "reached (undeclared)", "decision p50 / p95 ms", *(["run p50 / p95 ms"] if bus else [])):  # fmt: skip
        table.add_column(column, justify="right")
    for d in docs:
        table.add_row(
            d["suite"],
            f"{d['legit_calls']} ({d['rubric_agent_calls']})",
            f"{d['run_without_human']} ({d['run_pct']} %)",
            str(d["escalated"]),
            str(d["denied"]),
            str(d["attacks"]),
            str(d["attacker_goals_reached_declared"]),
            str(d["attacker_goals_reached_undeclared"]),
            f"{d['decision_p50_ms']:.1f} / {d['decision_p95_ms']:.1f}",
            # proposal → the executor's result (none when no call ran)
            *([f"{d['run_p50_ms']:.1f} / {d['run_p95_ms']:.1f}" if d["run_p50_ms"] is not None else "-"] if bus else []),
        )
    console.print(table)
    for d in docs:
        for miss in d["misses"]:
            console.print(f"[red]✗[/] {d['suite']}: {miss}")


@eval_app.command("compare")
def eval_compare(
    a: str = typer.Argument(..., help="A policy directory, or a planner strategy (`playbook`, `llm:<model>`)."),
    b: str = typer.Argument(..., help="Same, for the other side."),
    eval_set: Path = typer.Option(DEFAULT_SET, "--set", help="Directory of eval cases."),
    policy_dir: Path = typer.Option(None, "--policy", help="Pack used by a side that names a strategy."),
    planner: str = typer.Option("playbook", "--planner", help="Strategy used by a side that names a policy directory."),
    as_json: bool = JSON,
) -> None:
    """Head-to-head scorecard: policy A vs B, playbook vs model, model X vs Y."""
    cards = []
    for spec in (a, b):
        label, pack, strategy = _contender(spec, policy_dir, planner)
        cards.append(_run_eval(eval_set, pack, strategy, label).as_dict())
    differing = sorted({f["case"] for f in cards[0]["failures"]} ^ {f["case"] for f in cards[1]["failures"]})
    if as_json:
        print(json.dumps({"a": cards[0], "b": cards[1], "cases_that_differ": differing}, indent=2))
        return
    table = Table(title=f"eval {eval_set.name}: A vs B")
    table.add_column("metric")
    table.add_column(f"A: {cards[0]['label']}", justify="right")
    table.add_column(f"B: {cards[1]['label']}", justify="right")
    for name, fmt in _ROWS:
        table.add_row(name, fmt(cards[0]), fmt(cards[1]))
    console.print(table)
    if differing:
        console.print("cases passed by one side only: " + ", ".join(differing))


# --- costs ---------------------------------------------------------------------------------------

_COSTS_STAGES = {"audit": "reading the audit log", "topics": "reading recorded events"}


def _audit_window(kit: Any, t0: Any, t1: Any, tenant: str | None, progress: Callable[[int, int], None]) -> tuple[Any, str | None]:
    """The window from the audit log; or None and why there is nothing to read there (no audit schema, no row in the window).

    A database that cannot be reached, refuses the login or refuses the read is an error: the topics keep
    7 days where the log keeps everything, so reading them instead would give partial figures silently.
    """
    import asyncpg

    from tidegate.ops.recorded import read_audit_window

    where = kit.operator_database_url.split("@")[-1].split("?")[0]
    instead = "or read the topics instead with --source topics"
    try:
        window = asyncio.run(read_audit_window(kit.operator_database_url, kit.topic_prefix, t0, t1, tenant=tenant, progress=progress))
    except ConnectionError as exc:  # servicekit.db: down, or the login refused; the message says what to set
        fail(f"{str(exc).rstrip('.')}; {instead}")
    except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
        return None, f"no audit log in the database at {where} (the audit service never ran there)"
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        fail(f"cannot read the audit log at {where}: {exc}; {instead}")
    if not window.events:
        return None, "the audit log has no event in this window"
    return window, None


@app.command()
def costs(
    by: str = typer.Option("workflow", "--by", help="workflow, tenant or tool."),
    start: str = FROM,
    end: str = TO,
    tenant: str = typer.Option(None, "--tenant"),
    review_minutes: float | None = typer.Option(
        None, "--review-minutes", min=0, help="Minutes of a person's time per approval decision; default: TIDEGATE_HUMAN_REVIEW_MINUTES."
    ),
    hourly_rate: float | None = typer.Option(
        None, "--rate", min=0, help="Hourly rate of reviewers, USD; default: TIDEGATE_HUMAN_HOURLY_RATE_USD."
    ),
    source: str = typer.Option(
        "audit",
        "--source",
        help="`audit`: the audit service's log in PostgreSQL (an error if it cannot be read; the topics, said on stderr, "
        "when it has no event in the window); `topics`.",
    ),
    chart: Path | None = typer.Option(None, "--chart", help="Save a chart (PNG) there; default: none (nothing is written unasked)."),
    no_chart: bool = typer.Option(False, "--no-chart", hidden=True, help="No chart (the default now; kept for scripts)."),
    as_json: bool = JSON,
    verbose: bool = VERBOSE,
) -> None:
    """Cost per completed outcome (p50, p95), hand-offs, blocked, rejected and expired proposals, human review time.

    By workflow, tenant or tool. A task completed with a refused action (handed to a human) is counted apart from completed.
    One row a group where the terminal is wide enough (about 135 columns); narrower, each group's figures as a list
    (80 columns, or output piped to a file: use --json for scripts).
    """
    from servicekit.costs import ReviewPrice
    from tidegate.ops.costs import cost_report, save_chart
    from tidegate.ops.recorded import recorded_window

    if by not in ("workflow", "tenant", "tool"):
        fail("--by is workflow, tenant or tool")
    if source not in ("audit", "topics"):
        fail("--source is audit or topics")
    t0, t1 = _window(start, end)
    kit = settings()
    price = ReviewPrice(  # the services' price of a decision (`TIDEGATE_HUMAN_*`), unless an option gives another
        kit.human_review_minutes if review_minutes is None else review_minutes,
        kit.human_hourly_rate_usd if hourly_rate is None else hourly_rate,
    )
    window, fallback = None, None
    with logs_aside("costs", verbose=verbose), progress_display(_COSTS_STAGES, quiet=as_json) as progress:
        if source == "audit":
            progress("audit", 0, None)  # the query has no count of its own: the bar pulses until its rows are read
            window, fallback = _audit_window(kit, t0, t1, tenant, lambda done, total: progress("audit", done, total))
        if window is None:
            if fallback is not None:
                err_console.print(f"{fallback}: reading the topics instead")
            window = run(recorded_window(kit, t0, t1, tenant=tenant, progress=lambda done, total: progress("topics", done, total)))
    used = "audit" if fallback is None and source == "audit" else "topics"
    report = cost_report([r.event for r in window.events], by=by, rate=price)  # type: ignore[arg-type]
    doc = report.as_dict()
    doc["source"] = used
    doc["fallback_reason"] = fallback  # why the topics were read though the audit log was asked for; None: it was not
    doc["skipped"] = window.skipped.as_dict()
    if chart is not None and not no_chart:
        doc["chart"] = str(save_chart(report, chart))
    if as_json:
        print(json.dumps(doc, indent=2))
        return
    _print_costs(
        doc["groups"], by, f"cost per outcome by {by} (review at {price.minutes_per_decision:g} min x ${price.hourly_rate_usd:g}/h)"
    )
    if by != "tool":
        console.print(
            "outside agents' tasks (no planner: the client, an adapter, MCP) have no outcome: completed, failed and the p50/p95 "
            "count the planner's tasks; an outside agent's calls are counted one by one in their own column"
        )
    console.print(f"read from: {used}{f' ({fallback})' if fallback else ''}; {window.skipped.summary()}")
    if "chart" in doc:
        console.print(f"chart saved to {doc['chart']}")
