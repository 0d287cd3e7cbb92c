"""`tidegate audit show|explain|search`: a task's story, its explainability artifact, and records found by what they name."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.table import Table

from servicekit import Keyring
from services.audit import (
    ArchiveError,
    AuditLog,
    InMemoryAuditLog,
    LogRow,
    PrunedBefore,
    Recheck,
    SearchFilters,
    SeveralTenants,
    StoryLine,
    archive_recheck,
    explain_task,
    pruned_before,
    read_archive,
    rechecked,
    search,
    story,
    task_rows_of,
    tasks_of_action,
    with_archives,
)
from tidegate.audit_render import render_html, render_markdown
from tidegate.commands._audit_log import row_recheck, with_audit_log
from tidegate.commands._common import console, err_console, fail, run, settings, shown, when

__all__ = ["archive_log", "archive_rows", "explain", "offline_recheck", "read_scope", "search_", "show", "where_read"]

T = TypeVar("T")


TENANT_SETTINGS = "tidegate.control.tenant"  # a tenant's settings record: `search` tells each as the change from the one before
WIDE = 140  # a terminal narrower than this gets three columns: eight wrapped a record's cells to a few letters each


def _lines_table(lines: list[StoryLine], title: str, *, with_task: bool = False) -> Table:
    if console.width < WIDE:
        return _narrow_table(lines, title, with_task=with_task)
    columns = ["time (UTC)", "topic", "offset", "event", "source", *(["tenant", "task"] if with_task else []), "what happened"]
    table = Table(*columns, title=title)
    for line in lines:
        flag = _flags(line)
        table.add_row(  # every text a record carries is someone else's (an agent's task id, source, rationale): shown as it is
            line.at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
            shown(f"{line.topic}[{line.partition}]"),
            str(line.offset),
            shown(line.event_type) + flag,
            shown(line.source),
            *([shown(line.tenant_id or "-"), shown(line.task_id or "-")] if with_task else []),
            shown(line.summary, limit=None),
        )
    return table


def _flags(line: StoryLine) -> str:
    flag = "" if line.valid else " [red](invalid)[/]"
    flag += " [yellow](duplicate)[/]" if line.duplicate else ""
    return flag + (" [red](does not verify: not evidence)[/]" if line.unverified else "")


def _narrow_table(lines: list[StoryLine], title: str, *, with_task: bool) -> Table:
    """The same records for an 80-column terminal: when and what, then where it was and who sent it on a line below.

    At 80 columns the eight columns left a dead letter's summary 8 letters wide, one record 15 lines (an SRE probe).
    """
    table = Table("time (UTC)", "event", title=title)
    table.add_column("what happened", overflow="fold")  # a long topic or id is folded, never cut
    for line in lines:
        whose = f" · tenant {shown(line.tenant_id or '-')} · task {shown(line.task_id or '-')}" if with_task else ""
        where = f"{shown(line.topic)}[{line.partition}]@{line.offset} · {shown(line.source)}{whose}"
        table.add_row(
            line.at.strftime("%m-%d %H:%M:%S.%f")[:-3],
            shown(line.event_type) + _flags(line),
            f"{shown(line.summary, limit=None)}\n[dim]{where}[/]",
        )
    return table


async def _task_of(log: AuditLog, ident: str, prefix: str, tenant: str | None) -> tuple[str, str | None] | None:
    """The task `ident` names, and whose (`tenant` when given, else the action's task's tenant if `ident` is an action id).

    Itself when the log has a record of that task, else the one task whose records name it as an action id. Says on
    stderr when an action id was resolved; an action id of several tasks (outside agents of several tenants may reuse
    one) is an error listing them.
    """
    if await log.task_rows(ident, prefix):
        return ident, tenant
    tasks = [(task, of) for task, of in await tasks_of_action(log, ident, prefix) if tenant is None or of == tenant]
    if not tasks:
        return None
    if len(tasks) > 1:
        listed = ", ".join(f"{task} ({of or '-'})" for task, of in tasks)
        raise ConnectionError(f"action {ident!r} is named by {len(tasks)} tasks: {listed}; give the task id (and --tenant)")
    task, of = tasks[0]
    err_console.print(f"{shown(ident)} is an action id: it belongs to task {shown(task)} (tenant {shown(of or '-')})", soft_wrap=True)
    return task, of


async def _one_tenant(read: Awaitable[T]) -> T:
    """What `read` reads of one tenant's task; a task id several tenants used, asked for without `--tenant`, is an error naming them."""
    try:
        return await read
    except SeveralTenants as several:  # a task id is its tenant's: two tenants' tasks are never told as one
        raise ConnectionError(str(several)) from None


_TENANT_HELP = "Whose task: a task id is its tenant's, and when several tenants used the id, say which (else it is an error)."


_APPROVAL_ID = re.compile(r"(ap|fu)-[0-9a-f]{1,64}")  # the approval service's ids: what a webhook message and the page lead with


def _nothing(ident: str, tenant: str | None, pruned: PrunedBefore | None) -> str:
    """An id with no record: a typo, or a task older than the log's last prune (then said, with the archive that holds it).

    An approval id (the on-call's starting point the morning after: the chat message's `ap-…`) is said to be one, with
    where its task and action ids are read, which the log is searched by (the approver2am probe: "no record", and nothing more).
    """
    missing = f"no record of task or action {ident!r}" + (f" of tenant {tenant!r}" if tenant else "") + " in the audit log"
    if _APPROVAL_ID.fullmatch(ident.strip()):
        missing += (
            f"; {ident.strip()} is an approval id: give the task or action id it was raised for, which `tidegate approvals show "
            f"{ident.strip()}` prints (task …, action …), as do the approver page and the webhook message that announced it "
            "(task_id, action_id)"
        )
    return missing if pruned is None else f"{missing}; {pruned.not_found(ident)}"


_ARCHIVE_HELP = "An archive `tidegate audit archive --out` wrote (repeatable): the task's records pruned from the log are read from it."


async def _task_log(log: AuditLog, ident: str, prefix: str, tenant: str | None, archives: list[Path]) -> tuple[Any, str, str | None] | None:
    """Where to read the task `ident` names (the live log, or it with `archives`), the task, and whose; None: no record anywhere."""
    found = await _task_of(log, ident, prefix, tenant)
    if not archives:
        return None if found is None else (log, *found)
    task, of = found or (ident, tenant)  # an id the log lost entirely is looked for in the archives as a task id
    try:
        return await with_archives(log, archives, task, prefix), task, of
    except ArchiveError as exc:
        raise ConnectionError(f"--archive: {exc}") from None


def _start_pruned(ident: str, submitted: bool, pruned: PrunedBefore | None, archives: list[Path]) -> None:
    """Say on stderr that a task without its `task.submitted` may have begun before the log's last prune."""
    if not submitted and pruned is not None and not archives:
        err_console.print("note: " + shown(pruned.start_missing(ident), limit=None), soft_wrap=True)


_OFFLINE_HELP = "Read the task from the --archive files alone (an export or archive), no database: an auditor's machine."
_TRUST_HELP = (
    "With --offline: trust the audit key the file carries with this fingerprint (sha256, as `audit export` printed it); "
    "then the signing keys the file's attested header carries check each row's signature. Repeatable (one a rotation)."
)


def check_fingerprints(option: str, given: list[str]) -> None:
    """Exit with a message unless each of `given` (the values of `option`) is a whole sha256 fingerprint, 64 hex digits."""
    if bad := [t for t in given if not re.fullmatch(r"[0-9a-fA-F]{64}", t.strip())]:
        fail(f"{option} {bad[0]!r}: give the key's whole sha256 fingerprint, 64 hex digits, as `audit export` printed it")


def offline_recheck(archives: list[Path], prefix: str, trust: list[str]) -> Recheck:
    """How each row read offline is checked from its own value: with the signing keys the files' attested headers carry.

    Where no file's may be used (not attested, its audit key not trusted here), with this machine's keys folder, as before,
    and stderr says why.
    """
    check_fingerprints("--trust-key", trust)
    kit = settings()
    try:
        recheck, notes = archive_recheck(archives, Keyring.load(kit.keys_dir, "audit"), prefix, trust)
    except (ArchiveError, OSError) as exc:
        fail(f"--archive: {exc}")
    for note in notes:
        err_console.print("note: " + shown(note, limit=None), soft_wrap=True)
    if recheck is not None:
        return recheck
    err_console.print(
        f"note: each row's signature is checked with this machine's keys folder ({shown(str(kit.keys_dir))}), not with keys the "
        "file carries",
        soft_wrap=True,
    )
    return row_recheck(kit, prefix)


def where_read(archives: list[Path], offline: bool, trust_keys: list[str]) -> tuple[str, Recheck]:
    """The deployment (topic prefix) a task is read from, and how its rows are checked: offline, from the files alone."""
    if offline and not archives:
        fail("--offline reads the task from --archive files: give at least one (`tidegate audit export` writes one)")
    if trust_keys and not offline:
        fail("--trust-key trusts a key an archive file carries: give --offline --archive FILE")
    if not offline:
        return settings().topic_prefix, row_recheck(settings())
    prefix = read_scope(archives)
    return prefix, offline_recheck(archives, prefix, trust_keys)


def show(
    task_id: str = typer.Argument(..., help="The task id, or an action id (the idempotency key a system of record shows): its task."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON lines instead of a table."),
    tenant: str | None = typer.Option(None, "--tenant", help=_TENANT_HELP),
    archives: list[Path] = typer.Option([], "--archive", help=_ARCHIVE_HELP),
    offline: bool = typer.Option(False, "--offline", help=_OFFLINE_HELP),
    trust_keys: list[str] = typer.Option([], "--trust-key", metavar="SHA256", help=_TRUST_HELP),
) -> None:
    """The full story of a task, in order: every record about it, valid or not."""
    prefix, recheck = where_read(archives, offline, trust_keys)

    async def go(log: AuditLog) -> tuple[str, list[Any], PrunedBefore | None]:
        pruned = None if offline else await pruned_before(log, prefix)
        found = await _task_log(log, task_id, prefix, tenant, archives)
        if found is None:
            return task_id, [], pruned
        source, task, of = found
        return task, await _one_tenant(task_rows_of(source, task, prefix, tenant=of)), pruned

    task, rows, pruned = run(go(InMemoryAuditLog()) if offline else with_audit_log(go))
    if not rows:
        fail(_nothing(task_id, tenant, pruned))
    task_id = task
    lines = rechecked(rows, story(rows), recheck)
    _start_pruned(task_id, any(line.event_type == "task.submitted" for line in lines), pruned, archives)
    if as_json:
        for line in lines:
            typer.echo(line.model_dump_json())
        return
    console.print(_lines_table(lines, f"task {shown(task_id)}: {len(lines)} records"))


def archive_rows(paths: list[Path], prefix: str, keep: Callable[[LogRow], bool] = lambda row: True) -> Iterator[LogRow]:
    """The rows of the deployment `prefix` the files at `paths` hold that `keep` keeps, read one at a time, each once.

    A row is one topic, partition and seq: consecutive archives share each chain's head row.
    """
    seen: set[tuple[str, int, int]] = set()
    for path in paths:
        try:
            _, rows = read_archive(path)
            for _, row in rows:
                at = (row.topic, row.partition, row.seq)
                if row.topic.startswith(prefix) and at not in seen and keep(row):
                    seen.add(at)
                    yield row
        except (ArchiveError, OSError) as exc:
            fail(f"--archive: {exc}")


def archive_log(paths: list[Path], prefix: str, keep: Callable[[LogRow], bool] = lambda row: True) -> InMemoryAuditLog:
    """The rows `archive_rows` reads, in memory: only those `keep` keeps (a file's whole is often more than memory holds)."""
    return InMemoryAuditLog(rows=list(archive_rows(paths, prefix, keep)))


def read_scope(archives: list[Path]) -> str:
    """The deployment (topic prefix) the first archive holds the chains of."""
    try:
        return read_archive(archives[0])[0].scope
    except (ArchiveError, OSError) as exc:
        fail(f"--archive: {exc}")


def explain(
    task_id: str = typer.Argument(..., help="The task id, or an action id (the idempotency key a system of record shows): its task."),
    fmt: str = typer.Option("md", "--format", "-f", help="md, html or json."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write to this file instead of stdout."),
    tenant: str | None = typer.Option(None, "--tenant", help=_TENANT_HELP),
    archives: list[Path] = typer.Option([], "--archive", help=_ARCHIVE_HELP),
    offline: bool = typer.Option(False, "--offline", help=_OFFLINE_HELP),
    trust_keys: list[str] = typer.Option([], "--trust-key", metavar="SHA256", help=_TRUST_HELP),
) -> None:
    """The explainability artifact of a task: sources, policies checked, tools called, approvals, costs."""
    if fmt not in ("md", "html", "json"):
        fail(f"unknown format {fmt!r}: choose md, html or json")
    prefix, recheck = where_read(archives, offline, trust_keys)

    async def go(log: AuditLog) -> tuple[Any, PrunedBefore | None]:
        pruned = None if offline else await pruned_before(log, prefix)
        found = await _task_log(log, task_id, prefix, tenant, archives)
        if found is None:
            return None, pruned
        return await _one_tenant(explain_task(found[0], found[1], prefix, tenant=found[2], recheck=recheck)), pruned

    explanation, pruned = run(go(InMemoryAuditLog()) if offline else with_audit_log(go))
    if explanation is None or explanation.records == 0:
        fail(_nothing(task_id, tenant, pruned))
    _start_pruned(explanation.task_id, explanation.submitted_at is not None, pruned, archives)
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
    limit: int = typer.Option(
        100, min=1, help="At most this many records: the newest that match (oldest first); stderr says when more match."
    ),
    dead_letters: bool = typer.Option(
        False, "--dead-letters", help="Only dead letters (`--type event.rejected`); --json shows each one's original value."
    ),
    invalid: bool = typer.Option(
        False,
        "--invalid",
        help="Only records stored as not valid events (not JSON, not their topic's contract, a signature that does not verify), "
        "on any topic: what each is not is in its line. Alert TidegateInvalidRecords.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON lines (a dead letter's `dead_letter`: what was refused, whole)."),
    archives: list[Path] = typer.Option([], "--archive", help="With --offline: search this archive or export (repeatable)."),
    offline: bool = typer.Option(False, "--offline", help="Search the --archive files alone, no database: an auditor's machine."),
    trust_keys: list[str] = typer.Option([], "--trust-key", metavar="SHA256", help=_TRUST_HELP),
) -> None:
    """Find records by tenant, tool, outcome, reason code, time range, trace id, task or action id; dead letters; invalid records."""
    if archives and not offline:
        fail("--archive reads files: add --offline (the live log is searched without --archive)")
    prefix, recheck = where_read(archives, offline, trust_keys)
    if dead_letters:
        if event_type not in (None, "event.rejected", "tidegate.event.rejected"):
            fail(f"--dead-letters are `event.rejected` records: it cannot go with --type {event_type}")
        event_type = "event.rejected"
    if trace and len(trace) > 32 and "-" in trace:
        trace = trace.split("-")[1]
    if event_type and not event_type.startswith("tidegate."):
        event_type = "tidegate." + event_type
    start, end = _when(since), _when(until)
    if start is not None and end is not None and start >= end:
        fail(f"--since ({start:%Y-%m-%d %H:%M:%S}) is not before --until ({end:%Y-%m-%d %H:%M:%S}): nothing can match")
    filters = SearchFilters(
        tenant=tenant, tool=tool, outcome=outcome, reason=reason, since=start, until=end,
        trace_id=trace, task_id=task, event_type=event_type, action_id=action, topic_prefix=prefix,
        valid=False if invalid else None,
    )  # fmt: skip

    # each row shown is checked from its own value: one written into the database (or the file) is said so

    async def go(log: AuditLog) -> list[Any]:
        return await search(log, filters, limit=limit + 1, newest=True, recheck=recheck)  # one more: whether more match

    kept = lambda row: filters.matches(row) or row.event_type == TENANT_SETTINGS  # noqa: E731 (and what a change is told against)
    lines = run(go(archive_log(archives, prefix, kept)) if offline else with_audit_log(go))
    more = len(lines) > limit
    lines = lines[1:] if more else lines
    if more:  # on stderr, so a script reading --json knows its count is not all, and the table's reader which part it sees
        typer.echo(
            f"more than {limit} records match: these are the newest {limit}; --limit N to see more, or --until to look earlier",
            err=True,
        )
    if as_json:
        for line in lines:
            typer.echo(json.dumps(line.model_dump(mode="json")))
        return
    title = f"{len(lines)} records" + (f" (the newest; more match: --limit {limit})" if more else "")
    console.print(_lines_table(lines, title, with_task=True))
