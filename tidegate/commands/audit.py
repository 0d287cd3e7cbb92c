"""`tidegate audit`: verify the hash-chained log, archive and prune its oldest rows, tell a task's story, explain it, search the log."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar, cast

import asyncpg
import typer
from rich.markup import escape
from rich.table import Table

from servicekit import OPS, Keyring, ToolCatalog, deployment_authority, kafka_options
from services.audit import (
    ArchiveRefused,
    ArchiveReport,
    CompletenessReport,
    ContentReport,
    Missing,
    PostgresAuditLog,
    SearchFilters,
    StoryLine,
    VerifyReport,
    archive_log,
    check_complete,
    check_content,
    checkpoint_before,
    explain_task,
    read_published_checkpoints,
    search,
    signature_recheck,
    starting_heads,
    story,
    tasks_of_action,
    verify_archives,
    verify_log,
)
from tidegate.audit_render import render_html, render_markdown
from tidegate.commands._common import console, err_console, fail, run, settings, shown, when
from tidegate.commands._progress import progress_display

app = typer.Typer(help="The audit log: verify its chains, archive and prune, show and explain a task, search.", no_args_is_help=True)

T = TypeVar("T")


async def _with_log(use: Callable[[PostgresAuditLog], Awaitable[T]]) -> T:
    log = await PostgresAuditLog.connect(settings().operator_database_url)  # a database down or a refused login: ConnectionError
    try:
        return await use(log)
    except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError) as exc:
        raise ConnectionError(f"no audit log in this database ({exc}): has the audit service run here?") from exc
    except asyncpg.UndefinedColumnError as exc:
        raise ConnectionError(f"the audit schema is older than this CLI ({exc}): start the audit service once to migrate it") from exc
    finally:
        await log.close()


def _lines_table(lines: list[StoryLine], title: str, *, with_task: bool = False) -> Table:
    columns = ["time (UTC)", "topic", "offset", "event", "source", *(["tenant", "task"] if with_task else []), "what happened"]
    table = Table(*columns, title=title)
    for line in lines:
        flag = "" if line.valid else " [red](invalid)[/]"
        flag += " [yellow](duplicate)[/]" if line.duplicate else ""
        table.add_row(
            line.at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
            f"{line.topic}[{line.partition}]",
            str(line.offset),
            line.event_type + flag,
            line.source,
            *([line.tenant_id or "-", line.task_id or "-"] if with_task else []),
            line.summary,
        )
    return table


_VERIFY_EVERY = 5000  # rows between two progress reports (verify reads thousands of rows a second)


class _Reporting:
    """The log as `verify_log` reads it, telling `progress` how many chain rows were read of the `total` the chains' heads hold."""

    def __init__(self, log: PostgresAuditLog, total: int, progress: Callable[[int, int], None]) -> None:
        self._log, self._total, self._progress, self.read = log, total, progress, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._log, name)

    async def chain_rows(self, topic: str, partition: int, first: int = 1, last: int | None = None) -> AsyncIterator[Any]:
        """The chain's rows, as the log yields them, counted."""
        async for row in self._log.chain_rows(topic, partition, first, last):
            self.read += 1
            if self.read % _VERIFY_EVERY == 0:
                self._progress(self.read, self._total)
            yield row
        self._progress(self.read, self._total)


async def _reporting(
    log: PostgresAuditLog, prefix: str, progress: Callable[[int, int], None], starts: dict[tuple[str, int], Any] | None = None
) -> PostgresAuditLog:
    """`log`, reporting the rows `verify_log` reads to `progress` (rows read, rows its chains hold by their heads from `starts` on)."""
    starts = starts or {}
    total = sum(head.seq - (starts[tp].seq - 1 if tp in starts else 0) for tp, head in (await log.heads(prefix)).items())
    progress(0, total)
    return cast(PostgresAuditLog, _Reporting(log, total, progress))  # the same log to `verify_log`: every other read passes through


@app.command()
def verify(
    bus: bool = typer.Option(False, "--bus", help="Also compare with the checkpoints published on Kafka (catches deleted checkpoints)."),
    complete: bool = typer.Option(
        False, "--complete", help="Also prove every offset the bus still holds (every topic, partition) has its row; list the missing."
    ),
    content: bool = typer.Option(
        False,
        "--content",
        help="Also compare each row whose offset the bus still holds with the bus's record there (timestamp, key, headers, value): "
        "names a row the audit service did not write. Reads every record the bus keeps.",
    ),
    signatures: bool = typer.Option(
        False,
        "--signatures",
        help="Also observe each row stored as a valid event again with the deployment's keys: names a row claiming a signature "
        "its value does not carry (about ten times the time of the chains alone).",
    ),
    catch_up_s: float = typer.Option(
        15.0,
        "--catch-up-s",
        min=0,
        help="With --complete: how long the newest records of a partition may take to be recorded (the audit service "
        "is a poll behind on a live deployment) before they count as missing. 0: report them at once.",
    ),
    from_checkpoint: int | None = typer.Option(
        None,
        "--from-checkpoint",
        min=1,
        help="Check each chain only from the heads this signed checkpoint holds on (fast, incremental); the rows before are not re-hashed.",
    ),
    archives: list[Path] = typer.Option(
        [],
        "--archive",
        help="Verify this archive file offline (repeat for a sequence of archives); no database is read unless --with-log.",
    ),
    with_log: bool = typer.Option(
        False, "--with-log", help="With --archive: also verify the live log, and that the archives are the ones its prunes recorded."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Recompute every hash chain of the deployment and check its signed checkpoints; exit 1 on a broken link or a missing record."""
    kit = settings()
    if archives and not with_log:
        _verify_archives(archives, Keyring.load(kit.keys_dir, "audit"), as_json=as_json)
        return

    def waiting(newest: list[Missing]) -> None:
        count = sum(m.count for m in newest)
        err_console.print(f"waiting up to {catch_up_s:g} s for the audit service to record the newest {count} record(s) of the bus")

    archived: ArchiveReport | None = None
    compared: ContentReport | None = None
    recheck = None
    if signatures:
        tools = ToolCatalog.load(kit.tools_dir) if kit.tools_dir.is_dir() else None
        recheck = signature_recheck(deployment_authority(kit, tools, history=True).check, kit.topic_prefix, kit.bounds)

    async def go(log: PostgresAuditLog) -> tuple[VerifyReport, CompletenessReport | None]:
        options = kafka_options(kit, OPS)
        published = await read_published_checkpoints(kit.kafka_bootstrap, kit.topic_prefix, client_options=options) if bus else []
        keyring = Keyring.load(kit.keys_dir, "audit")
        labels = {"rows": "verifying the chains", "content": "comparing rows with the bus"}
        with progress_display(labels, quiet=as_json) as progress:
            try:
                starts = await starting_heads(log, keyring, prefix=kit.topic_prefix, from_checkpoint=from_checkpoint)
                counted = await _reporting(log, kit.topic_prefix, lambda done, total: progress("rows", done, total), starts)
                report = await verify_log(
                    counted, keyring, prefix=kit.topic_prefix, extra_checkpoints=published, from_checkpoint=from_checkpoint,
                    recheck=recheck,
                )  # fmt: skip
            except LookupError as exc:
                raise ConnectionError(str(exc)) from None  # one line, exit 1: there is nothing to start from
            if content:
                nonlocal compared
                compared = await check_content(
                    log, kit.kafka_bootstrap, kit.topic_prefix, client_options=options,
                    progress=lambda done, total: progress("content", done, total),
                )  # fmt: skip
        if archives:
            prunes = await log.prunes(kit.topic_prefix)
            live_from = report.kept_from if report.kept_from_reason == "pruned" else None
            nonlocal archived
            archived = _checked_archives(archives, keyring, prunes=prunes, live_from=live_from)
        if not complete:
            return report, None
        return report, await check_complete(
            log, kit.kafka_bootstrap, kit.topic_prefix, client_options=options, catch_up_s=catch_up_s, waiting=waiting
        )

    report, completeness = run(_with_log(go))
    if as_json:
        doc = json.loads(report.model_dump_json())
        if completeness is not None:
            doc["completeness"] = json.loads(completeness.model_dump_json())
        if archived is not None:
            doc["archives"] = json.loads(archived.model_dump_json())
        if compared is not None:
            doc["content"] = json.loads(compared.model_dump_json())
        console.print_json(json.dumps(doc))
    else:
        rate = report.rows / report.seconds if report.seconds else 0.0
        console.print(
            f"checked {report.rows} rows in {report.chains} chain(s) and {report.checkpoints} checkpoint(s) "
            f"in {report.seconds:.2f} s ({rate:,.0f} rows/s)"
        )
        _print_start(report)
        if report.signatures_checked is not None:
            console.print(f"observed {report.signatures_checked} row(s) stored as valid events again: their signatures checked")
        if report.ok:
            console.print("[bold green]intact:[/] every chain and checkpoint checks out")
        else:
            err_console.print(f"[bold red]BROKEN:[/] {report.breaks[0].describe()}")
            for brk in report.breaks[1:]:
                err_console.print(f"  also: {brk.describe()}")
        if not bus:
            # The database's own checkpoints prove nothing to someone who can rewrite the database: the published copies can.
            none = " (none is stored)" if report.rows and not report.checkpoints else ""
            err_console.print(
                f"checked against the checkpoints stored in the database{none}: a superuser can rewrite the chains and delete those; "
                "add --bus to compare with the checkpoints the audit published on Kafka"
            )
        if completeness is not None:
            _print_completeness(completeness)
        if compared is not None:
            _print_content(compared)
        if archived is not None:
            _print_archives(archived)
    if any(part is not None and not part.ok for part in (report, completeness, compared, archived)):
        raise typer.Exit(1)


def _print_content(c: ContentReport) -> None:
    console.print(f"compared {c.compared} row(s) of {c.partitions} partitions with the records the bus holds in {c.seconds:.2f} s")
    if c.not_on_bus:
        err_console.print(f"{c.not_on_bus} row(s) of chains whose partition the bus does not have: not compared")
    if c.ok:
        console.print("[bold green]as on the bus:[/] every row the bus can vouch for holds the bus's record")
        return
    err_console.print(f"[bold red]NOT AS ON THE BUS:[/] {len(c.mismatches)} row(s) differ from the bus")
    for m in c.mismatches[:50]:
        err_console.print(f"  {escape(m.describe())}", soft_wrap=True)
    if len(c.mismatches) > 50:
        err_console.print(f"  … and {len(c.mismatches) - 50} more (--json lists them all)")


def _print_start(report: VerifyReport) -> None:
    if report.kept_from_reason == "pruned":
        console.print(
            f"the log is pruned through checkpoint {report.kept_from}: each chain checked from the head it signed; "
            f"{report.rows_before} earlier row(s) are archived (verify them with --archive), "
            f"{report.checkpoints_before} earlier checkpoint(s) checked for signature and id only"
        )
    elif report.kept_from_reason == "requested":
        console.print(
            f"[yellow]incremental:[/] each chain checked from the heads of checkpoint {report.kept_from} on; "
            f"{report.rows_before} earlier row(s) were not re-hashed, {report.checkpoints_before} earlier checkpoint(s) "
            "checked for signature and id only"
        )


def _checked_archives(paths: list[Path], keyring: Keyring, **live: Any) -> ArchiveReport:
    try:
        return verify_archives(paths, keyring, **live)
    except OSError as exc:
        fail(f"--archive: cannot read {exc.filename}: {exc.strerror}")


def _verify_archives(paths: list[Path], keyring: Keyring, *, as_json: bool) -> None:
    """Archives alone, offline: no database is read."""
    report = _checked_archives(paths, keyring)
    if as_json:
        console.print_json(report.model_dump_json())
    else:
        _print_archives(report)
    if not report.ok:
        raise typer.Exit(1)


def _print_archives(report: ArchiveReport) -> None:
    for a in report.archives:
        start = f"after checkpoint {a.after_checkpoint}" if a.after_checkpoint is not None else "from seq 1"
        console.print(
            f"archive {shown(a.path)}: {a.rows} rows in {a.chains} chain(s), {start} through checkpoint {a.through_checkpoint} "
            f"(sha256 {a.sha256})"
        )
    if report.ok:
        console.print(f"[bold green]intact:[/] {len(report.archives)} archive(s) check out, each chain and checkpoint, in sequence")
        return
    err_console.print(f"[bold red]BROKEN:[/] {escape(report.breaks[0].describe())}", soft_wrap=True)
    for brk in report.breaks[1:]:
        err_console.print(f"  also: {escape(brk.describe())}", soft_wrap=True)


@app.command()
def archive(
    out: Path = typer.Option(..., "--out", "-o", help="The archive file to write (gzip'd JSON lines); refused if it exists."),
    through_checkpoint: int | None = typer.Option(None, "--through-checkpoint", min=1, help="Archive through this checkpoint's heads."),
    before: str | None = typer.Option(
        None, "--before", help="Archive through the newest checkpoint taken before this time (ISO 8601, or a duration ago: 90d)."
    ),
    prune: bool = typer.Option(False, "--prune", help="Then remove the archived rows from the database (each chain's head row stays)."),
    as_json: bool = typer.Option(False, "--json", help="Print what was written as JSON."),
) -> None:
    """Write the log's rows from the last prune through a signed checkpoint to FILE, checking every chain; with --prune, remove them."""
    if (through_checkpoint is None) == (before is None):
        fail("give one of --through-checkpoint N or --before DATE")
    if out.exists():
        fail(f"--out: {out} exists; an archive is never overwritten")
    kit = settings()
    cutoff = when(before) if before is not None else None

    async def go(log: PostgresAuditLog) -> tuple[Any, int | None]:
        through = through_checkpoint
        if cutoff is not None:
            found = await checkpoint_before(log, kit.topic_prefix, cutoff)
            if found is None:
                raise ConnectionError(f"no checkpoint was taken before {cutoff:%Y-%m-%d %H:%M:%S}: nothing to archive")
            through = found.checkpoint_id
        assert through is not None
        with progress_display({"rows": f"archiving through checkpoint {through}"}, quiet=as_json) as progress:
            try:
                done = await archive_log(
                    log, Keyring.load(kit.keys_dir, "audit"), out, prefix=kit.topic_prefix, through=through,
                    progress=lambda n, total: progress("rows", n, total),
                )  # fmt: skip
            except LookupError as exc:
                raise ConnectionError(str(exc)) from None
            except ArchiveRefused as exc:
                raise ConnectionError(f"refused, nothing archived: {exc}") from None
        if not prune:
            return done, None
        try:
            return done, await log.prune(kit.topic_prefix, done.checkpoint_id, done.sha256, done.prunable_rows)
        except asyncpg.InsufficientPrivilegeError as exc:
            raise ConnectionError(
                f"{out} is written, but this login may not prune ({exc}): run it as the operator (the schema owner's member)"
            ) from None
        except asyncpg.PostgresError as exc:
            raise ConnectionError(f"{out} is written, but the prune was refused and nothing was removed: {exc}") from None

    done, removed = run(_with_log(go))
    if as_json:
        console.print_json(json.dumps({**done.model_dump(), "pruned_rows": removed}))
        return
    start = f"after checkpoint {done.previous_checkpoint_id}" if done.previous_checkpoint_id is not None else "from seq 1"
    console.print(
        f"wrote {done.path}: {done.rows} rows of {done.chains} chain(s), {start} through checkpoint {done.checkpoint_id}, "
        "every chain checked"
    )
    console.print(f"sha256 {done.sha256}")
    if removed is not None:
        console.print(
            f"pruned: {removed} row(s) removed from the database; each chain is kept from the head checkpoint {done.checkpoint_id} signed"
        )
    else:
        console.print(f"nothing removed (add --prune to remove the {done.prunable_rows} row(s) it holds below the heads)")


def _print_completeness(c: CompletenessReport) -> None:
    console.print(
        f"compared {c.offsets} offsets of {c.partitions} partitions of {c.topics} topics on the bus with the log in {c.seconds:.2f} s"
    )
    if c.archived:
        console.print(f"{c.archived} older offset(s) the bus still holds were pruned into archives: not compared (see --archive)")
    if c.ok:
        console.print("[bold green]complete:[/] every record the bus holds has exactly one row")
        return
    err_console.print(f"[bold red]INCOMPLETE:[/] {c.missing_records} record(s) in {len(c.missing)} range(s) have no row")
    for m in c.missing[:50]:
        err_console.print(f"  {m.describe()}")
    if len(c.missing) > 50:
        err_console.print(f"  … and {len(c.missing) - 50} more range(s) (--json lists them all)")


async def _task_of(log: PostgresAuditLog, ident: str, prefix: str) -> str | None:
    """The task `ident` names: itself when the log has a record of that task, else the one task whose records name it as an action id.

    Says on stderr when an action id was resolved; an action id of several tasks (outside agents of several tenants may
    reuse one) is an error listing them.
    """
    if await log.task_rows(ident, prefix):
        return ident
    tasks = await tasks_of_action(log, ident, prefix)
    if not tasks:
        return None
    if len(tasks) > 1:
        listed = ", ".join(f"{task} ({tenant or '-'})" for task, tenant in tasks)
        raise ConnectionError(f"action {ident!r} is named by {len(tasks)} tasks: {listed}; give the task id")
    task, tenant = tasks[0]
    err_console.print(f"{shown(ident)} is an action id: it belongs to task {shown(task)} (tenant {shown(tenant or '-')})", soft_wrap=True)
    return task


_NOTHING = "no record of task or action {!r} in the audit log"


@app.command()
def show(
    task_id: str = typer.Argument(..., help="The task id, or an action id (the idempotency key a system of record shows): its task."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON lines instead of a table."),
) -> None:
    """The full story of a task, in order: every record about it, valid or not."""
    prefix = settings().topic_prefix

    async def go(log: PostgresAuditLog) -> tuple[str, list[Any]]:
        task = await _task_of(log, task_id, prefix)
        return (task, await log.task_rows(task, prefix)) if task is not None else (task_id, [])

    task, rows = run(_with_log(go))
    if not rows:
        fail(_NOTHING.format(task_id))
    task_id = task
    lines = story(rows)
    if as_json:
        for line in lines:
            typer.echo(line.model_dump_json())
        return
    console.print(_lines_table(lines, f"task {shown(task_id)}: {len(lines)} records"))


@app.command()
def explain(
    task_id: str = typer.Argument(..., help="The task id, or an action id (the idempotency key a system of record shows): its task."),
    fmt: str = typer.Option("md", "--format", "-f", help="md, html or json."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write to this file instead of stdout."),
) -> None:
    """The explainability artifact of a task: sources, policies checked, tools called, approvals, costs."""
    if fmt not in ("md", "html", "json"):
        fail(f"unknown format {fmt!r}: choose md, html or json")
    prefix = settings().topic_prefix

    async def go(log: PostgresAuditLog) -> Any:
        task = await _task_of(log, task_id, prefix)
        return None if task is None else await explain_task(log, task, prefix)

    explanation = run(_with_log(go))
    if explanation is None or explanation.records == 0:
        fail(_NOTHING.format(task_id))
    if fmt == "md":
        text = render_markdown(explanation)
    elif fmt == "html":
        text = render_html(explanation)
    else:
        text = explanation.model_dump_json(indent=2) + "\n"
    if output is not None:
        try:
            output.write_text(text)
        except OSError as exc:
            fail(f"-o: cannot write {output}: {exc.strerror}")
        console.print(f"wrote {output}")
    else:
        typer.echo(text, nl=False)


def _when(value: str | None) -> datetime | None:
    return None if value is None else when(value)


@app.command("search")
def search_(
    tenant: str | None = typer.Option(None, help="Tenant id."),
    tool: str | None = typer.Option(None, help="Tool name."),
    outcome: str | None = typer.Option(None, help="allow, deny, escalate, granted, rejected, succeeded, failed, completed…"),
    reason: str | None = typer.Option(None, help="Reason code, e.g. needs_human_approval."),
    since: str | None = typer.Option(None, help="From this time: ISO 8601, `now`, or a duration ago (15m, 2h, 1.5d)."),
    until: str | None = typer.Option(None, help="Before this time: ISO 8601, `now`, or a duration ago."),
    trace: str | None = typer.Option(None, help="Trace id (32 hex), or a whole traceparent."),
    task: str | None = typer.Option(None, help="Task id."),
    event_type: str | None = typer.Option(None, "--type", help="Event type, e.g. action.decided."),
    action: str | None = typer.Option(None, "--action", help="Action id (the idempotency key a system of record shows)."),
    limit: int = typer.Option(100, min=1, help="At most this many records."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON lines."),
) -> None:
    """Find records by tenant, tool, outcome, reason code, time range, trace id, task or action id."""
    if trace and len(trace) > 32 and "-" in trace:
        trace = trace.split("-")[1]
    if event_type and not event_type.startswith("tidegate."):
        event_type = "tidegate." + event_type
    start, end = _when(since), _when(until)
    if start is not None and end is not None and start >= end:
        fail(f"--since ({start:%Y-%m-%d %H:%M:%S}) is not before --until ({end:%Y-%m-%d %H:%M:%S}): nothing can match")
    filters = SearchFilters(
        tenant=tenant, tool=tool, outcome=outcome, reason=reason, since=start, until=end,
        trace_id=trace, task_id=task, event_type=event_type, action_id=action, topic_prefix=settings().topic_prefix,
    )  # fmt: skip

    async def go(log: PostgresAuditLog) -> list[Any]:
        return await search(log, filters, limit=limit)

    lines = run(_with_log(go))
    if as_json:
        for line in lines:
            typer.echo(json.dumps(line.model_dump(mode="json")))
        return
    console.print(_lines_table(lines, f"{len(lines)} records" + (f" (limit {limit})" if len(lines) == limit else ""), with_task=True))
