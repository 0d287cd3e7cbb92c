"""`tidegate audit`: verify the hash-chained log, tell a task's story, explain it, search the log."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar, cast

import asyncpg
import typer
from rich.table import Table

from servicekit import OPS, Keyring, kafka_options
from services.audit import (
    CompletenessReport,
    Missing,
    PostgresAuditLog,
    SearchFilters,
    StoryLine,
    VerifyReport,
    check_complete,
    explain_task,
    read_published_checkpoints,
    search,
    story,
    verify_log,
)
from tidegate.audit_render import render_html, render_markdown
from tidegate.commands._common import console, err_console, fail, run, settings, shown, when
from tidegate.commands._progress import progress_display

app = typer.Typer(help="The audit log: verify its chains, show and explain a task, search.", no_args_is_help=True)

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

    async def chain_rows(self, topic: str, partition: int) -> AsyncIterator[Any]:
        """The chain's rows, as the log yields them, counted."""
        async for row in self._log.chain_rows(topic, partition):
            self.read += 1
            if self.read % _VERIFY_EVERY == 0:
                self._progress(self.read, self._total)
            yield row
        self._progress(self.read, self._total)


async def _reporting(log: PostgresAuditLog, prefix: str, progress: Callable[[int, int], None]) -> PostgresAuditLog:
    """`log`, reporting the rows `verify_log` reads to `progress` (rows read, rows its chains hold by their heads)."""
    total = sum(head.seq for head in (await log.heads(prefix)).values())
    progress(0, total)
    return cast(PostgresAuditLog, _Reporting(log, total, progress))  # the same log to `verify_log`: every other read passes through


@app.command()
def verify(
    bus: bool = typer.Option(False, "--bus", help="Also compare with the checkpoints published on Kafka (catches deleted checkpoints)."),
    complete: bool = typer.Option(
        False, "--complete", help="Also prove every offset the bus still holds (every topic, partition) has its row; list the missing."
    ),
    catch_up_s: float = typer.Option(
        15.0,
        "--catch-up-s",
        min=0,
        help="With --complete: how long the newest records of a partition may take to be recorded (the audit service "
        "is a poll behind on a live deployment) before they count as missing. 0: report them at once.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Recompute every hash chain of the deployment and check its signed checkpoints; exit 1 on a broken link or a missing record."""
    kit = settings()

    def waiting(newest: list[Missing]) -> None:
        count = sum(m.count for m in newest)
        err_console.print(f"waiting up to {catch_up_s:g} s for the audit service to record the newest {count} record(s) of the bus")

    async def go(log: PostgresAuditLog) -> tuple[VerifyReport, CompletenessReport | None]:
        options = kafka_options(kit, OPS)
        published = await read_published_checkpoints(kit.kafka_bootstrap, kit.topic_prefix, client_options=options) if bus else []
        with progress_display({"rows": "verifying the chains"}, quiet=as_json) as progress:
            counted = await _reporting(log, kit.topic_prefix, lambda done, total: progress("rows", done, total))
            report = await verify_log(counted, Keyring.load(kit.keys_dir, "audit"), prefix=kit.topic_prefix, extra_checkpoints=published)
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
        console.print_json(json.dumps(doc))
    else:
        rate = report.rows / report.seconds if report.seconds else 0.0
        console.print(
            f"checked {report.rows} rows in {report.chains} chain(s) and {report.checkpoints} checkpoint(s) "
            f"in {report.seconds:.2f} s ({rate:,.0f} rows/s)"
        )
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
    if not report.ok or (completeness is not None and not completeness.ok):
        raise typer.Exit(1)


def _print_completeness(c: CompletenessReport) -> None:
    console.print(
        f"compared {c.offsets} offsets of {c.partitions} partitions of {c.topics} topics on the bus with the log in {c.seconds:.2f} s"
    )
    if c.ok:
        console.print("[bold green]complete:[/] every record the bus holds has exactly one row")
        return
    err_console.print(f"[bold red]INCOMPLETE:[/] {c.missing_records} record(s) in {len(c.missing)} range(s) have no row")
    for m in c.missing[:50]:
        err_console.print(f"  {m.describe()}")
    if len(c.missing) > 50:
        err_console.print(f"  … and {len(c.missing) - 50} more range(s) (--json lists them all)")


@app.command()
def show(
    task_id: str = typer.Argument(..., help="The task id."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON lines instead of a table."),
) -> None:
    """The full story of a task, in order: every record about it, valid or not."""
    rows = run(_with_log(lambda log: log.task_rows(task_id, settings().topic_prefix)))
    if not rows:
        fail(f"no record of task {task_id!r} in the audit log")
    lines = story(rows)
    if as_json:
        for line in lines:
            typer.echo(line.model_dump_json())
        return
    console.print(_lines_table(lines, f"task {shown(task_id)}: {len(lines)} records"))


@app.command()
def explain(
    task_id: str = typer.Argument(..., help="The task id."),
    fmt: str = typer.Option("md", "--format", "-f", help="md, html or json."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write to this file instead of stdout."),
) -> None:
    """The explainability artifact of a task: sources, policies checked, tools called, approvals, costs."""
    if fmt not in ("md", "html", "json"):
        fail(f"unknown format {fmt!r}: choose md, html or json")
    explanation = run(_with_log(lambda log: explain_task(log, task_id, settings().topic_prefix)))
    if explanation.records == 0:
        fail(f"no record of task {task_id!r} in the audit log")
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
    limit: int = typer.Option(100, min=1, help="At most this many records."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON lines."),
) -> None:
    """Find records by tenant, tool, outcome, reason code, time range and trace id."""
    if trace and len(trace) > 32 and "-" in trace:
        trace = trace.split("-")[1]
    if event_type and not event_type.startswith("tidegate."):
        event_type = "tidegate." + event_type
    start, end = _when(since), _when(until)
    if start is not None and end is not None and start >= end:
        fail(f"--since ({start:%Y-%m-%d %H:%M:%S}) is not before --until ({end:%Y-%m-%d %H:%M:%S}): nothing can match")
    filters = SearchFilters(
        tenant=tenant, tool=tool, outcome=outcome, reason=reason, since=start, until=end,
        trace_id=trace, task_id=task, event_type=event_type, topic_prefix=settings().topic_prefix,
    )  # fmt: skip

    async def go(log: PostgresAuditLog) -> list[Any]:
        return await search(log, filters, limit=limit)

    lines = run(_with_log(go))
    if as_json:
        for line in lines:
            typer.echo(json.dumps(line.model_dump(mode="json")))
        return
    console.print(_lines_table(lines, f"{len(lines)} records" + (f" (limit {limit})" if len(lines) == limit else ""), with_task=True))
