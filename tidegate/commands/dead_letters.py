"""`tidegate dead-letters list|redrive`: what the services dead-lettered, and the on-call's way to send a record again.

The dead letters and the records they refused are read from the audit log (as `tidegate audit search --dead-letters`);
a redrive sends the original bytes and headers unchanged to their topic, after an operator-signed `control.redrive`
record (docs/operations.md, "Redriving a dead letter"; the logins: docs/security/bus.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from datetime import datetime

import typer
from rich.table import Table

from schemas import ControlRedrive, ControlRedriveData, ReasonCode
from servicekit import OPS, Bus, Keyring, KitSettings, Producer, ToolCatalog, deployment_authority, kafka_options
from servicekit.bus_rights import redrive_principal
from services.audit import LogRow, PostgresAuditLog, SearchFilters
from tidegate.commands._audit_log import row_recheck, with_audit_log
from tidegate.commands._common import (
    BY_HELP,
    TEXT_MAX,
    console,
    err_console,
    fail,
    run,
    settings,
    shown,
    signed_control,
    signer_settings,
    when,
)
from tidegate.commands._progress import progress_display
from tidegate.ops.redrive import (
    DeadLetter,
    Original,
    Selection,
    as_json,
    catalog_topic,
    dead_letter_of,
    held_to_record,
    named_service,
    original_of,
    original_problem,
    proposed_again_of,
    ran_asked,
    ran_of,
    redriven_of,
    refused_now,
    select,
    why_not,
)

__all__ = ["app"]

app = typer.Typer(help="Dead letters: list what the services refused, redrive a record once its cause is fixed.", no_args_is_help=True)

SERVICE = typer.Option(None, "--service", help="Only those this service dead-lettered (planner, policy, approval, executor).")
CODE = typer.Option(None, "--code", help="Only those of this reason code (handler_error, unknown_key, …).")
TOPIC = typer.Option(None, "--topic", help="Only records refused from this topic (actions.proposed, …).")
SINCE = typer.Option(None, "--since", help="Dead-lettered from this time: ISO 8601, `now`, or a duration ago (15m, 2h, 1.5d).")
ALLOW_UNKNOWN_KEY = typer.Option(
    False, "--allow-unknown-key", help="Also redrive `unknown_key` ones: once the signer's public key is on file (`tidegate keys list`)."
)
AGAIN = typer.Option(False, "--again", help="Also those already redriven (consumers are idempotent: docs/operations.md).")
WIDE = 140  # columns from which `list` prints one column per field
SCAN = 5000  # dead letters read at most: the newest (each with its value, up to 64 KiB)


async def _load(prefix: str, since: datetime | None, kit: KitSettings, ids: list[str] | None = None) -> list[DeadLetter]:
    """The dead letters of the log (the newest `SCAN`, from `since`), or those whose ids begin with one of `ids`."""
    recheck = row_recheck(kit)

    async def go(log: PostgresAuditLog) -> list[DeadLetter]:
        if ids:
            rows = await log.rows_of_ids(prefix + "deadletter", "tidegate.event.rejected", ids, SCAN)
        else:
            filters = SearchFilters(event_type="tidegate.event.rejected", since=since, topic_prefix=prefix)
            rows = await log.search(filters, limit=SCAN, newest=True)
            if len(rows) == SCAN:
                err_console.print(f"more than {SCAN} dead letters: only the newest {SCAN} are read; --since to look at fewer")
        redrives = redriven_of(await log.search(SearchFilters(event_type="tidegate.control.redrive", topic_prefix=prefix), limit=SCAN))
        out = []
        proposals: dict[tuple[str | None, str], list[LogRow]] = {}  # a task's proposals, read once for its expired authorizations
        for row in rows:
            dl = dead_letter_of(row, recheck(row))
            if dl is None:
                continue
            d = dl.data.data
            record = await log.row_at(d.topic, d.partition, d.offset) if dl.unverified is None else None
            # Every one is held to the log's copy of the record it names, read here anyway: one carrying a record whole
            # and consistent is not verified either when the log holds another there (review61 F7).
            dl = held_to_record(DeadLetter(dl.id, dl.at, dl.where, dl.data, dl.unverified, redrives.get(dl.id, ())), record)
            done = ran_asked(record, prefix) if dl.unverified is None else None  # the call's own outcome, beside a refusal of it
            if done is not None:
                dl = replace(dl, ran=ran_of(record, await log.search(done, limit=1)))
            if dl.unverified is None and record is not None and record.task_id and d.code == ReasonCode.AUTHORIZATION_EXPIRED.value:
                # the planner's own retry of it (`repeats`): nothing to do
                key = (record.tenant_id, record.task_id)
                if key not in proposals:
                    task = SearchFilters(
                        event_type="tidegate.action.proposed", task_id=record.task_id, tenant=record.tenant_id, topic_prefix=prefix
                    )
                    proposals[key] = await log.search(task, limit=SCAN)
                dl = replace(dl, proposed_again=proposed_again_of(record, proposals[key]))
            out.append(dl)
        return out

    return await with_audit_log(go)


def approval_keys(kit: KitSettings) -> Keyring:
    """The approval service's public keys, as the policy service loads them to verify a decision (`approval`)."""
    return Keyring.load(kit.keys_dir, "approval")


def _status(dl: DeadLetter, why: str | None) -> str:
    done = "; ".join(f"redriven by {shown(r.by)} at {r.at:%Y-%m-%d %H:%M:%S}Z" for r in dl.redriven)
    if why is None:
        return "[green]redrivable[/]" + (f" ({done})" if done else "")
    return f"[yellow]not redriven[/]: {shown(why, TEXT_MAX)}"


@app.command("list")
def list_(
    service: str | None = SERVICE,
    code: str | None = CODE,
    topic: str | None = TOPIC,
    since: str | None = SINCE,
    limit: int = typer.Option(100, min=1, help="At most this many: the newest that match."),
    allow_unknown_key: bool = ALLOW_UNKNOWN_KEY,
    as_json_lines: bool = typer.Option(False, "--json", help="Print JSON lines."),
) -> None:
    """The dead letters, oldest first, each with its id, reason, where its record was, and whether `redrive` would send it."""
    kit = settings()
    s = Selection(service=service, code=code, topic=topic, since=when(since) if since else None)
    found = select(run(_load(kit.topic_prefix, s.since, kit)), s, kit.topic_prefix)
    shown_ = sorted(found, key=lambda dl: dl.at)[-limit:]
    if len(found) > limit:
        err_console.print(f"{len(found)} dead letters match: these are the newest {limit}; --limit N to see more")
    keys = approval_keys(kit)
    whys = [why_not(dl, kit.topic_prefix, allow_unknown_key=allow_unknown_key, approval_keys=keys) for dl in shown_]
    if as_json_lines:
        for dl, why in zip(shown_, whys, strict=True):
            typer.echo(as_json(dl, kit.topic_prefix, why))
        return
    if not shown_:
        console.print("no dead letter matches")
        return
    wide = console.width >= WIDE
    title = f"{len(shown_)} dead letter(s)"
    if wide:
        table = Table("id", "dead-lettered (UTC)", "by", "code: error", "record", "task", "redrive", title=title)
        table.columns[6].overflow = "fold"  # an action id in it (proposed again) is copied whole into `audit explain`
    else:
        table = Table("id, dead-lettered (UTC)", "what", title=title)
        table.columns[1].overflow = "fold"
    table.columns[0].no_wrap = True  # the id is what `redrive` takes: never cut
    for dl, why in zip(shown_, whys, strict=True):
        d = dl.data.data
        record = shown(f"{catalog_topic(d.topic, kit.topic_prefix) or d.topic}[{d.partition}]@{d.offset}")
        task = shown(f"{d.tenant_id}/{d.task_id}" if d.task_id else d.tenant_id)
        what = f"{shown(d.code)}: {shown(d.error, 160)}"
        at = f"{dl.at:%Y-%m-%d %H:%M:%S}"
        if wide:
            table.add_row(shown(dl.id), at, shown(named_service(dl)), what, record, task, _status(dl, why))
        else:  # two columns, the rest on lines below: seven at 80 columns cut the id and wrapped each reason a word a line
            by = shown(named_service(dl))
            table.add_row(f"{shown(dl.id)}\n{at}", f"by {by}: {what}\n[dim]{record}, task {task}[/]\n{_status(dl, why)}")
    console.print(table)


@dataclass
class _Plan:
    send: list[tuple[DeadLetter, Original, str]] = field(default_factory=list)  # with the principal that sends it
    refused: list[tuple[DeadLetter, str]] = field(default_factory=list)


async def _plan(kit: KitSettings, chosen: list[DeadLetter], allow_unknown_key: bool, again: bool) -> _Plan:
    plan = _Plan()
    tools = ToolCatalog.load(*kit.tool_dirs) if kit.tools_dir.is_dir() else None
    authority = deployment_authority(kit, tools)  # as the consumers check: keys put on file since are known
    keys = approval_keys(kit)
    now_ms = int(time.time() * 1000)

    async def go(log: PostgresAuditLog) -> None:
        for dl in chosen:
            why = why_not(dl, kit.topic_prefix, allow_unknown_key=allow_unknown_key, again=again, approval_keys=keys)
            d = dl.data.data
            if why is None:
                row = await log.row_at(d.topic, d.partition, d.offset)
                why = original_problem(dl, row)
                topic = catalog_topic(d.topic, kit.topic_prefix) or ""
                if row is not None and why is None:
                    original = original_of(row)
                    why = refused_now(authority, topic, original, now_ms)
                    if why is None:
                        principal = redrive_principal(topic)
                        assert principal is not None  # `why_not` refused the topics no one may redrive to
                        plan.send.append((dl, original, principal))
                        continue
            plan.refused.append((dl, why or "not found"))

    await with_audit_log(go)
    return plan


def _record(kit: KitSettings, dl: DeadLetter, reason: str) -> ControlRedrive:
    """The operator-signed record of one redrive, checked as every service checks it (a key they refuse is said now)."""
    d = dl.data.data
    data = ControlRedriveData(
        tenant_id=d.tenant_id or "unknown", task_id=d.task_id, dead_letter_id=dl.id, topic=d.topic, partition=d.partition,
        offset=d.offset, sha256=d.sha256 or "", code=d.code, service=d.service, reason=reason, set_by=kit.operator,
    )  # fmt: skip
    return signed_control(kit, ControlRedrive.build(data, source="tidegate/cli"), "nothing sent", "the record of a redrive comes first")


def _producer(kit: KitSettings, principal: str) -> Producer:
    options = kafka_options(kit, principal)
    if not options.get("sasl_plain_username") and kafka_options(kit, OPS).get("sasl_plain_username"):
        raise ConnectionError(
            f"no Kafka login of `{principal}`, the principal that writes this topic ({kit.kafka_credentials_dir}/{principal}.properties): "
            "a redrive logs in as it (docs/security/bus.md, 'Redrive')"
        )
    return Producer(kit.kafka_bootstrap, "cli", **options)


async def _send(kit: KitSettings, plan: _Plan, records: list[ControlRedrive], quiet: bool) -> tuple[list[str], str | None]:
    """Send each: its control record first, then the original; the lines of those sent, and the failure that stopped it."""
    producers: dict[str, Producer] = {}
    sent: list[str] = []
    try:
        for principal in dict.fromkeys([OPS, *(p for _, _, p in plan.send)]):  # every login first: none missing halfway
            try:
                made = _producer(kit, principal)
                await made.start()
            except Exception as exc:
                return sent, f"cannot log in to Kafka as `{principal}` ({type(exc).__name__}: {exc}), so nothing was sent"
            producers[principal] = made
        control = Bus(producers[OPS], "cli", kit.kafka_bootstrap, kit.topic_prefix)  # as `publish_control` publishes
        with progress_display({"redrive": "redriving"}, quiet=quiet) as report:
            for n, ((dl, original, principal), record) in enumerate(zip(plan.send, records, strict=True)):
                d = dl.data.data
                step = f"the record of redriving {dl.id} on control"
                try:
                    await control.publish("control", record)  # acknowledged, sent exactly as signed
                    step = f"{dl.id}'s record to {d.topic} (its redrive is recorded on control: send it with --again)"
                    delivery = await producers[principal].send(d.topic, original.value, key=original.key, headers=original.headers)
                    meta = await delivery if delivery is not None else None  # None: a stand-in producer that delivered it
                except Exception as exc:  # the broker, a login, a refusal: stop here, say what was sent and what was not
                    return sent, f"{step} was not sent: {type(exc).__name__}: {exc}"
                again_at = f"{meta.topic}[{meta.partition}]@{meta.offset}" if meta is not None else d.topic
                sent.append(f"{dl.id} ({d.code}, by {d.service}): {d.topic}[{d.partition}]@{d.offset} sent again as {again_at}")
                report("redrive", n + 1, len(plan.send))
    finally:
        for made in producers.values():
            await made.stop()
    return sent, None


@app.command()
def redrive(
    ids: list[str] = typer.Argument(
        None, help="Dead letter ids (as `tidegate dead-letters list` shows them, or a unique beginning of one)."
    ),
    service: str | None = SERVICE,
    code: str | None = CODE,
    topic: str | None = TOPIC,
    since: str | None = SINCE,
    reason: str = typer.Option(..., "--reason", help="Why it is sent again (the cause fixed, the incident): kept, signed, on `control`."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be sent and where; send nothing."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    allow_unknown_key: bool = ALLOW_UNKNOWN_KEY,
    again: bool = AGAIN,
    by: str | None = typer.Option(None, "--by", help=BY_HELP),
) -> None:
    """Send dead-lettered records again, unchanged, to their topics, once their cause is fixed; each redrive is recorded, signed."""
    kit = signer_settings(by)
    if not ids and not any((service, code, topic, since)):
        fail("name the dead letters: their ids, or a filter (--service, --code, --topic, --since); `tidegate dead-letters list` shows them")
    s = Selection(ids=ids or (), service=service, code=code, topic=topic, since=when(since) if since else None)
    chosen = select(run(_load(kit.topic_prefix, s.since, kit, ids)), s, kit.topic_prefix)
    if s.unknown_ids:
        fail(f"no dead letter of this deployment is {', '.join(s.unknown_ids)}: nothing sent (`tidegate dead-letters list`)")
    if not chosen:
        fail("no dead letter matches: nothing sent")
    plan = run(_plan(kit, chosen, allow_unknown_key, again))
    for dl, why in plan.refused:
        err_console.print(
            f"[yellow]not redriven[/] {shown(dl.id)} ({shown(dl.data.data.code)}, {shown(dl.original)}): {shown(why, TEXT_MAX)}"
        )
    for dl, original, principal in plan.send:
        d = dl.data.data
        console.print(
            f"{'would send' if dry_run else 'to send'} {shown(dl.id)} ({shown(d.code)}, by {shown(d.service)}, task {shown(d.task_id)}): "
            f"{len(original.value or b'')} bytes, key {shown(original.key.decode('utf-8', 'replace') if original.key else None)}, "
            f"{len(original.headers)} header(s), to {shown(d.topic)} as `{principal}` (from [{d.partition}]@{d.offset})"
        )
    if not plan.send:
        fail(f"none of the {len(chosen)} dead letter(s) may be redriven: nothing sent")
    records = [_record(kit, dl, reason) for dl, _, _ in plan.send]  # an operator key the services refuse: nothing is sent
    if dry_run:
        console.print(f"dry run: {len(plan.send)} record(s) would be sent, {len(plan.refused)} not; nothing sent")
        return
    if not yes and not typer.confirm(f"send {len(plan.send)} record(s) again, as {kit.operator}?", err=True):
        fail("nothing sent")
    sent, failure = run(_send(kit, plan, records, quiet=False))
    for line in sent:
        console.print(f"sent {shown(line, TEXT_MAX)}")
    if failure is not None:
        unsent = [dl.id for dl, _, _ in plan.send[len(sent) :]]
        fail(
            f"{len(sent)} of {len(plan.send)} sent; stopped: {failure}; not sent: {', '.join(unsent)}. "
            "The dead letters stay: run it again for those"
        )
    console.print(
        f"{len(sent)} record(s) sent again; each consumer checks them as any record (`tidegate dead-letters list` shows them redriven)"
    )
